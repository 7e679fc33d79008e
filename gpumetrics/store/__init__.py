"""Reads and writes of stored records; every function takes a Connection and never commits."""
