"""The dashboard's process view in headless Chromium with the network cut, on both databases.

Two processes' gpumon_client events are posted as the crawler forwards them (a line a
POST, "hostname" inserted after the opening brace), system samples included, so that the
host's GPUs have records over the run. The page lists the processes; one is chosen; the
test counts the bars of its kernel lane on the timeline's canvas, hovers the failed kernel
and an abandoned scope for their tooltips, checks that its GPUs' charts are drawn, and
that its kernel summary is what GET /spans/summary answers.

Event times are the host's monotonic nanoseconds, mapped to UTC by the smallest (receive
time - event time) seen so far (store/clocks.py). The newest line goes first, so that the
run maps to the two minutes before now from the start: a GPU sample is mapped when it is
stored, and a backlog posted oldest first would put each sample at its arrival.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta

import pytest
import requests
from browser import COLOURED_PIXELS_OF
from test_dashboard_browser import (
    FAST_REFRESH,
    assert_clean,
    assert_network_cut,
    browser_installed,
    counter,
    keep_screenshot,
    open_page,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
__all__ = ["browser_installed", "open_page"]  # fixtures of the dashboard's tests, used here

HOST = "trainer-01"
UPTIME = 259_200_000_000_000  # ns: the host has been up three days
S = 1_000_000_000
PID, OTHER = 4242, 5151
RUN_S = 118  # the run's shutdown; GPU samples every 5 s go on to 120 s
SGEMM, REDUCE, FLASH = "ampere_sgemm_128x64_nn", "void reduce_kernel<float>(float const*, float*, int)", "flash_fwd"
FAILED = 4  # the fifth kernel fails
LAUNCH = {  # grid, block, shared memory
    SGEMM: ([128, 1, 1], [256, 1, 1], 0),
    REDUCE: ([64, 2, 1], [512, 1, 1], 4096),
    FLASH: ([8, 16, 1], [128, 1, 1], 49152),
}
# (begin, end or None, name, tag): the step is inside the first epoch; eval is open at the shutdown.
SCOPES = [(1, 55, "epoch", "e1"), (10, 20, "step", "e1"), (60, 100, "epoch", "e2"), (105, None, "eval", None)]


def at(seconds: float) -> int:
    return UPTIME + round(seconds * S)


def kernels() -> list[tuple[float, str, int]]:
    """Twelve kernels, 8 s apart: (start in s, name, duration in ns)."""
    out = []
    for i in range(12):
        name = (SGEMM, REDUCE, FLASH)[i % 3]
        duration = {SGEMM: 250_000 + 10_000 * i, REDUCE: 100_000, FLASH: 2_000_000 + 50_000 * i}[name]
        out.append((4 + 8 * i, name, duration))
    return out


def kernel_event(pid: int, app: str, start_s: float, name: str, duration: int, error: str = "cudaSuccess") -> dict:
    grid, block, shared = LAUNCH[name]
    start = at(start_s)
    times = {"ts_start_ns": start, "ts_end_ns": start + duration, "duration_ns": duration}
    launch = {"grid": grid, "block": block, "shared_mem_bytes": shared, "cuda_error": error}
    return event("kernel", pid, app, kernel=name, **times, **launch)


def system_sample(seconds: int) -> dict:
    wave = seconds % 40
    devices = [
        {
            "id": gpu,
            "name": "NVIDIA A100-PCIE-40GB",
            "uuid": f"GPU-5f1c2a3b-0000-4000-8000-00000000000{gpu}",
            "pci_bus": f"00000000:{'3B' if gpu == 0 else 'AF'}:00.0",
            "used_mib": 2048 + 100 * wave + 8000 * gpu,
            "free_mib": 30000,
            "total_mib": 40960,
            "util_gpu": 20 + 2 * wave - 10 * gpu,
            "util_mem": 30,
            "temp_c": 60,
            "power_mw": 180000,
            "clk_gfx": 1410,
            "clk_sm": 1410,
            "clk_mem": 1215,
        }
        for gpu in (0, 1)
    ]
    return {"type": "system_sample", "app": "train", "name": "system", "ts_ns": at(seconds), "devices": devices}


def event(kind: str, pid: int, app: str, **fields) -> dict:
    return {"type": kind, "pid": pid, "app": app, **fields}


def events() -> list[dict]:
    """The run of PID (app train) and a short one of OTHER (app eval), in the order they were written."""
    run = [(at(0), event("init", PID, "train", logPath="/var/log/gpumon/train.4242.ndjson", ts_ns=at(0)))]
    for begin, end, name, tag in SCOPES:
        tagged = {"tag": tag} if tag else {}
        run.append((at(begin), event("scope_begin", PID, "train", name=name, **tagged, ts_ns=at(begin))))
        if end is not None:
            times = {"ts_start_ns": at(begin), "ts_end_ns": at(end), "duration_ns": at(end) - at(begin)}
            run.append((at(end), event("scope_end", PID, "train", name=name, **tagged, **times)))
    for i, (start, name, duration) in enumerate(kernels()):
        error = "cudaErrorLaunchOutOfResources" if i == FAILED else "cudaSuccess"
        run.append((at(start) + duration, kernel_event(PID, "train", start, name, duration, error)))
    run.append((at(RUN_S), event("shutdown", PID, "train", ts_ns=at(RUN_S))))
    run += [(at(s), system_sample(s)) for s in range(0, 121, 5)]
    run.append((at(30), event("init", OTHER, "eval", logPath="/var/log/gpumon/eval.5151.ndjson", ts_ns=at(30))))
    run.append((at(30.5), event("scope_begin", OTHER, "eval", name="infer", tag="batch1", ts_ns=at(30.5))))
    run += [(at(s) + 300_000, kernel_event(OTHER, "eval", s, SGEMM, 300_000)) for s in (31, 32, 33)]
    return [written for _, written in sorted(run, key=lambda pair: pair[0])]


def forwarded(event: dict) -> str:
    """A line as gpumon_client writes it, with the crawler's "hostname" inserted."""
    line = json.dumps(event, separators=(",", ":"))
    return '{"hostname":' + json.dumps(HOST) + "," + line[1:]


def post_events(server) -> None:
    lines = [forwarded(event) for event in events()]
    with requests.Session() as session:
        for line in [lines[-1], *lines[:-1]]:  # the newest first: see the module's docstring
            answer = session.post(server.url + "/metrics", data=line, headers={"Content-Type": "application/json"})
            assert answer.status_code == 201, answer.text


# For each group of colours, runs of exactly those colours on the timeline's canvas, in the
# row that has most of them; the centre of the first run of each colour, in CSS pixels of the
# page. One read of the canvas, after two frames (more reads make Chromium warn).
COLOUR_RUNS = """
new Promise(painted => requestAnimationFrame(() => requestAnimationFrame(painted))).then(() => {
  const canvas = document.querySelector('#timeline canvas');
  const { data, width, height } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  const box = canvas.getBoundingClientRect();
  const scale = box.width / width;
  return GROUPS.map((colours) => {
    const kind = (i) => colours.findIndex(([r, g, b]) => data[i] === r && data[i + 1] === g && data[i + 2] === b);
    let best = { count: -1 };
    for (let y = 0; y < height; y++) {
      const runs = colours.map(() => []);
      let previous = -1, count = 0;
      for (let x = 0; x < width; x++) {
        const k = kind((y * width + x) * 4);
        if (k >= 0 && k !== previous) runs[k].push([x, x]);
        if (k >= 0) { runs[k].at(-1)[1] = x; count++; }
        previous = k;
      }
      if (count > best.count) best = { count, y, runs };
    }
    const centre = ([from, to]) => [box.left + ((from + to) / 2 + 0.5) * scale, box.top + (best.y + 0.5) * scale];
    return best.runs.map((runs) => ({ runs: runs.length, first: runs.length ? centre(runs[0]) : null }));
  });
})
"""
KERNEL_BLUE, FAILED_RED, ABANDONED, OPEN = (
    [0x1F, 0x77, 0xB4],
    [0xD6, 0x27, 0x28],
    [0xD9, 0xA3, 0x5B],
    [0xA9, 0xC1, 0xE8],
)
TIP = """
(tip => !tip.hidden && {
  title: tip.querySelector('strong').textContent,
  facts: Object.fromEntries([...tip.querySelectorAll('dt')]
    .map(dt => [dt.textContent, dt.nextElementSibling.textContent])),
})(document.querySelector('#timeline .tip'))
"""
PROCESS_CHART_PIXELS = f"""
new Promise(painted => requestAnimationFrame(() => requestAnimationFrame(painted))).then(() =>
[...document.querySelectorAll('#process-charts figure.chart')].map({COLOURED_PIXELS_OF}))
"""
SUMMARY_ROWS = """
[...document.querySelectorAll('#kernel-summary tr')].map(row => Object.fromEntries(
  [...row.cells].map(cell => [cell.dataset.field, cell.dataset.value ?? cell.textContent])))
"""
SUMMARY_TEXTS = "[...document.querySelectorAll('#kernel-summary tr')].map(r => [...r.cells].map(c => c.textContent))"


def check_process_list(page) -> None:
    rows = "[...document.querySelectorAll('#process-rows tr[data-pid]')]"
    page.wait_for(f"{rows}.length === 2")
    shown = page.evaluate(f"{rows}.map(r => [...r.cells].map(c => c.textContent))")
    assert [row[:3] for row in shown] == [[HOST, str(PID), "train"], [HOST, str(OTHER), "eval"]], shown
    assert [row[6:] for row in shown] == [["shut down", "16"], ["no shutdown yet", "4"]], shown
    assert shown[0][5] == "1 min 58 s", shown  # its length: init to shutdown


def local_clock(iso: str) -> str:
    """A span's time as the tooltip says it: the browser's (this host's) time of day, to the microsecond."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S.%f")


def check_timeline(page, server) -> None:
    """The lanes' counts, the kernel bars on the canvas, and the tooltips of an abandoned scope and
    of the failed kernel (last, so that the screenshots show it)."""
    counts = page.wait_for(
        "(c => c.dataset.kernels === '12' && c.textContent)(document.getElementById('timeline-counts'))"
    )
    assert counts == "12 kernels (1 failed) · 4 scopes (1 abandoned)"
    assert page.evaluate("document.getElementById('process-note').textContent") == ""
    groups = json.dumps([[KERNEL_BLUE, FAILED_RED], [ABANDONED]])
    (blue, red), (abandoned,) = page.evaluate(COLOUR_RUNS.replace("GROUPS", groups))
    assert (blue["runs"], red["runs"]) == (11, 1) and abandoned["runs"], (blue, red, abandoned)  # striped

    page.hover(*abandoned["first"])
    tip = page.wait_for(f"(t => t && t.title === 'scope: eval' && t)({TIP})")
    assert (tip["facts"]["state"], tip["facts"]["duration"]) == ("abandoned", "unknown (abandoned)"), tip

    params = {"host": HOST, "pid": PID, "cudaError": "failed"}
    (failed,) = requests.get(server.url + "/spans", params=params, timeout=10).json()["items"]
    page.hover(*red["first"])
    tip = page.wait_for(f"(t => t && t.title.startsWith('kernel') && t)({TIP})")
    assert tip["title"] == f"kernel: {REDUCE}"
    assert tip["facts"] == {
        "start": local_clock(failed["start"]),
        "end": local_clock(failed["end"]),
        "duration": "100 µs",
        "grid": "64 × 2 × 1",
        "block": "512 × 1 × 1",
        "shared memory": "4,096 B",
        "error": "cudaErrorLaunchOutOfResources",
    }, tip
    assert page.evaluate("document.querySelector('#timeline .tip').classList.contains('failed')")
    assert page.evaluate("document.querySelector('#timeline .tip dd.error').textContent") == failed["cudaError"]


def check_gpu_charts(page) -> None:
    page.wait_for("document.querySelectorAll('#process-charts figure.chart:not(.empty) canvas').length === 2")
    drawn = page.evaluate(PROCESS_CHART_PIXELS)
    assert [chart for chart, _ in drawn] == ["utilization", "memory"]
    assert all(coloured > 100 for _, coloured in drawn), drawn


TIMELINE_PLOT = (
    "(r => [r.left, r.top, r.width, r.height])(document.querySelector('#timeline .u-over').getBoundingClientRect())"
)
CURSORS = "[...document.querySelectorAll('#process-charts .u-cursor-x')].map(c => c.getBoundingClientRect().left)"
CHART_TIME = (
    "document.querySelector('#process-charts figure[data-chart=\"utilization\"] .u-series .u-value').textContent"
)


def drag(page, since: float, until: float) -> tuple[float, float, float]:
    """Drag across the timeline's kernel lane from one share of its width to another; where it is."""
    left, top, width, height = page.evaluate(TIMELINE_PLOT)
    y = top + height * 0.8
    page.hover(left + width * since, y)
    page.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": left + width * since, "y": y, "button": "left"})
    for share in (since + (until - since) * step / 3 for step in (1, 2, 3)):
        page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": left + width * share, "y": y, "buttons": 1})
    page.send(
        "Input.dispatchMouseEvent", {"type": "mouseReleased", "x": left + width * until, "y": y, "button": "left"}
    )
    return left, y, width


def check_zoom(page, server) -> None:
    """A drag across 10 % to 40 % of the timeline zooms it, and the GPU charts follow: their
    cursor stands where the timeline's does, at the time a quarter into the run."""
    left, y, width = drag(page, 0.1, 0.4)
    assert page.evaluate("!document.getElementById('timeline-whole').hidden")
    x = left + width * 0.5
    page.hover(x, y)
    cursors = page.wait_for(f"(c => c.length === 2 && c)({CURSORS})")
    assert all(abs(at - x) <= 1.5 for at in cursors), (x, cursors)
    (process,) = [p for p in requests.get(server.url + "/processes", timeout=10).json()["processes"] if p["pid"] == PID]
    first = datetime.fromisoformat(process["firstSeen"].replace("Z", "+00:00")).astimezone().replace(tzinfo=None)

    def chart_time_at(share: float) -> None:  # the nearest sample's, 5 s apart
        expected = first + timedelta(seconds=share * RUN_S)
        shown = datetime.fromisoformat(page.evaluate(CHART_TIME))
        assert abs((shown - expected).total_seconds()) <= 3, (share, shown, expected)

    chart_time_at(0.25)
    page.evaluate("document.querySelector('#timeline .u-over').dispatchEvent(new MouseEvent('dblclick'))")
    page.hover(x + 1, y)
    page.hover(x, y)
    chart_time_at(0.5)  # the whole run again
    assert page.evaluate("document.getElementById('timeline-whole').hidden")


def check_summary(page, server) -> None:
    """The table is /spans/summary's answer, row for row and number for number."""
    params = {"host": HOST, "pid": PID, "type": "kernel"}
    expected = requests.get(server.url + "/spans/summary", params=params, timeout=10).json()["items"]
    assert [item["name"] for item in expected] == [FLASH, SGEMM, REDUCE]
    assert sum(item["instances"] for item in expected) == 12 and sum(item["failed"] for item in expected) == 1
    shown = page.wait_for(f"(r => r.length === 3 && r)({SUMMARY_ROWS})")
    for row, item in zip(shown, expected, strict=True):
        assert row["name"] == item["name"]
        assert {field: float(value) for field, value in row.items() if field != "name"} == {
            field: float(value) for field, value in item.items() if field != "name"
        }, (row, item)
    texts = page.evaluate(SUMMARY_TEXTS)
    reduce = texts[2]
    assert reduce[0] == REDUCE and reduce[3] == "4" and reduce[6] == "100 µs" and reduce[9] == "1", reduce


def spans_read(page) -> int:
    return sum("/spans?" in url for url in page.page_requests())


def check_reads_again_only_when_changed(page, server) -> None:
    """The page reads everything every second here (FAST_REFRESH): a finished run's spans are read
    once; a running one's again when it sends more, its zoom kept, and "whole run" undoes it; its
    open scope runs to the end of the window."""
    read, reads = spans_read(page), counter(page, "reads")
    page.wait_for(f"Number(document.body.dataset.reads) >= {reads + 2}")
    assert spans_read(page) == read, "a finished run was read again"
    page.evaluate(f"location.hash = '#host={HOST}&pid={OTHER}'")
    counts = page.wait_for(
        "(c => c.dataset.kernels === '3' && c.textContent)(document.getElementById('timeline-counts'))"
    )
    assert counts == "3 kernels · 1 scope (1 open)"
    drag(page, 0.05, 0.6)
    page.wait_for("!document.getElementById('timeline-whole').hidden")
    line = forwarded(kernel_event(OTHER, "eval", 34, SGEMM, 300_000))
    assert requests.post(server.url + "/metrics", data=line, headers={"Content-Type": "application/json"}).ok
    page.wait_for("document.getElementById('timeline-counts').dataset.kernels === '4'")
    assert page.evaluate("!document.getElementById('timeline-whole').hidden"), "the zoom was lost"
    page.evaluate("document.getElementById('timeline-whole').click()")
    page.wait_for("document.getElementById('timeline-whole').hidden")
    ((open_scope,),) = page.evaluate(COLOUR_RUNS.replace("GROUPS", json.dumps([[OPEN]])))
    page.hover(*open_scope["first"])
    tip = page.wait_for(f"(t => t && t.title === 'scope: infer' && t)({TIP})")
    facts = {name: tip["facts"][name] for name in ("end", "duration", "tag", "state")}
    assert facts == {"end": "still open", "duration": "unknown (open)", "tag": "batch1", "state": "open"}, tip
    page.evaluate(f"location.hash = '#host={HOST}&pid={PID}'")
    page.wait_for("document.getElementById('timeline-counts').dataset.kernels === '12'")


def save_view(page, tmp_path, name: str):
    """The process view alone (what docs/dashboard-timeline.png shows), beside the full page. Within
    the window, the tooltip stays: a capture beyond it resizes the page, which moves the mouse away."""
    box = page.evaluate(
        "(r => ({x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height}))"
        "(document.getElementById('process').getBoundingClientRect())"
    )
    beyond = box["y"] + box["height"] > page.evaluate("innerHeight")
    clip = {**box, "scale": 1}
    data = page.send("Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": beyond})
    path = tmp_path / f"{name}-view.png"
    path.write_bytes(base64.b64decode(data["data"]))
    print(f"process view screenshot: {path}")


def test_process_timeline_gpus_and_kernel_summary(gunicorn, open_page, tmp_path, database_url):
    """A process chosen from the list: its GPUs' utilization and memory, a zoom they follow, its
    kernel summary, reads only when it changed, its lanes, a failed kernel's and an abandoned
    scope's tooltips; nothing from elsewhere."""
    server = gunicorn()
    post_events(server)
    page = open_page(server, "timeline", window=(1280, 1100))
    page.before_scripts(FAST_REFRESH)
    url = page.goto("/dashboard")
    began = time.monotonic()
    check_process_list(page)
    page.evaluate(f"document.querySelector('#process-rows tr[data-pid=\"{PID}\"] a').click()")
    assert page.wait_for("location.hash") == f"#host={HOST}&pid={PID}"
    title = page.wait_for("(t => t.startsWith('Process') && t)(document.getElementById('process-title').textContent)")
    assert title == f"Process {PID} (train) on {HOST}"
    check_gpu_charts(page)
    check_zoom(page, server)
    check_summary(page, server)
    check_reads_again_only_when_changed(page, server)
    check_timeline(page, server)
    name = f"timeline-{database_url.split(':')[0]}"
    save_view(page, tmp_path, name)
    keep_screenshot(page, tmp_path, name)
    assert time.monotonic() - began < 20
    assert_clean(page)
    page.close()
    assert_network_cut(page, url)
