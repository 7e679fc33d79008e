"""The docs pages work offline: Swagger UI (/docs) and ReDoc (/redoc) in headless Chromium.

The real gunicorn serves the pages; Chromium loads them with the network cut for anything
but the service (tests/browser.py: a network namespace of its own where `unshare` can make
one, else Chromium's flags), reaching the service as http://gpumetrics.test:PORT, a name
that is not loopback, as a user on another host would reach it.

The tests read the DOM Chromium rendered (every operation of /openapi.json is listed), the
HTML the service served (no URL outside the service; every asset, and every url() of its
stylesheets, answers 200), and Chromium's net log (the page asks no other host for
anything, and no host but the service ever answered). The last test serves the pages with
Swagger UI taken from a CDN and ReDoc from a missing file, and shows the checks then fail.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from browser import (
    HOST,
    Request,
    assert_only_service_answered,
    base_flags,
    chromium,
    external_requests,
    isolation_flags,
    launch,
    read_netlog,
    same_origin,
    stop,
    tail,
    unshare_command,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BROWSER_TIMEOUT = 45  # seconds for one Chromium run, wall clock
VIRTUAL_TIME_BUDGET = 15_000  # milliseconds of page time: scripts, fetches and rendering
WINDOW = (1280, 900)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass
class Visit:
    """What Chromium made of one page."""

    url: str
    dom: str
    requests: list[Request]  # every request Chromium started, the browser's own included
    screenshot: Path | None
    log: Path
    isolation: str  # how the network was cut

    @property
    def origin(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    def external_requests(self) -> set[str]:
        """URLs outside the service that the page (not the browser's own services) asked for."""
        return external_requests(self.requests, self.origin)


def visit(server, path: str, tmp_path: Path, screenshot: bool = True) -> Visit:
    """Load PATH of SERVER in headless Chromium, with the network cut; return its DOM and requests."""
    binary = chromium()
    name = path.strip("/") or "index"
    url = f"http://{HOST}:{server.port}{path}"
    work = tmp_path / f"chromium-{name}-{server.port}"
    work.mkdir()
    netlog, log, png = work / "netlog.json", work / "chromium.log", work / f"{name}.png"
    isolated = unshare_command() is not None
    argv = [
        binary,
        *base_flags(work, netlog, WINDOW),
        *isolation_flags(isolated),
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET}",
        *([f"--screenshot={png}"] if screenshot else []),
        "--dump-dom",
        url,
    ]
    with open(log, "wb") as log_file:
        try:
            process, bridge, isolation = launch(argv, server.port, log_file)
        except AssertionError as error:
            raise AssertionError(f"{error}:\n{tail(log)}") from None
        try:
            dom, _ = process.communicate(timeout=BROWSER_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(process)
            raise AssertionError(f"Chromium took over {BROWSER_TIMEOUT}s on {url}:\n{tail(log)}") from None
        finally:
            if bridge:
                bridge.close()
    assert process.returncode == 0, f"Chromium exited {process.returncode} on {url}:\n{tail(log)}"
    return Visit(url, dom.decode(), read_netlog(netlog), png if screenshot else None, log, isolation)


# --- reading HTML -------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def with_class(self, name: str) -> list[Node]:
        return [node for node in self.walk() if name in node.attrs.get("class", "").split()]

    def text(self) -> str:
        """The visible text: no scripts or styles, no zero-width spaces, whitespace collapsed."""
        if self.tag in ("script", "style"):
            return ""
        parts = [child if isinstance(child, str) else child.text() for child in self.children]
        return " ".join("".join(parts).replace("\u200b", "").split())


class TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag, attrs) -> None:
        node = Node(tag, {key: value or "" for key, value in attrs})
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_startendtag(self, tag, attrs) -> None:
        self.open[-1].children.append(Node(tag, {key: value or "" for key, value in attrs}))

    def handle_endtag(self, tag) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data) -> None:
        self.open[-1].children.append(data)


def parse(html: str) -> Node:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# --- what the pages must show -------------------------------------------------------------


def spec_operations(server) -> set[tuple[str, str, str]]:
    """(METHOD, path, summary) of every operation the service documents."""
    answer = requests.get(server.url + "/openapi.json", timeout=10)
    assert answer.status_code == 200
    operations = {
        (method.upper(), path, operation.get("summary", ""))
        for path, item in answer.json()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }
    # The spec itself must still document the service, or the checks below prove little.
    assert {path for _, path, _ in operations} >= {"/metrics", "/gpus", "/stats", "/health"}
    assert any(summary.startswith("Store one record or a batch") for _, _, summary in operations)
    assert all(summary for _, _, summary in operations), "an operation has no summary"
    return operations


def swagger_operations(dom: str) -> set[tuple[str, str, str]]:
    """(METHOD, path, summary) of every operation block Swagger UI rendered."""
    found = set()
    for block in parse(dom).with_class("opblock"):
        method, path, summary = (
            block.with_class(f"opblock-summary-{part}") for part in ("method", "path", "description")
        )
        if method and path:
            found.add((method[0].text().upper(), path[0].text(), summary[0].text() if summary else ""))
    return found


def assert_swagger_rendered(dom: str, expected: set[tuple[str, str, str]]) -> None:
    rendered = swagger_operations(dom)
    missing = expected - rendered
    assert not missing, f"Swagger UI did not render {sorted(missing)}; it rendered {sorted(rendered)}"


def redoc_operations(dom: str) -> tuple[set[tuple[str, str, str]], set[str]]:
    """(METHOD, path, text) of every operation in ReDoc's side menu, and its section headings."""
    root = parse(dom)
    menu = set()
    for node in root.walk():
        item = node.attrs.get("data-item-id", "")
        if node.attrs.get("role") == "menuitem" and "/paths/" in item:
            pointer, method = item.split("/paths/", 1)[1].rsplit("/", 1)
            path = pointer.replace("~1", "/").replace("~0", "~")
            menu.add((method.upper(), path, node.text()))
    headings = {node.text() for node in root.walk() if node.tag == "h2"}
    return menu, headings


def assert_redoc_rendered(dom: str, expected: set[tuple[str, str, str]]) -> None:
    menu, headings = redoc_operations(dom)
    for method, path, summary in sorted(expected):
        in_menu = [text for m, p, text in menu if (m, p) == (method, path)]
        assert any(summary in text for text in in_menu), f"ReDoc's menu lacks {method} {path}: {summary!r}"
        assert summary in headings, f"ReDoc rendered no section for {method} {path}: {summary!r}"


# --- what the served HTML may reference -----------------------------------------------------

# Absolute URLs, and protocol-relative ones that name a host (not a mere `//` comment).
URL_IN_TEXT = re.compile(r"""https?://[^\s"'<>()]+|(?<![\w:])//[\w-]+(?:\.[\w-]+)+[^\s"'<>()]*""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)""")
CSS_IMPORT = re.compile(r"""@import\s+(?:url\()?\s*['"]([^'"]+)""")


def assert_served_locally(server, path: str) -> None:
    """The page's HTML names no other host, and every asset it references answers 200."""
    page = server.url + path
    answer = requests.get(page, timeout=10)
    assert answer.status_code == 200, f"{path} answered {answer.status_code}"
    html = answer.text
    foreign = [url for url in URL_IN_TEXT.findall(html) if not same_origin(urljoin(page, url), server.url)]
    assert not foreign, f"{path} names URLs outside the service: {foreign}"
    references = [
        value
        for node in parse(html).walk()
        for attribute in ("src", "href", "spec-url")
        if (value := node.attrs.get(attribute))
    ]
    assert references, f"{path} references no asset at all"
    for reference in references:
        asset = urljoin(page, reference)
        assert same_origin(asset, server.url), f"{path} references {reference!r}, outside the service"
        fetched = requests.get(asset, timeout=10)
        assert fetched.status_code == 200 and fetched.content, f"{path}: {reference} answered {fetched.status_code}"
        if reference.endswith(".css") or "text/css" in fetched.headers.get("Content-Type", ""):
            assert_stylesheet_local(asset, fetched.text, server.url)


def assert_stylesheet_local(sheet: str, css: str, origin: str) -> None:
    """Every font, image or import a stylesheet pulls in is inline or served by the service."""
    for reference in CSS_URL.findall(css) + CSS_IMPORT.findall(css):
        if reference.strip().startswith("data:"):
            continue
        asset = urljoin(sheet, reference.strip())
        assert same_origin(asset, origin), f"{sheet} pulls {reference!r} from outside the service"
        assert requests.get(asset, timeout=10).status_code == 200, f"{sheet}: {reference} is not served"


def assert_no_external_requests(page: Visit) -> None:
    unexpected = page.external_requests()
    assert not unexpected, f"{page.url} asked hosts outside the service for {sorted(unexpected)}"


def assert_network_cut(page: Visit) -> None:
    """The service answered Chromium, and nothing else did: not the page's requests, nor the browser's own."""
    assert_only_service_answered(page.requests, page.url, page.isolation)


def assert_screenshot(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert struct.unpack(">II", data[16:24]) == WINDOW


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    chromium()  # skips before any gunicorn starts


def test_swagger_ui_renders_every_operation_offline(gunicorn, tmp_path):
    server = gunicorn()
    expected = spec_operations(server)
    assert_served_locally(server, "/docs")
    page = visit(server, "/docs", tmp_path)
    assert_swagger_rendered(page.dom, expected)
    assert_no_external_requests(page)
    assert_network_cut(page)
    assert_screenshot(page.screenshot)


def test_redoc_renders_every_operation_offline(gunicorn, tmp_path):
    server = gunicorn()
    expected = spec_operations(server)
    assert_served_locally(server, "/redoc")
    page = visit(server, "/redoc", tmp_path)
    assert_redoc_rendered(page.dom, expected)
    assert_no_external_requests(page)
    assert_network_cut(page)
    assert_screenshot(page.screenshot)


# Loaded into gunicorn through PYTHONPATH: rewrites asset URLs in the rendered docs pages,
# so the same service serves pages whose assets cannot load.
BREAK_ASSETS = """
import json, os
import flask
_render_template = flask.render_template
def render_template(*args, **kwargs):
    html = _render_template(*args, **kwargs)
    for good, bad in json.loads(os.environ["GPUMETRICS_TEST_BROKEN_URLS"]).items():
        html = html.replace(good, bad)
    return html
flask.render_template = render_template
"""


def test_the_checks_fail_when_the_assets_do_not_load(gunicorn, tmp_path):
    """Swagger UI from a CDN (unreachable offline) and ReDoc from a missing file both fail."""
    hook = tmp_path / "break-assets"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BREAK_ASSETS)
    broken = {
        "/static/vendor/swagger-ui/swagger-ui": "https://cdn.example.net/swagger-ui-dist/swagger-ui",
        "/static/vendor/redoc/redoc.standalone.js": "/static/vendor/redoc/missing.js",
    }
    pythonpath = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    server = gunicorn(PYTHONPATH=pythonpath, GPUMETRICS_TEST_BROKEN_URLS=json.dumps(broken))
    expected = spec_operations(server)

    with pytest.raises(AssertionError, match="names URLs outside the service"):
        assert_served_locally(server, "/docs")
    docs = visit(server, "/docs", tmp_path, screenshot=False)
    with pytest.raises(AssertionError, match="Swagger UI did not render"):
        assert_swagger_rendered(docs.dom, expected)
    # The page's Content-Security-Policy stops the browser before it asks the CDN at all.
    assert_no_external_requests(docs)
    assert_network_cut(docs)

    with pytest.raises(AssertionError, match="missing.js answered 404"):
        assert_served_locally(server, "/redoc")
    redoc = visit(server, "/redoc", tmp_path, screenshot=False)
    with pytest.raises(AssertionError, match="ReDoc's menu lacks"):
        assert_redoc_rendered(redoc.dom, expected)
    assert_no_external_requests(redoc)  # the script is missing, not elsewhere
    assert_network_cut(redoc)
