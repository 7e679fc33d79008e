"""/dashboard: the fleet on one page, drawn in the browser from the API's own answers.

A plain Flask Blueprint, like the docs pages, so the page is no operation of the OpenAPI
document: it only serves HTML, and the data comes from the documented reads (/gpus,
/metrics/latest, /metrics/series) under the read key. The page stays readable without a
key (it asks for one, as /docs does). The two settings the page needs, STALE_AFTER_SEC
and whether read keys are required, ride in data attributes of the HTML: no secret, no
extra request, and no inline script, which the page's Content-Security-Policy forbids.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from ..state import get_settings

blp = Blueprint("dashboard", __name__)


@blp.get("/dashboard")
def dashboard():
    settings = get_settings()
    return render_template(
        "dashboard.html",
        stale_after_sec=f"{settings.stale_after_sec:g}",
        keys_required="true" if settings.read_api_keys else "false",
    )
