"""`python -m gpumetrics COMMAND`: the operator commands (import, purge) and Flask's own."""

from flask.cli import FlaskGroup

from . import create_app

FlaskGroup(create_app=create_app, help="gpumetrics operator commands.")(prog_name="python -m gpumetrics")
