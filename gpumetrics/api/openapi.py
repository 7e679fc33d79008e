"""What the OpenAPI document says of every operation beside its own decorators.

Every answer carries X-Request-ID; every operation that reads the database can answer
503 with Retry-After; every parameter shows an example. Error answers are written out
in each operation rather than as shared components, so that each can carry its headers,
and schemas that nothing refers to are dropped.
"""

from __future__ import annotations

import copy
import http
import json
from typing import Any

from apispec import APISpec, BasePlugin

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
REQUEST_ID = {
    "description": "The request's id: the caller's own X-Request-ID when it sent a safe one, else a new one.",
    "required": True,
    "schema": {"type": "string", "example": "5f0c0f5ad4a04c3b9a1b2c3d4e5f6a7b"},
}
RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "example": 5},
}
# gunicorn answers a request line longer than its limit_request_line itself, before the app.
TOO_LONG = {
    "description": "The request line (path and query) is longer than gunicorn's limit_request_line "
    "(4094 bytes): gunicorn's own HTML answer, without the service's headers.",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
UNAVAILABLE = {
    "description": "The database is unavailable (unreachable, or SQLite's lock timed out); try again.",
    "content": ERROR,
    "headers": {"Retry-After": RETRY_AFTER},
}


def _response(status: str | int, response: Any) -> dict[str, Any]:
    """A response written out, whatever flask-smorest gave: a component's name or a dict."""
    if isinstance(response, dict) and "$ref" not in response:
        return response
    phrase = http.HTTPStatus(int(status)).phrase if str(status).isdigit() else "Any other error"
    return {"description": phrase, "content": ERROR}


class DocumentPlugin(BasePlugin):
    """Adds the request id, the 503 and the parameters' examples to every operation."""

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            responses = operation.setdefault("responses", {})
            if "503" not in map(str, responses):
                responses["503"] = copy.deepcopy(UNAVAILABLE)
            for status, response in list(responses.items()):
                if str(status) == "414":
                    continue
                response = _response(status, response)
                if not str(status).startswith(("1", "2", "3")):
                    response.setdefault("content", ERROR)  # every error answer has the one error format
                headers = response.setdefault("headers", {})
                headers.setdefault("X-Request-ID", REQUEST_ID)
                if str(status) == "503":
                    headers.setdefault("Retry-After", RETRY_AFTER)
                responses[status] = response
            if operation.get("parameters"):
                responses["414"] = copy.deepcopy(TOO_LONG)
            for parameter in operation.get("parameters", []):
                if isinstance(parameter, dict) and "example" in parameter.get("schema", {}):
                    parameter.setdefault("example", parameter["schema"]["example"])


def drop_unused_schemas(spec: APISpec) -> None:
    """Remove component schemas that no path and no other used schema refers to."""
    schemas = spec.components.schemas
    used: set[str] = set()
    frontier = json.dumps(spec.to_dict()["paths"])
    while True:
        named = {name for name in schemas if f'"#/components/schemas/{name}"' in frontier} - used
        if not named:
            break
        used |= named
        frontier = json.dumps([schemas[name] for name in named])
    for name in set(schemas) - used:
        del schemas[name]
