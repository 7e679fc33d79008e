"""/dashboard works in headless Chromium with the network cut, on both databases.

The real gunicorn serves the page and the API; Chromium, in a network namespace of its own
(tests/browser.py), is driven over the DevTools protocol, because this page is used, not
only shown: the tests read the table it rendered, the pixels of its charts, its legend
under a hovering mouse, its console, and every request it made. Records are posted with
timestamps just before now (the service refuses records from the future and keeps all
others: retention is off under the gunicorn fixture).

The screenshot of each run is kept under the test's tmp_path (the path is printed) and
copied to DASHBOARD_SCREENSHOT_DIR when that is set (CI keeps it as an artifact).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from browser import COLOURED_PIXELS_OF, Browser, assert_only_service_answered, chromium, external_requests

from gpumetrics.http.headers import DOCS_CSP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REFRESH_SEC = 10  # the page's own period (data-refresh-sec in the template)
FLEET = {"trainer-01": [0, 1, 2], "trainer-02": [0, 1]}
STALE_AFTER_SEC = 400  # set on the first test's service; the default (120) on the other's
# GPUs silent for a while: one over STALE_AFTER_SEC, one over the default only (not stale).
SILENT = {("trainer-02", 1): 500, ("trainer-01", 2): 200}
STALE = ("trainer-02", 1)
HISTORY_SEC, EVERY_SEC = 600, 10
KEY = "s3same-read-key"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def values(host: str, gpu: int, step: int) -> dict[str, dict]:
    """Distinct, valid values for each GPU and sample; the newest sample has step 0."""
    h = list(FLEET).index(host)
    wave = (step * 7) % 23
    return {
        "utilization": {"gpuPercent": 10 + 20 * gpu + 5 * h + wave % 10, "memoryPercent": 30 + gpu},
        "memory": {"totalMiB": 81920, "usedMiB": 10000 + 1000 * gpu + 500 * h + 10 * wave, "freeMiB": 60000},
        "temperature": {"celsius": 40 + 3 * gpu + h + wave % 5},
        "power": {"watts": 100 + 25 * gpu + 10 * h + wave},
        "clocks": {"graphicsMHz": 1400, "memoryMHz": 1593, "smMHz": 1300 + 10 * gpu + h},
    }


def fleet_records(now: datetime) -> list[dict]:
    """Ten minutes of every kind for every GPU, and processes of trainer-01's GPU 0 at two times."""
    out = []
    for host, gpus in FLEET.items():
        for gpu in gpus:
            silent = SILENT.get((host, gpu), 0)
            for step in range(HISTORY_SEC // EVERY_SEC):
                moment = now - timedelta(seconds=2 + silent + step * EVERY_SEC)
                identity = {
                    "host": host,
                    "gpuIndex": gpu,
                    "uuid": f"GPU-{host[-2:]}{gpu:06d}-aaaa-bbbb",
                    "name": "H100",
                }
                for metric, fields in values(host, gpu, step).items():
                    out.append({"timestamp": iso(moment), "metric": metric, **identity, **fields})
    newest, older = now - timedelta(seconds=3), now - timedelta(seconds=60)
    process = {"host": "trainer-01", "gpuIndex": 0, "metric": "process"}
    out += [
        {
            **process,
            "timestamp": iso(newest),
            "pid": 4242,
            "usedMiB": 6000,
            "processName": "train.py",
            "appName": "llm",
        },
        {**process, "timestamp": iso(newest), "pid": 4343, "usedMiB": 3000, "processName": "eval.py", "appName": "llm"},
        {**process, "timestamp": iso(older), "pid": 1111, "usedMiB": 500, "processName": "gone.py"},
    ]
    return out


def post(server, records: list[dict]) -> None:
    answer = requests.post(server.url + "/metrics", json=records, timeout=30)
    assert answer.status_code == 201, answer.text


def expected_rows() -> dict[tuple[str, str], dict[str, str]]:
    rows = {}
    for host, gpus in FLEET.items():
        for gpu in gpus:
            now = values(host, gpu, 0)
            rows[host, str(gpu)] = {
                "util": f"{now['utilization']['gpuPercent']} %",
                "memory": f"{now['memory']['usedMiB']:,} / {now['memory']['totalMiB']:,} MiB",
                "temperature": f"{now['temperature']['celsius']} °C",
                "power": f"{now['power']['watts']} W",
                "sm": f"{now['clocks']['smMHz']:,} MHz",
                "uuid": f"{host[-2:]}{gpu:06d}…",
                "name": "H100",
            }
    return rows


# What the page shows, read in the page: its table, its charts' pixels, its legend.
READ_TABLE = """
[...document.querySelectorAll('#gpu-rows tr.gpu')].map(row => {
  const host = row.previousElementSibling && row.closest('tbody');
  const cells = Object.fromEntries([...row.querySelectorAll('td[data-field]')]
      .map(td => [td.dataset.field, td.textContent.trim()]));
  return {key: row.dataset.key, stale: row.classList.contains('stale'), cells};
})
"""
HOST_ROWS = "[...document.querySelectorAll('#gpu-rows tr.host .host-name')].map(e => e.textContent)"
COLOURED_PIXELS = f"Object.fromEntries([...document.querySelectorAll('figure.chart')].map({COLOURED_PIXELS_OF}))"
LEGEND = """
[...document.querySelectorAll('figure.chart[data-chart="CHART"] .u-legend .u-series')]
  .map(row => [row.querySelector('.u-label')?.textContent ?? '', row.querySelector('.u-value')?.textContent ?? ''])
"""
# A cell of trainer-01's GPU 0.
CELL = 'document.querySelector(\'#gpu-rows tr.gpu[data-host="trainer-01"][data-index="0"] td[data-field=FIELD]\')'
RIGHT_OF = """
(() => { const r = document.querySelector('SELECTOR').getBoundingClientRect();
         return [r.left + r.width * 0.9, r.top + r.height / 2]; })()
"""


def counter(page: Browser, name: str) -> int:
    """One of the page's counters: refreshStarted, refreshes, readsStarted, reads."""
    return int(page.evaluate(f"document.body.dataset.{name} || 0"))


def keep_screenshot(page: Browser, tmp_path: Path, name: str) -> Path:
    path = page.screenshot(tmp_path / f"{name}.png", full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {path}")
    if folder := os.environ.get("DASHBOARD_SCREENSHOT_DIR"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)
    return path


def assert_clean(page: Browser, allowed=lambda entry: False) -> None:
    """No console error or warning, no uncaught exception; every request to the service only."""
    noisy = [e for e in page.console() if e.level in ("error", "warning") and not allowed(e)]
    assert not noisy, f"the page's console: {noisy}"
    foreign = [url for url in page.page_requests() if not url.startswith(page.origin + "/")]
    assert not foreign, f"the page asked for URLs outside the service: {foreign}"


def assert_network_cut(page: Browser, url: str) -> None:
    """After close(): the net log shows the page asked no other host and only the service answered."""
    assert page.requests, "Chromium's net log is empty"
    assert not external_requests(page.requests, page.origin)
    assert_only_service_answered(page.requests, url, page.isolation)


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    chromium()  # skips before any gunicorn starts


@pytest.fixture
def open_page(tmp_path):
    """Browsers on a server; each is closed after the test (or by the test, to read its net log)."""
    opened: list[Browser] = []

    def start(server, name: str = "dashboard", window=(1280, 900)) -> Browser:
        opened.append(Browser(server, tmp_path / f"chromium-{name}", window=window))
        return opened[-1]

    yield start
    for page in opened:
        page.close()


def check_table(page: Browser) -> None:
    page.wait_for("document.querySelectorAll('#gpu-rows tr.gpu').length === 5")
    assert page.evaluate(HOST_ROWS) == list(FLEET)
    shown = page.evaluate(READ_TABLE)
    expected = expected_rows()
    by_key = {tuple(row["key"].split("\n")): row for row in shown}
    assert set(by_key) == set(expected), f"the table lists {sorted(by_key)}"
    for key, cells in expected.items():
        row = by_key[key]
        assert {field: row["cells"][field] for field in cells} == cells, f"row {key}: {row['cells']}"
        assert row["stale"] == (key == (STALE[0], str(STALE[1]))), f"row {key} stale: {row['stale']}"
        silent = SILENT.get((key[0], int(key[1])), 0)
        assert row["cells"]["lastSeen"].startswith(f"{silent // 60} min ago" if silent else ""), row["cells"]
    assert "stale" in by_key[STALE[0], str(STALE[1])]["cells"]["lastSeen"]


def check_charts(page: Browser) -> None:
    """The four charts of trainer-01 (the first host) are drawn, and hovering shows values."""
    page.wait_for("document.querySelectorAll('figure.chart canvas').length === 4")
    assert page.evaluate("document.getElementById('chart-title').textContent") == "Charts: all GPUs of trainer-01"
    coloured = page.wait_for(
        f"(() => {{ const c = {COLOURED_PIXELS}; return Object.values(c).every(n => n > 200) && c; }})()"
    )
    assert set(coloured) == {"utilization", "memory", "temperature", "power"}
    page.hover(*page.evaluate(RIGHT_OF.replace("SELECTOR", 'figure.chart[data-chart="utilization"] .u-over')))
    legend = LEGEND.replace("CHART", "utilization")
    legend = page.wait_for(f"(l => l.slice(1).every(r => r[1].endsWith('%')) && l)({legend})")
    assert [label for label, _ in legend[1:]] == ["GPU 0", "GPU 1", "GPU 2"], legend


# Each host's GPUs as [host, index, text of a column], in the order shown.
COLUMN = """
[...document.querySelectorAll('#gpu-rows tr.gpu')]
  .map(row => [row.dataset.host, row.dataset.index, row.querySelector('td[data-field=FIELD]').textContent])
"""


def click(page: Browser, selector: str) -> None:
    page.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def chart_title(page: Browser, title: str) -> None:
    page.wait_for(f"document.getElementById('chart-title').textContent === {json.dumps('Charts: ' + title)}")


def wait_for_legend(page: Browser, labels: list[str]) -> None:
    """Until the utilization chart's legend names exactly LABELS (after its time)."""
    legend = LEGEND.replace("CHART", "utilization")
    expected = json.dumps(labels, ensure_ascii=False, separators=(",", ":"))  # as JSON.stringify writes it
    page.wait_for(f"JSON.stringify({legend}.slice(1).map(r => r[0])) === {json.dumps(expected)}")


def check_sorting(page: Browser) -> None:
    """Each column sorts the GPUs within their hosts, ascending, then descending on a second click."""
    for field in ("util", "power", "memory"):
        for direction in ("ascending", "descending"):
            click(page, f"th[data-sort={field}] button")
            assert page.evaluate(f"document.querySelector('th[data-sort={field}]').ariaSort") == direction
            shown = page.evaluate(COLUMN.replace("FIELD", field))
            for host in FLEET:
                numbers = [float(re.sub(r"[^0-9.]", "", text.split("/")[0])) for h, _, text in shown if h == host]
                assert numbers == sorted(numbers, reverse=direction == "descending"), (field, direction, shown)
    click(page, "th[data-sort=gpuIndex] button")


def check_filter_and_picks(page: Browser) -> None:
    """The host filter; GPUs picked in the table; a host chosen for the charts; the window's step."""
    page.evaluate("document.getElementById('host-filter').focus()")
    page.send("Input.insertText", {"text": "02"})
    page.wait_for("document.querySelectorAll('#gpu-rows tr.gpu').length === 2")
    assert page.evaluate(HOST_ROWS) == ["trainer-02"]
    chart_title(page, "all GPUs of trainer-02")  # the charts follow the first host shown
    page.evaluate(
        "(f => { f.value = ''; f.dispatchEvent(new Event('input')); })(document.getElementById('host-filter'))"
    )
    page.wait_for("document.querySelectorAll('#gpu-rows tr.gpu').length === 5")
    chart_title(page, "all GPUs of trainer-01")

    click(page, '#gpu-rows tr.gpu[data-host="trainer-01"][data-index="1"] input.pick')
    click(page, '#gpu-rows tr.gpu[data-host="trainer-02"][data-index="0"] input.pick')
    chart_title(page, "2 picked GPUs")
    wait_for_legend(page, ["trainer-01 · 1", "trainer-02 · 0"])
    click(page, "#clear-picks")
    click(page, '#gpu-rows section[data-host="trainer-02"] button.chart-host')
    chart_title(page, "all GPUs of trainer-02")
    wait_for_legend(page, ["GPU 0", "GPU 1"])
    assert page.evaluate("document.querySelector('section[data-host=\"trainer-02\"] button').ariaPressed") == "true"

    since = page.mark()
    page.evaluate(
        "(w => { w.value = '21600'; w.dispatchEvent(new Event('change')); })(document.getElementById('window'))"
    )
    page.wait_for("document.getElementById('step').textContent === 'step 30 s, at most 720 points a series'")
    page.wait_for(f"{COLOURED_PIXELS}.utilization > 20")
    asked = [u for u in page.page_requests(since) if "/metrics/series" in u]
    assert asked and all("step=30&" in url for url in asked), asked
    page.evaluate(
        "(w => { w.value = '3600'; w.dispatchEvent(new Event('change')); })(document.getElementById('window'))"
    )
    click(page, '#gpu-rows section[data-host="trainer-01"] button.chart-host')
    chart_title(page, "all GPUs of trainer-01")


def post_a_new_record(page: Browser, server) -> tuple[float, int]:
    """A record of now for trainer-01's GPU 0; when it was posted, and the page's reads started by then."""
    moment = datetime.now(UTC) - timedelta(milliseconds=200)
    record = {"timestamp": iso(moment), "host": "trainer-01", "gpuIndex": 0, "metric": "temperature", "celsius": 97}
    post(server, [record])
    return time.monotonic(), counter(page, "readsStarted")


def check_followed(page: Browser, posted: float, reads_started: int) -> None:
    """The new record is in the table by the end of the first read of the fleet that started after it."""
    page.wait_for(f"{CELL.replace('FIELD', 'temperature')}.textContent === '97 °C'", timeout=REFRESH_SEC + 10)
    took, reads = time.monotonic() - posted, counter(page, "reads")
    assert reads <= reads_started + 1, f"the new record showed after {reads - reads_started} reads, not one"
    assert took < REFRESH_SEC + 8, f"the new record took {took:.1f} s to show"
    sent = page.events_since("Network.requestWillBeSent")
    reads = [e["timestamp"] for e in sent if urlsplit(e["request"]["url"]).path == "/gpus"]
    assert len(reads) == 2, f"{len(reads)} reads of /gpus"
    assert REFRESH_SEC <= reads[1] - reads[0] < REFRESH_SEC + 5, f"read again after {reads[1] - reads[0]:.1f} s"


def check_detail(page: Browser) -> None:
    """A GPU's detail: its processes at the newest process time, and charts of that GPU alone."""
    page.evaluate(f"{CELL.replace('FIELD', 'name')}.querySelector('a').click()")
    processes = "[...document.querySelectorAll('#detail-processes tr[data-pid]')]"
    page.wait_for(f"!document.getElementById('detail').hidden && {processes}.length")
    pids = page.evaluate(f"{processes}.map(r => [...r.cells].map(c => c.textContent))")
    assert pids == [["4242", "train.py", "llm", "6,000 MiB"], ["4343", "eval.py", "llm", "3,000 MiB"]]
    assert page.evaluate("document.getElementById('detail-title').textContent") == "GPU 0 of trainer-01 — H100"
    page.wait_for("document.getElementById('chart-title').textContent === 'Charts: this GPU'")
    legend = page.wait_for(f"(l => l.length === 2 && l)({LEGEND.replace('CHART', 'power')})")
    assert legend[1][0] == "GPU 0"


def test_dashboard_shows_the_fleet_charts_and_a_gpu_offline(gunicorn, open_page, tmp_path, database_url):
    """Two hosts, five GPUs: the table, the charts (drawn, hovered), sorting, the host filter, GPUs or a
    host picked for the charts, the window, a GPU's detail, and a new record followed within one
    refresh (the detail is checked while the page waits for it)."""
    server = gunicorn(STALE_AFTER_SEC=str(STALE_AFTER_SEC))
    post(server, fleet_records(datetime.now(UTC)))
    served = requests.get(server.url + "/dashboard", timeout=10)
    assert served.status_code == 200 and served.headers["Content-Security-Policy"] == DOCS_CSP
    assert f'data-stale-after-sec="{STALE_AFTER_SEC}" data-keys-required="false"' in served.text
    page = open_page(server)
    url = page.goto("/dashboard")
    check_table(page)
    check_charts(page)
    keep_screenshot(page, tmp_path, f"dashboard-{database_url.split(':')[0]}")
    check_sorting(page)
    check_filter_and_picks(page)
    posted, reads_started = post_a_new_record(page, server)
    check_detail(page)
    check_followed(page, posted, reads_started)
    assert_clean(page)
    page.close()
    assert_network_cut(page, url)


ROWS = "document.querySelectorAll('#gpu-rows tr.gpu').length"
VISIBLE = "(id => !document.getElementById(id).hidden)"
# The page's period cut from 10 s to 1 s before its scripts read it, so that an answer held
# for 2.5 seconds spans two periods.
FAST_REFRESH = """
document.addEventListener('readystatechange', () => {
  if (document.readyState === 'interactive') document.body.dataset.refreshSec = '1';
});
"""


def check_key_asked_once(page: Browser) -> None:
    """No data is asked for without a key; a wrong key is refused with a message; a right one shows the fleet."""
    page.wait_for("document.body.dataset.state === 'needs-key'")
    assert page.evaluate(f"{VISIBLE}('key-form') && !{VISIBLE}('main')")
    assert not [u for u in page.page_requests() if "/gpus" in u or "/metrics" in u], "asked for data without a key"
    page.evaluate("document.getElementById('key-input').focus()")
    page.type_text("not-the-key")
    message = page.wait_for("document.getElementById('key-message').textContent")
    assert message.startswith("The service refused this key: A valid API key is required"), message
    assert page.evaluate(f"{VISIBLE}('key-form') && !{VISIBLE}('main')")
    assert page.evaluate("document.getElementById('status').textContent") == "The read key was refused."
    page.evaluate("document.getElementById('key-input').focus()")
    page.type_text(KEY)
    page.wait_for(f"{ROWS} === 5")
    assert page.evaluate("sessionStorage.getItem('gpumetrics.readKey')") == KEY
    assert page.sent_headers("/gpus")[-1]["Authorization"] == f"Bearer {KEY}"
    page.wait_for("document.querySelectorAll('figure.chart canvas').length === 4")
    # A reload in the same tab keeps the key: no question, straight to the fleet.
    page.goto("/dashboard")
    page.wait_for(f"{ROWS} === 5")
    assert page.evaluate(f"!{VISIBLE}('key-form')")


def check_slow_answer_waited_for(page: Browser) -> None:
    """An answer of /gpus held over two periods: no request piles up behind it, and reads go on after."""
    since = page.mark()
    page.send("Fetch.enable", {"patterns": [{"urlPattern": "*/gpus", "requestStage": "Response"}]})
    held = page.devtools.wait_event("Fetch.requestPaused", since, timeout=10)["params"]
    assert urlsplit(held["request"]["url"]).path == "/gpus"
    time.sleep(2.5)
    asked = [u for u in page.page_requests(since) if urlsplit(u).path == "/gpus"]
    assert len(asked) == 1, f"{len(asked)} requests for /gpus while one answer was held"
    reads = counter(page, "reads")
    page.send("Fetch.disable")  # lets the held answer through
    page.wait_for(f"Number(document.body.dataset.reads) >= {reads + 2}", timeout=20)  # the held one, then the next


def check_failure_said(page: Browser) -> None:
    """An answer that fails: the table stays, the status line says what happened, the next read recovers."""
    since = page.mark()
    pattern = {"urlPattern": "*/metrics/latest?metric=power", "requestStage": "Request"}
    page.send("Fetch.enable", {"patterns": [pattern]})
    failing = page.devtools.wait_event("Fetch.requestPaused", since, timeout=10)["params"]
    body = base64.b64encode(b'{"code":503,"message":"The database is unavailable; try again."}').decode()
    page.send("Fetch.fulfillRequest", {"requestId": failing["requestId"], "responseCode": 503, "body": body})
    page.send("Fetch.disable")
    status = page.wait_for("(s => s.classList.contains('error') && s.textContent)(document.getElementById('status'))")
    assert "Could not refresh" in status and "The database is unavailable; try again." in status, status
    assert page.evaluate(ROWS) == 5
    page.wait_for("document.getElementById('status').textContent.startsWith('Read at')", timeout=20)


def test_dashboard_with_read_keys_and_a_slow_or_failing_service(gunicorn, open_page):
    """With READ_API_KEYS set the page asks for a key once per tab; a slow answer is waited for, never
    piled up on; a failed one is said in the status line while the table stays."""
    server = gunicorn(READ_API_KEYS=f"another-key,{KEY}")
    post(server, fleet_records(datetime.now(UTC)))
    served = requests.get(server.url + "/dashboard", timeout=10)  # the page itself needs no key
    assert served.status_code == 200 and 'data-stale-after-sec="120" data-keys-required="true"' in served.text
    assert KEY not in served.text
    page = open_page(server, "keys")
    page.before_scripts(FAST_REFRESH)
    url = page.goto("/dashboard")
    check_key_asked_once(page)
    check_slow_answer_waited_for(page)
    check_failure_said(page)
    errors = [e for e in page.console() if e.level == "error"]
    refused = [e for e in errors if e.source == "network" and "status of 401" in e.text]
    failed = [e for e in errors if e.source == "network" and "status of 503" in e.text]
    assert len(refused) == 1 and len(failed) == 1, errors
    assert_clean(page, allowed=lambda entry: entry in refused + failed)
    page.close()
    assert_network_cut(page, url)
