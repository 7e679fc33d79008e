"""The one JSON parser of request bodies and JSONL lines.

Python refuses integers of more than 4,300 digits with a message about
`sys.set_int_max_str_digits()`: such a number is parsed again as an OutOfRange value,
so that the record's field is answered "Out of range.", not with a Python hint.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .schemas import OutOfRange

_DIGITS = sys.get_int_max_str_digits() or 4300


def _integer(text: str) -> int | OutOfRange:
    return OutOfRange(text) if len(text.lstrip("-")) > _DIGITS else int(text)


def loads(data: bytes | str) -> Any:
    """JSON to Python; raises ValueError (or RecursionError) for what is not JSON."""
    try:
        return json.loads(data)
    except ValueError as error:
        if "int_max_str_digits" not in str(error) and "integer string conversion" not in str(error):
            raise
    return json.loads(data, parse_int=_integer)
