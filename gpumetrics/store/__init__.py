"""Reads and writes of stored records; every function takes a Session and never commits."""
