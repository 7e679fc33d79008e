"""The access log: one line per request, written by the service (ACCESS_LOG), not by gunicorn.

The service writes it, rather than gunicorn's access log, because only the app knows
the request id that the answer and any error line carry, and because the line must
never hold a secret: keys come in headers, which are not logged, and a query parameter
whose name looks like a key, token, secret or password is dropped from the line.

    GET /metrics?gpuIndex=0 200 3.1 ms request_id=6f2c... client=10.0.0.7

The client is the connection's peer (request.remote_addr). X-Forwarded-For is written
beside it as `forwarded=` when present, but never in its place: any client can send
that header, and the service knows of no trusted proxy. A successful /health is logged
at DEBUG: probes (the image's HEALTHCHECK, Kubernetes) would otherwise fill the log of
an idle service.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote, unquote_plus

from flask import Flask, Response, g, request

log = logging.getLogger("gpumetrics.access")

SECRET_NAME = re.compile(r"key|token|secret|passw|auth|credential|signature|session", re.IGNORECASE)
_URL_SAFE = "/:@!$&'()*+,;=-._~%[]"  # printable URL characters are kept; anything else is %-escaped
MAX_TARGET = 1000
QUIET_PATHS = ("/health",)


def register(app: Flask) -> None:
    """Time every request from its first before_request hook, and log it once answered."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_clock)
    app.after_request(_log_answer)


def client_address() -> str:
    """The peer's address, and the first hop of X-Forwarded-For when one is sent."""
    peer = request.remote_addr or "-"
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    return f"{peer} forwarded={quote(forwarded[:64], safe=_URL_SAFE)}" if forwarded else peer


def target() -> str:
    """The path and the query string, without any parameter that looks like a secret."""
    path = quote(request.path, safe=_URL_SAFE)
    query = request.query_string.decode("latin-1")
    kept = [part for part in query.split("&") if part and not SECRET_NAME.search(unquote_plus(part.split("=")[0]))]
    line = path + ("?" + quote("&".join(kept), safe=_URL_SAFE, encoding="latin-1") if kept else "")
    return line if len(line) <= MAX_TARGET else line[:MAX_TARGET] + "..."


def _start_clock() -> None:
    g.access_started = time.perf_counter()


def _log_answer(response: Response) -> Response:
    started = g.get("access_started", time.perf_counter())
    level = logging.DEBUG if request.path in QUIET_PATHS and response.status_code < 400 else logging.INFO
    if not log.isEnabledFor(level):  # LOG_LEVEL above it: not worth making the line
        return response
    fields = (request.method, target(), response.status_code, g.get("request_id", "-"), client_address())
    if response.is_streamed:  # an export: its time is the time to stream it all
        response.call_on_close(lambda: _write(level, fields, started))
    else:
        _write(level, fields, started)
    return response


def _write(level: int, fields: tuple, started: float) -> None:
    method, where, status, request_id, client = fields
    elapsed = (time.perf_counter() - started) * 1000
    log.log(level, "%s %s %d %.1f ms request_id=%s client=%s", method, where, status, elapsed, request_id, client)
