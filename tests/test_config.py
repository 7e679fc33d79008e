"""Settings: defaults that work, one clear line for a bad value, and the README lists them all."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import GUNICORN, ROOT

import config


def test_defaults_just_work():
    settings = config.load({})
    assert settings.host == "0.0.0.0" and settings.port == 8080
    assert settings.database_wait_sec == 60 and settings.access_log is True
    assert settings.database_url == "sqlite:///./metrics.db"
    assert settings.log_level == "INFO"
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.max_batch == 10000


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "http"),
        ("PORT", "70000"),
        ("MAX_BATCH", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "sqlite://metrics.db"),
        ("DATABASE_URL", "postgres://gpumetrics@db/gpumetrics"),
        ("DATABASE_WAIT_SEC", "-1"),
        ("ACCESS_LOG", "loud"),
        ("ENABLE_WS_FILE", "maybe"),
    ],
)
def test_invalid_value_names_the_variable(name, value):
    with pytest.raises(config.SettingsError, match=f"^invalid {name}="):
        config.load({name: value})


CLI = [sys.executable, "-m", "gpumetrics"]


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "wsgi.py"], GUNICORN, [*CLI, "import", __file__], [*CLI, "purge"], [*CLI, "migrate"]],
    ids=["python wsgi.py", "gunicorn", "import", "purge", "migrate"],
)
def test_invalid_value_stops_the_start_with_one_line(command):
    env = {**os.environ, "MAX_BATCH": "lots"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines == ["gpumetrics: invalid MAX_BATCH='lots': expected an integer from 1 to 1000000"]


def test_readme_lists_every_setting():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.MULTILINE))
    assert listed == {setting.env for setting in config.SETTINGS}


def test_span_retention_defaults_to_the_records_window_and_can_differ():
    assert config.load({"METRICS_RETENTION_HOURS": "48"}).span_retention_hours == 48
    assert config.load({"METRICS_RETENTION_HOURS": "0"}).span_retention_hours is None
    chosen = config.load({"METRICS_RETENTION_HOURS": "48", "SPAN_RETENTION_HOURS": "6"})
    assert (chosen.metrics_retention_hours, chosen.span_retention_hours) == (48, 6)
