"""report.html and compare.html in a real browser: headless Chromium, no network.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): the
browser reads commands from file descriptor 3 and writes replies and events to 4, each a
JSON message ended by a NUL byte. That needs only the standard library (no websocket, no
driver package), and one browser session gives everything checked here: console messages
and uncaught errors, every request the page made, each image's decoded size, and a
screenshot. Where Chromium is not installed the tests are skipped, saying how to get it.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image, ImageStat

import genlab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or os.name != "posix",  # the pipe's file descriptors 3 and 4 are a POSIX affair
    reason="headless Chromium is not installed: `apt-get install chromium` (or `make test` as root) runs these tests",
)
NO_NETWORK = ("--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check")
def network_flags(allowed_host: str | None) -> tuple[str, ...]:
    """NO_NETWORK, with `allowed_host` left out of the resolver's map (the rule maps IP literals too)."""
    if allowed_host is None:
        return NO_NETWORK
    rule = f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {allowed_host}"
    return tuple(rule if flag.startswith("--host-resolver-rules") else flag for flag in NO_NETWORK)


BLANK_VARIANCE = 100.0  # grey-level variance of a screenshot; an all-white (or all-one-colour) page has 0


@dataclass
class PageCheck:
    """What a page did in the browser."""

    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    images: list[dict] = field(default_factory=list)  # per <img>: natural width and height, or the decode error
    screenshot: bytes = b""


class Chromium:
    """One headless Chromium, spoken to over the DevTools protocol on a pipe."""

    def __init__(
        self, executable: str, profile: Path, size: tuple[int, int] = (1280, 1000), allowed_host: str | None = None
    ):
        """`allowed_host` (an address, e.g. 127.0.0.1 for a server the test started) is the one host that still
        resolves; every other name and address maps to nothing."""
        import fcntl

        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        # The browser expects the pipe ends at 3 and 4; copies above 10 cannot collide with those numbers.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]

        def place_pipe_ends():  # in the child, before exec: dup2 clears close-on-exec
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
             *network_flags(allowed_host), "about:blank"],
            preexec_fn=place_pipe_ends, close_fds=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in (to_browser, from_browser, *ends):
            os.close(fd)
        self._buffer, self._next_id, self.events = b"", 0, []

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        """Run one protocol command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout, f"{method} got no reply")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, event: str, session: str, timeout: float = 30) -> None:
        """Read messages until `event` arrives for `session`."""
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self.events):
            self.events.append(self._receive(timeout, f"no {event}"))

    def _receive(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            if not select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError(f"Chromium: {what} within {timeout} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def check(self, path: Path, max_height: int = 6000) -> PageCheck:
        """Open `path` in a fresh tab and report its errors, requests, images and a screenshot."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session)
        self.send("Page.navigate", session, url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired", session)
        images = self.send("Runtime.evaluate", session, awaitPromise=True, returnByValue=True, expression="""
            Promise.all([...document.images].map(img => img.decode().then(
                () => ({width: img.naturalWidth, height: img.naturalHeight}),
                error => ({error: String(error), src: img.src.slice(0, 60)}))))""")["result"]["value"]
        size = self.send("Page.getLayoutMetrics", session)["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        shot = self.send("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
        result = PageCheck(images=images, screenshot=base64.b64decode(shot["data"]))
        for event in (e for e in self.events if e.get("sessionId") == session):
            method, params = event["method"], event["params"]
            if method == "Runtime.exceptionThrown":
                result.errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                result.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                result.errors.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
            elif method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
        self.send("Target.closeTarget", targetId=target)
        return result

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass  # already gone
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._commands, self._replies):
            os.close(fd)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def assert_renders_cleanly(result: PageCheck, page: str) -> None:
    assert result.errors == [], f"{page}: errors in the browser console"
    assert result.images, f"{page}: no images"
    for image in result.images:
        assert "error" not in image and image["width"] > 0 and image["height"] > 0, f"{page}: {image}"
    local = [url for url in result.requests if not url.startswith(("file:", "data:"))]
    assert local == [], f"{page} asked the network for {local}"
    assert ImageStat.Stat(Image.open(io.BytesIO(result.screenshot)).convert("L")).var[0] > BLANK_VARIANCE


@pytest.mark.parametrize("run_fixture", ["tiny_vae", "tiny_gan", "tiny_ddpm"])
def test_a_report_renders_in_chromium(browser, run_fixture, request):
    page = genlab.report(request.getfixturevalue(run_fixture))
    result = browser.check(page)
    assert_renders_cleanly(result, page.name)
    assert len(result.images) == page.read_text().count("<img ")  # every image in the file reached the browser


def test_the_compare_page_renders_in_chromium(browser, tiny_vae, tiny_gan, tmp_path):
    out = tmp_path / "compare.html"
    genlab.compare([tiny_vae, tiny_gan], out=out)
    result = browser.check(out)
    assert_renders_cleanly(result, out.name)
    assert len(result.images) == out.read_text().count("<img ")


def test_the_browser_check_sees_a_broken_page(browser, tmp_path):
    """The checks above are not vacuous: a broken image, an outside URL and a script error are all caught."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                    '<img src="https://example.com/x.png"><script>console.error("boom")</script></body></html>')
    result = browser.check(page)
    assert "boom" in result.errors and any("example.com" in e for e in result.errors)  # the load failed
    assert "https://example.com/x.png" in result.requests
    assert all("error" in image for image in result.images)
    blank = Image.open(io.BytesIO(result.screenshot)).convert("L")
    assert ImageStat.Stat(blank).var[0] < BLANK_VARIANCE  # nothing drawn: a white page
