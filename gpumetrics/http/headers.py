"""Response headers: nosniff everywhere, a strict CSP on the docs pages, CORS when asked for."""

from __future__ import annotations

from flask import Flask, request

from config import Settings

# The docs pages load only the service's own files. Swagger UI and ReDoc set inline
# styles, and ReDoc runs its search in a worker made from a blob.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
DOCS_PAGES = {"/docs", "/redoc", "/dashboard"}
CORS_HEADERS = "Content-Type, X-API-Key, Authorization, X-Request-ID"


def register(app: Flask, settings: Settings) -> None:
    allowed = set(settings.cors_origins)

    @app.after_request
    def secure(response):
        response.headers["X-Content-Type-Options"] = "nosniff"
        if request.path in DOCS_PAGES:
            response.headers["Content-Security-Policy"] = DOCS_CSP
        origin = request.headers.get("Origin")
        if origin and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        if allowed:
            response.vary.add("Origin")
        return response
