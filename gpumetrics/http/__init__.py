"""What every answer shares: keys, the error format, headers."""
