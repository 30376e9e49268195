"""Open a local HTML page in headless Chromium and report what a reader's browser would see.

The browser is driven over the Chrome DevTools Protocol through ``--remote-debugging-pipe``: Chromium reads
NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4. That needs nothing beyond the standard
library: no port, no websocket client, no browser download (it uses the system's Chromium, see ``chromium()``).

Every host name resolves to nothing (``--host-resolver-rules``), so a page that reaches for the network fails fast
and offline, and each such URL is listed in ``Rendered.requests``.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import math
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # needed as root, and in most containers
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)


@functools.lru_cache(maxsize=1)
def chromium() -> str | None:
    """Path of a Chromium or Chrome that answers ``--version``, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0 and ("Chromium" in done.stdout or "Chrome" in done.stdout):
            return path
    return None


@dataclass
class Rendered:
    console_errors: list[str]  # console.error calls, uncaught exceptions, error log entries, failed loads
    text: str  # document.body.innerText after load
    html: str  # document.documentElement.outerHTML after scripts ran
    requests: list[str]  # URLs fetched other than the page itself and data: URIs; [] for a self-contained page


class BrowserError(RuntimeError):
    pass


class _Pipe:
    """A CDP connection over the two pipes; events are kept in order until asked for."""

    def __init__(self, to_browser: int, from_browser: int, proc: subprocess.Popen, log: Path):
        self.wfd, self.rfd, self.proc, self.log = to_browser, from_browser, proc, log
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def _fail(self, why: str) -> BrowserError:
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return BrowserError(f"{why}; browser stderr:\n{tail}")

    def _read(self, deadline: float) -> dict:
        parts = [self.buffer]
        while b"\0" not in parts[-1]:  # a screenshot comes as megabytes: look for the end in new bytes only
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._fail("timed out waiting for the browser")
            ready, _, _ = select.select([self.rfd], [], [], left)
            if ready:
                chunk = os.read(self.rfd, 1 << 20)
                if not chunk:
                    raise self._fail(f"browser closed the pipe (exit code {self.proc.poll()})")
                parts.append(chunk)
        message, _, self.buffer = b"".join(parts).partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self.wfd, data) :]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, done, timeout: float = 30) -> None:
        """Read events until ``done(events)`` holds for the events seen so far."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            event = self._read(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == "Inspector.targetCrashed":
                    raise self._fail("the page crashed")


def _high_fd(fd: int) -> int:
    """A close-on-exec copy of fd numbered 10 or above, so that the child can move it to 3 or 4 safely."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


def _launch(binary: str, profile: Path, log: Path) -> tuple[subprocess.Popen, int, int]:
    child_in, to_browser = (_high_fd(fd) for fd in os.pipe())
    from_browser, child_out = (_high_fd(fd) for fd in os.pipe())

    def as_fd3_fd4():  # runs in the child between fork and exec; os.dup2 leaves the copies inheritable
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    try:
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=as_fd3_fd4,
                close_fds=False,  # close_fds would close 3 and 4 after preexec_fn; other fds are non-inheritable
                start_new_session=True,  # its own process group: one killpg ends the renderers too
            )
    except BaseException:
        for fd in (to_browser, from_browser):
            os.close(fd)
        raise
    finally:
        os.close(child_in)
        os.close(child_out)
    return proc, to_browser, from_browser


def _loaded(events: list[dict], url: str) -> bool:
    """Whether the load event fired after the main frame navigated to ``url`` (not a late one from about:blank)."""
    navigated = False
    for event in events:
        if event["method"] == "Page.frameNavigated":
            frame = event["params"]["frame"]
            navigated = navigated or (not frame.get("parentId") and frame["url"].split("#")[0] == url)
        elif event["method"] == "Page.loadEventFired" and navigated:
            return True
    return False


def _describe(obj: dict) -> str:
    if "value" in obj:
        return obj["value"] if isinstance(obj["value"], str) else json.dumps(obj["value"])
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "")


def render(page: Path, screenshot: Path | None = None, width: int = 1280, timeout: float = 30) -> Rendered:
    """Load ``page`` (a local file) headless, let its scripts run, and report errors, text, DOM and requests.

    With ``screenshot``, a PNG of the whole page (not just the viewport) is written there.
    """
    binary = chromium()
    if binary is None:
        raise BrowserError("no Chromium found (looked for " + ", ".join(CANDIDATES) + ")")
    page = Path(page).resolve()
    url = page.as_uri()
    tmp = Path(tempfile.mkdtemp(prefix="render-"))
    proc, wfd, rfd = _launch(binary, tmp / "profile", tmp / "stderr.log")
    cdp = _Pipe(wfd, rfd, proc, tmp / "stderr.log")
    try:
        target = cdp.call("Target.createTarget", url="about:blank", timeout=timeout)["targetId"]
        s = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            cdp.call(f"{domain}.enable", session=s)
        cdp.call(
            "Emulation.setDeviceMetricsOverride", session=s, width=width, height=800, deviceScaleFactor=1, mobile=False
        )
        cdp.events.clear()  # nothing from about:blank
        nav = cdp.call("Page.navigate", session=s, url=url, timeout=timeout)
        if nav.get("errorText"):
            raise BrowserError(f"could not open {url}: {nav['errorText']}")
        cdp.wait_for(lambda events: _loaded(events, url), timeout=timeout)
        # Let work queued by load handlers (timers, animation frames) run before reading the page.
        settle = "new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)))"
        cdp.call("Runtime.evaluate", session=s, expression=settle, awaitPromise=True, timeout=timeout)
        text, html = (
            cdp.call("Runtime.evaluate", session=s, expression=expr, returnByValue=True)["result"].get("value", "")
            for expr in ("document.body ? document.body.innerText : ''", "document.documentElement.outerHTML")
        )
        if screenshot is not None:
            size = cdp.call("Page.getLayoutMetrics", session=s)["cssContentSize"]
            height = max(math.ceil(size["height"]), 1)
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                session=s,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            shot = cdp.call(
                "Page.captureScreenshot", session=s, format="png", captureBeyondViewport=True, timeout=timeout
            )
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        return _collect(cdp.events, url, text, html)
    finally:
        try:
            cdp.call("Browser.close", timeout=5)
        except (BrowserError, OSError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started; leftovers (zygote, renderers) go too
        except ProcessLookupError:
            pass
        proc.wait()
        os.close(wfd)
        os.close(rfd)
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(events: list[dict], url: str, text: str, html: str) -> Rendered:
    errors: list[str] = []
    requests: list[str] = []
    logged_urls: set[str] = set()
    failed: dict[str, str] = {}  # request id -> message, for loads the log did not already report
    urls: dict[str, str] = {}
    for event in events:
        method, p = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(_describe(arg) for arg in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            what = d.get("exception", {}).get("description") or ""
            errors.append(f"{d.get('text', 'Uncaught')} {what}".strip())
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            errors.append(entry["text"] + (f" ({entry['url']})" if entry.get("url") else ""))
            logged_urls.add(entry.get("url", ""))
        elif method == "Network.requestWillBeSent":
            request_url = p["request"]["url"]
            urls[p["requestId"]] = request_url
            if not request_url.startswith("data:") and request_url.split("#")[0] != url and request_url not in requests:
                requests.append(request_url)
        elif method == "Network.loadingFailed" and not p.get("canceled"):
            failed[p["requestId"]] = p.get("errorText", "failed")
    for request_id, why in failed.items():
        if urls.get(request_id, "") not in logged_urls:
            errors.append(f"Failed to load {urls.get(request_id, '?')}: {why}")
    return Rendered(console_errors=errors, text=text, html=html, requests=requests)
