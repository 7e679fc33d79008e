"""Headless Chromium with the network cut, for the tests of the pages the service serves.

Shared by the docs pages' tests (one Chromium run per page, its DOM dumped) and the
dashboard's (a Chromium driven over the DevTools protocol, because that page is used,
not only shown). Where `unshare` can make a network namespace (as root, or with
unprivileged user namespaces), Chromium runs in a fresh one holding only a loopback
interface and no route: its one way out is a listening socket made inside that namespace
and piped to the gunicorn port (Bridge). Elsewhere, Chromium's own flags make every other
host unresolvable and send anything left to a dead proxy. Either way the page is reached
as http://gpumetrics.test:PORT, a name that is not loopback, as a user on another host
would reach it. Chromium's net log then shows what it asked for and what answered.

The DevTools protocol goes over the pipes Chromium opens with --remote-debugging-pipe
(its fds 3 and 4): no port, so it works inside the namespace, and no driver to install.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

HOST = "gpumetrics.test"  # the name Chromium knows the service by; mapped to 127.0.0.1


# JavaScript: a chart's figure -> [its name, the pixels of its series strokes]: coloured
# pixels, where axes, grid and text are grey or black. A blank canvas counts 0.
COLOURED_PIXELS_OF = """
(figure => {
  const canvas = figure.querySelector('canvas');
  if (!canvas || !canvas.width) return [figure.dataset.chart, 0];
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 128 && Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured++;
  }
  return [figure.dataset.chart, coloured];
})
"""


def chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    missing = "headless Chromium is missing: install the Debian package `chromium` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(missing)  # CI installs it: a skip there would pass without the browser
    pytest.skip(missing)


# --- the network cut ----------------------------------------------------------------------

# Run inside a new network namespace: bring lo up, then make sure nothing else is routed.
ISOLATE = """
import fcntl, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    ifreq = fcntl.ioctl(s, 0x8913, struct.pack("16sH22x", b"lo", 0))  # SIOCGIFFLAGS
    flags = struct.unpack_from("16sH", ifreq)[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
for family, address in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):  # documentation
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((address, 9))  # a UDP connect only looks the route up
    except OSError:
        continue
    sys.exit(f"the new network namespace has a route to {address}")
"""

# Then listen on 127.0.0.1:PORT there, hand the listening socket to the test through the
# Unix socket CHANNEL, and become Chromium.
HAND_OVER = """
import os
channel, port, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
listener = socket.create_server(("127.0.0.1", port))
with socket.socket(fileno=channel) as chan:
    socket.send_fds(chan, [b"listening"], [listener.fileno()])
listener.close()
os.execv(argv[0], argv)
"""

UNSHARE = (
    ["unshare", "--net", "--"],  # root, or CAP_SYS_ADMIN
    ["unshare", "--user", "--map-root-user", "--net", "--"],  # unprivileged user namespaces
)


@cache
def unshare_command() -> list[str] | None:
    """The first way of making an isolated network namespace that works here, if any."""
    if not shutil.which("unshare"):
        return None
    for command in UNSHARE:
        try:
            done = subprocess.run([*command, sys.executable, "-c", ISOLATE], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return None


def isolation_flags(isolated: bool) -> list[str]:
    """Chromium's resolver (and proxy) flags: in a namespace only the service's name needs mapping."""
    if isolated:
        return [f"--host-resolver-rules=MAP {HOST} 127.0.0.1"]
    return [
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",  # discard port: nothing listens, so anything proxied fails
        f"--proxy-bypass-list={HOST}",
    ]


def base_flags(work: Path, netlog: Path, window: tuple[int, int]) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={work / 'profile'}",
        f"--log-net-log={netlog}",
        f"--window-size={window[0]},{window[1]}",
    ]


class Bridge:
    """Accepts connections on a socket inside Chromium's namespace and pipes each to gunicorn."""

    def __init__(self, listener: socket.socket, port: int) -> None:
        self.listener = listener
        self.port = port
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        listener.settimeout(0.2)
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                inside, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            inside.settimeout(None)
            try:
                outside = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            except OSError:
                inside.close()
                continue
            outside.settimeout(None)
            with self.lock:
                self.sockets += [inside, outside]
            self._spawn(self._pipe, inside, outside)
            self._spawn(self._pipe, outside, inside)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        """Copy until SOURCE ends. A reset (gunicorn dropping an idle keep-alive connection as a
        request arrives on it) must end the other side too: left open, Chromium would wait for
        an answer that never comes."""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (sink, source):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopping.set()
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(timeout=5)
        for sock in [*sockets, self.listener]:
            sock.close()


def launch(argv: list[str], port: int, log_file, stdout=subprocess.PIPE, pass_fds=()) -> tuple:
    """Start ARGV (Chromium) in its own session, in a fresh network namespace when one can be
    made; returns (process, bridge or None, how the network is cut)."""
    unshare = unshare_command()
    if not unshare:
        process = subprocess.Popen(argv, stdout=stdout, stderr=log_file, pass_fds=pass_fds, start_new_session=True)
        return process, None, "Chromium flags"
    ours, theirs = socket.socketpair()
    with ours, theirs:
        command = [*unshare, sys.executable, "-c", ISOLATE + HAND_OVER, str(theirs.fileno())]
        process = subprocess.Popen(
            [*command, str(port), *argv],
            pass_fds=[theirs.fileno(), *pass_fds],
            stdout=stdout,
            stderr=log_file,
            start_new_session=True,
        )
        theirs.close()
        ours.settimeout(20)
        try:
            _, fds, _, _ = socket.recv_fds(ours, 64, 1)
        except (TimeoutError, OSError):
            fds = []
    if not fds:
        stop(process)
        raise AssertionError("could not set up the network namespace")
    return process, Bridge(socket.socket(fileno=fds[0]), port), "network namespace"


def stop(process: subprocess.Popen) -> None:
    """Kill Chromium and the helpers it started (its own session), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# --- what Chromium asked for ----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    url: str
    initiator: str | None  # the page's origin, or "not an origin" for navigations and the browser's own
    answered: bool  # a response came back


def read_netlog(path: Path) -> list[Request]:
    """Every URL request in a Chromium net log, and whether a response came back."""
    text = path.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # Chromium did not finish the file: close its event list
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    kinds = log["constants"]["logEventTypes"]
    started: dict[int, tuple[str, str | None]] = {}
    answered: set[int] = set()
    for event in log["events"]:
        source, params = event["source"]["id"], event.get("params", {})
        if event["type"] == kinds["URL_REQUEST_START_JOB"] and "url" in params and source not in started:
            started[source] = (params["url"], params.get("initiator"))
        elif event["type"] == kinds["HTTP_TRANSACTION_READ_RESPONSE_HEADERS"]:
            answered.add(source)
    return [Request(url, initiator, source in answered) for source, (url, initiator) in started.items()]


def same_origin(url: str, origin: str) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == origin


def external_requests(requests: list[Request], origin: str) -> set[str]:
    """URLs outside the service that the page (not the browser's own services) asked for."""
    return {
        request.url
        for request in requests
        if request.initiator not in (None, "not an origin") and not same_origin(request.url, origin)
    }


def assert_only_service_answered(requests: list[Request], url: str, isolation: str) -> None:
    """The service answered Chromium, and nothing else did: not the page's requests, nor the browser's own."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    answered = {request.url for request in requests if request.answered}
    assert url in answered, f"the net log shows no answer for {url}"
    escaped = sorted(url for url in answered if not same_origin(url, origin))
    assert not escaped, f"hosts outside the service answered Chromium, cut by {isolation}: {escaped}"


# --- a Chromium driven over the DevTools protocol -----------------------------------------

# Chromium reads the protocol on fd 3 and writes on fd 4: put the pipes there, then exec.
ON_FDS_3_AND_4 = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]
for fd in sys.argv[1:3]:
    os.close(int(fd))
os.dup2(ends[0], 3)
os.dup2(ends[1], 4)
for fd in ends:
    os.close(fd)
os.execv(sys.argv[3], sys.argv[3:])
"""


class DevTools:
    """The DevTools protocol over Chromium's pipes: commands answered by id, events kept in order."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self.out = os.fdopen(to_browser, "wb", buffering=0)
        self.inp = os.fdopen(from_browser, "rb", buffering=0)
        self.next_id = 0
        self.answers: dict[int, dict] = {}
        self.events: list[dict] = []
        self.changed = threading.Condition()
        self.closed = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buffer = b""
        while chunk := self.inp.read(1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self.changed:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self.answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        with self.changed:
            self.next_id += 1
            ident = self.next_id
        message = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.out.write(json.dumps(message).encode() + b"\0")
        with self.changed:
            if not self.changed.wait_for(lambda: ident in self.answers or self.closed, timeout):
                raise AssertionError(f"Chromium did not answer {method} within {timeout} s")
            if ident not in self.answers:
                raise AssertionError(f"Chromium closed its pipe before answering {method}")
            answer = self.answers.pop(ident)
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer["result"]

    def wait_event(self, method: str, since: int, timeout: float = 30) -> dict:
        """The first event METHOD at or after position SINCE of the event list."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: next((e for e in self.events[since:] if e["method"] == method), None), timeout
            )
        if not found:
            raise AssertionError(f"no {method} within {timeout} s")
        return found

    def close(self) -> None:
        """After Chromium has exited (its end of the pipe is closed, so the reader is done)."""
        self.reader.join(timeout=5)
        for end in (self.out, self.inp):
            try:
                end.close()
            except OSError:
                pass


@dataclass(frozen=True)
class ConsoleEntry:
    level: str  # error, warning, ...
    source: str  # javascript, network, security (a CSP violation), console-api, exception
    text: str
    url: str


class Browser:
    """One headless Chromium on a page of SERVER, network cut unless `isolated` is False (the
    benchmark, which measures the page, not the isolation), driven over the DevTools protocol.

    It records every console message and exception, every request the page started, and
    Chromium's net log; `close()` stops it and reads the net log.
    """

    def __init__(self, server, work: Path, window: tuple[int, int] = (1280, 900), isolated: bool = True) -> None:
        self.server, self.work, self.window = server, work, window
        work.mkdir(parents=True, exist_ok=True)
        self.netlog, self.log = work / "netlog.json", work / "chromium.log"
        self.isolated = isolated
        self.origin = f"http://{HOST}:{server.port}" if isolated else server.url
        self.requests: list[Request] = []
        self._start()

    def _start(self) -> None:
        to_read, to_browser = os.pipe()  # Chromium reads commands from to_read
        from_browser, to_write = os.pipe()
        flags = isolation_flags(unshare_command() is not None) if self.isolated else []
        argv = [
            sys.executable, "-c", ON_FDS_3_AND_4, str(to_read), str(to_write), chromium(),
            *base_flags(self.work, self.netlog, self.window), *flags, "--remote-debugging-pipe", "about:blank",
        ]  # fmt: skip
        with open(self.log, "wb") as log_file:
            if self.isolated:
                self.process, self.bridge, self.isolation = launch(
                    argv, self.server.port, log_file, stdout=log_file, pass_fds=(to_read, to_write)
                )
            else:
                self.bridge, self.isolation = None, "none (benchmark)"
                self.process = subprocess.Popen(
                    argv, stdout=log_file, stderr=log_file, pass_fds=(to_read, to_write), start_new_session=True
                )
        os.close(to_read)
        os.close(to_write)
        self.devtools = DevTools(to_browser, from_browser)
        self.session = self._attach()

    def _attach(self) -> str:
        targets = self.devtools.send("Target.getTargets")["targetInfos"]
        page = next(target for target in targets if target["type"] == "page")
        session = self.devtools.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})
        session_id = session["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.devtools.send(f"{domain}.enable", session=session_id)
        return session_id

    def send(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        return self.devtools.send(method, params, session=self.session, timeout=timeout)

    def goto(self, path: str, timeout: float = 30) -> str:
        """Navigate to PATH of the service and wait for its load event; the URL."""
        url = self.origin + path
        since = len(self.devtools.events)
        answer = self.send("Page.navigate", {"url": url})
        assert not answer.get("errorText"), f"{url}: {answer['errorText']}"
        self.devtools.wait_event("Page.loadEventFired", since, timeout)
        return url

    def evaluate(self, expression: str, timeout: float = 30) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, timeout
        )
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20, every: float = 0.05) -> Any:
        """Poll EXPRESSION until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{expression!r} still {value!r} after {timeout} s; console: {self.console()}")
            time.sleep(every)

    def console(self) -> list[ConsoleEntry]:
        """Everything the page said on its console, and every exception it did not catch."""
        entries = []
        with self.devtools.changed:
            events = list(self.devtools.events)
        for event in events:
            method, params = event["method"], event.get("params", {})
            if method == "Log.entryAdded":
                entry = params["entry"]
                entries.append(ConsoleEntry(entry["level"], entry["source"], entry["text"], entry.get("url", "")))
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                entries.append(ConsoleEntry(params["type"], "console-api", text, ""))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text", "")
                entries.append(ConsoleEntry("error", "exception", text, details.get("url", "")))
        return entries

    def mark(self) -> int:
        """A position in the event list, for events_since()."""
        with self.devtools.changed:
            return len(self.devtools.events)

    def events_since(self, method: str, since: int = 0) -> list[dict]:
        with self.devtools.changed:
            return [e["params"] for e in self.devtools.events[since:] if e["method"] == method]

    def page_requests(self, since: int = 0) -> list[str]:
        """Every URL the page asked for (Network.requestWillBeSent), in order."""
        return [params["request"]["url"] for params in self.events_since("Network.requestWillBeSent", since)]

    def sent_headers(self, path: str) -> list[dict[str, str]]:
        """The headers of every request the page sent to PATH of the service."""
        sent = self.events_since("Network.requestWillBeSent")
        return [p["request"]["headers"] for p in sent if urlsplit(p["request"]["url"]).path == path]

    def before_scripts(self, source: str) -> None:
        """Run SOURCE in every page this browser loads from now on, before the page's own scripts."""
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": source})

    def type_text(self, text: str) -> None:
        """Type into the focused element, then press Enter."""
        self.send("Input.insertText", {"text": text})
        enter = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **enter})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **enter})

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def hover(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def close(self) -> None:
        """Stop Chromium, then read what its net log says it asked for and what answered; once."""
        if self.process.returncode is not None and self.devtools.closed:
            return
        try:
            self.devtools.send("Browser.close", timeout=10)
            self.process.wait(timeout=10)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            pass
        if self.process.poll() is None:
            stop(self.process)
        self.devtools.close()
        if self.bridge:
            self.bridge.close()
        if self.netlog.exists():
            self.requests = read_netlog(self.netlog)
