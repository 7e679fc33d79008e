"""The database: engine and sessions, the backend of each dialect, tables, migrations, locks."""

from sqlalchemy.orm import Session

from .backends import Backend
from .database import Database


def backend_of(session: Session) -> Backend:
    """The backend of the database a session of Database.reading()/writing() talks to."""
    return session.info["backend"]


__all__ = ["Backend", "Database", "backend_of"]
