"""One error format for every 4xx and 5xx answer, and a request id on every answer.

Every error body is {"code", "status", "message", "errors"?}: `errors` maps a field, a
query parameter or a record's index to its messages. An unexpected exception is logged
with its traceback and the request id; the answer carries only the id.
"""

from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, current_app, g, request
from flask_smorest import Api
from marshmallow import Schema, fields
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)
REQUEST_ID = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Error(Schema):
    """The body of every 4xx and 5xx answer."""

    code = fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = fields.String(required=True, metadata={"description": "The HTTP status name."})
    message = fields.String(required=True, metadata={"description": "What went wrong, for a person."})
    errors = fields.Dict(
        metadata={"description": "Messages by field, by query parameter (under `query`), or by record index."}
    )


class ApiWithOneErrorFormat(Api):
    ERROR_SCHEMA = Error

    def handle_http_exception(self, error: HTTPException):
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", error.description or error.name)
        if code == 413 and not getattr(error, "data", None):  # werkzeug's, from MAX_CONTENT_LENGTH
            payload["message"] = (
                f"The body is larger than MAX_BODY_BYTES={current_app.config['MAX_CONTENT_LENGTH']} bytes."
            )
        if code == 422 and isinstance(payload.get("errors", {}).get("query"), dict):
            payload["message"] = _with_values(payload["errors"]["query"])
        # Keep what the exception says about itself, such as a 405's Allow.
        headers = {**{k: v for k, v in error.get_headers() if k.lower() != "content-type"}, **(headers or {})}
        if code >= 500:
            payload["message"] = f"Internal error; quote request id {g.get('request_id', '-')}."
        return payload, code, headers


def _with_values(problems: dict) -> str:
    """Each query parameter's messages end with the value it got; the message says the first."""
    for name, messages in problems.items():
        given = request.args.getlist(name)
        if given and isinstance(messages, dict):  # a repeated parameter: messages by position
            problems[name] = [
                f"{message} Got {name}={given[int(i)]!r}."
                for i, texts in messages.items()
                if str(i).isdigit() and int(i) < len(given)
                for message in texts
            ] or [str(messages)]
        elif given and isinstance(messages, list):
            shown = given[0] if len(given) == 1 else given
            problems[name] = [f"{message} Got {name}={shown!r}." for message in messages]
    name, messages = next(iter(problems.items()))
    first = messages[0] if isinstance(messages, list) and messages else messages
    return f"Invalid query parameter {name}: {first}"


def register(app: Flask) -> None:
    @app.before_request
    def request_id():
        given = request.headers.get(REQUEST_ID, "")
        g.request_id = given if _SAFE_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def stamp(response):
        response.headers[REQUEST_ID] = g.get("request_id", "-")
        return response

    # Only a lost or refused connection (or SQLite's lock timeout) means "try again";
    # any other database error is a bug, answered as one by `unexpected`.
    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error: DBAPIError):
        reason = str(error.orig).splitlines()[0] if error.orig else type(error).__name__
        log.error("request %s: database error: %s", g.get("request_id", "-"), reason)
        body = {"code": 503, "status": "Service Unavailable", "message": "The database is unavailable; try again."}
        return body, 503, {"Retry-After": "5"}

    @app.errorhandler(Exception)  # HTTP exceptions have their own, more specific handler
    def unexpected(error: Exception):
        log.exception("request %s: unexpected error", g.get("request_id", "-"))
        return {
            "code": 500,
            "status": "Internal Server Error",
            "message": f"Internal error; quote request id {g.get('request_id', '-')}.",
        }, 500
