"""API keys: INGEST_API_KEYS guard POST /metrics, READ_API_KEYS (when set) the reads.

A key comes in `X-API-Key` (the crawler's header) or `Authorization: Bearer`. Keys are
compared in constant time and never logged. /health stays open, and the docs pages
and the OpenAPI document stay readable, so an operator can always find out how to get in.
"""

from __future__ import annotations

import hmac
import logging

from flask import Flask, request
from flask_smorest import abort

from config import Settings

log = logging.getLogger(__name__)

SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
WITH_KEY = [{"ApiKey": []}, {"Bearer": []}]
INGEST_ENDPOINTS = {("POST", "metrics.Metrics")}
READ_ENDPOINTS = {("GET", "metrics.Metrics"), ("GET", "gpus.Gpus"), ("GET", "stats.Stats")}


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


def _deny() -> None:
    abort(
        401,
        message="A valid API key is required: send it in X-API-Key or Authorization: Bearer.",
        headers={"WWW-Authenticate": 'Bearer realm="gpumetrics"'},
    )


def register(app: Flask, settings: Settings) -> None:
    if not settings.ingest_api_keys:
        log.warning("INGEST_API_KEYS is empty: anyone who reaches this service can store records")

    @app.before_request
    def require_keys():
        method = "GET" if request.method == "HEAD" else request.method  # HEAD runs the GET view
        endpoint = (method, request.endpoint)
        if endpoint in INGEST_ENDPOINTS and settings.ingest_api_keys and not key_is_valid(settings.ingest_api_keys):
            _deny()
        if endpoint in READ_ENDPOINTS and settings.read_api_keys and not key_is_valid(settings.read_api_keys):
            _deny()


def document(spec, settings: Settings) -> None:
    """Declare the schemes, and which operations need a key under these settings."""
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    guarded = set()
    if settings.ingest_api_keys:
        guarded |= {("post", "/metrics")}
    if settings.read_api_keys:
        guarded |= {("get", "/metrics"), ("get", "/gpus"), ("get", "/stats")}
    for path, operations in spec._paths.items():
        for method, operation in operations.items():
            if (method, path) in guarded:
                operation["security"] = WITH_KEY
                operation.setdefault("responses", {})["401"] = {
                    "description": "No valid API key.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            elif method in ("get", "post", "put", "delete", "patch"):
                operation["security"] = []
