"""What a record is before it is stored: schemas of the input formats, validation, JSONL."""
