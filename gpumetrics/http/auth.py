"""API keys: INGEST_API_KEYS guard ingest, READ_API_KEYS (when set) the reads.

A view declares what it needs with `@requires("ingest")` or `@requires("read")`; the
same decorator marks the operation so that the OpenAPI document says which operations
need a key under the settings of the day (KeysPlugin). A key comes in `X-API-Key` (the
crawler's header) or `Authorization: Bearer`. Keys are compared in constant time and
never logged. /health, the docs pages and the OpenAPI document stay open, so an
operator can always find out how to get in.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any

from apispec import BasePlugin
from flask import g, request
from flask_smorest import Blueprint, abort

from config import Settings

from ..state import get_settings
from .access import client_address

log = logging.getLogger(__name__)

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
WITH_KEY = [{"ApiKey": []}, {"Bearer": []}]
_MARK = "x-gpumetrics-keys"  # set by @requires, turned into `security` by KeysPlugin


def _keys(settings: Settings, role: str) -> tuple[str, ...]:
    return settings.ingest_api_keys if role == "ingest" else settings.read_api_keys


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def key_is_valid(keys: tuple[str, ...]) -> bool:
    """Whether the request carries one of `keys`; every key is compared, in constant time."""
    presented = (presented_key() or "").encode()
    valid = False
    for key in keys:
        valid |= hmac.compare_digest(presented, key.encode())
    return valid and bool(presented)


def may_read() -> bool:
    """Whether this request may read: no read keys are set, or it carries one."""
    keys = get_settings().read_api_keys
    return not keys or key_is_valid(keys)


def requires(role: str) -> Callable:
    """A view that needs an `ingest` or `read` key whenever keys of that role are set."""
    assert role in ("ingest", "read"), role

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            keys = _keys(get_settings(), role)
            if keys and not key_is_valid(keys):
                log.warning(
                    "%s %s: %s API key from %s; answered 401 (request_id=%s)",
                    request.method,
                    request.path,
                    "a wrong" if presented_key() else "no",
                    client_address(),
                    g.get("request_id", "-"),
                )
                abort(
                    401,
                    message="A valid API key is required: send it in X-API-Key or Authorization: Bearer.",
                    headers={"WWW-Authenticate": 'Bearer realm="gpumetrics"'},
                )
            return view(*args, **kwargs)

        return Blueprint.doc(**{_MARK: role})(guarded)

    return decorate


class KeysPlugin(BasePlugin):
    """Declares the key schemes, and which operations need a key under these settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def init_spec(self, spec) -> None:
        super().init_spec(spec)
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        for operation in (operations or {}).values():
            role = operation.pop(_MARK, None)
            if role is not None and _keys(self.settings, role):
                operation["security"] = WITH_KEY
                operation.setdefault("responses", {})["401"] = {
                    "description": "No valid API key.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            else:
                operation["security"] = []


_warned_open = False


def warn_if_open(settings: Settings) -> None:
    """Once per start: gunicorn's master warns before it forks, and its workers inherit
    the mark, so N workers do not say it N times."""
    global _warned_open
    if not settings.ingest_api_keys and not _warned_open:
        _warned_open = True
        log.warning("INGEST_API_KEYS is empty: anyone who reaches this service can store records")
