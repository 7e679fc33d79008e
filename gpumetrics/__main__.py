"""`python -m gpumetrics COMMAND`: the operator commands of cli.py (import, purge, migrate)."""

from .cli import main

main(prog_name="python -m gpumetrics")
