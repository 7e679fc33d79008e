from __future__ import annotations

import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

import config
from gpumetrics import create_app

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.negative_data_rejection,
]
_tmp = tempfile.mkdtemp()
_app = create_app(config.load({"DATABASE_URL": f"sqlite:///{_tmp}/spec.db"}))
schema = schemathesis.openapi.from_wsgi(
    "/openapi.json",
    _app,
    config=schemathesis.Config.from_dict(
        {"seed": 1, "generation": {"mode": "all", "max-examples": 60, "deterministic": True}}
    ),
)


@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_openapi_conformance(case, app):
    r = case.call_and_validate(app=app, checks=CHECKS)
    STATS[(case.method, case.path, case.meta.phase.name.value, case.meta.generation.mode.value, r.status_code)] += 1

import collections, atexit
STATS = collections.Counter()
_orig = test_openapi_conformance

def _report():
    import sys
    sys.stderr.write(repr(STATS) + "\n")
atexit.register(_report)
