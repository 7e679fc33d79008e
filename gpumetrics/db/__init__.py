"""The database: engine and connections, the backend of each dialect, tables, migrations, locks."""

from sqlalchemy import Connection

from .backends import Backend
from .database import Database


def backend_of(conn: Connection) -> Backend:
    """The backend of the database a connection of Database.reading()/writing() talks to."""
    return conn.get_execution_options()["backend"]


__all__ = ["Backend", "Database", "backend_of"]
