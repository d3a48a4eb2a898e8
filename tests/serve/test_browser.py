"""`genlab serve`'s page in headless Chromium, against the real server in this process.

One server (uvicorn in a thread) over three zoo models and two tiny runs made here, one browser for the
module (tests/explain/test_browser.py's `Chromium`, over the DevTools pipe, no network); each test opens
its own tab at a URL that says the view's state, acts as a user would (a click, a slider's input event, a
drag on the canvas), waits for the page to go idle (body[data-busy="0"]) and checks what it shows against
the models themselves. Every tab must log no console error and ask nothing of any other origin.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from urllib.parse import urlencode

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.data.text import load_text_splits
from tests.explain.test_browser import CHROMIUM, Chromium

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed: `apt-get install chromium`"
)

ZOO = ["zoo:vae-mnist5k", "zoo:gan-mnist5k", "zoo:ddpm-mnist5k-cond"]
VAE, GAN, DDPM, PIXELCNN, GPT = range(5)  # the runs' ids, in the order the server is given them
TINY_PIXELCNN = {"channels": 8, "layers": 2, "head_channels": 16}
TINY_GPT = {"preset": "tiny", "context": 32}
WAIT = 90  # seconds a page may take to settle (the machine may be busy)


# ---------------------------------------------------------------- the server and the browser


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The zoo models, plus a PixelCNN (complete) and a GPT (text) trained for one epoch: seconds each."""
    folder = tmp_path_factory.mktemp("serve-runs")
    quiet = dict(epochs=1, seed=0, progress=False, sample_every=0)
    genlab.train("pixelcnn", "mnist-5k", folder / "pixelcnn", model_config=TINY_PIXELCNN, **quiet)
    quotes = folder / "quotes.txt"
    train, _ = load_text_splits("fortunes")
    quotes.write_text("\n\n".join(d.replace("\n\n", "\n") for d in train.documents if len(d) < 300)[:20_000] + "\n")
    genlab.train("gpt", f"text:{quotes}", folder / "gpt", batch_size=16, model_config=TINY_GPT, **quiet)
    return [*ZOO, str(folder / "pixelcnn"), str(folder / "gpt")]


@pytest.fixture(scope="module")
def server(runs):
    from genlab.serve.app import ServerThread, create_app

    thread = ServerThread(create_app(runs)).start()
    yield thread.url.rstrip("/")
    thread.stop()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"), allowed_host="127.0.0.1")
    yield browser
    browser.close()


def api(server: str, path: str, **query) -> dict:
    """The server's JSON answer to GET /api/PATH?QUERY, as the page would ask it."""
    with urllib.request.urlopen(f"{server}/api/{path}?{urlencode(query)}", timeout=WAIT) as response:
        return json.load(response)


def pixels(data_url: str) -> np.ndarray:
    """A PNG data URL's grey levels as floats in [0, 1], (H, W)."""
    assert data_url.startswith("data:image/png;base64,"), data_url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


class Tab:
    """One browser tab on the explorer: navigate, run JavaScript, wait, and read back what went wrong."""

    def __init__(self, chromium: Chromium, server: str):
        self.chromium, self.server = chromium, server
        self.target = chromium.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = chromium.send("Target.attachToTarget", targetId=self.target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            chromium.send(f"{domain}.enable", self.session)

    def open(self, query: str = "") -> Tab:
        """Load the page at /?QUERY and wait until it has listed the runs and finished its first requests."""
        self.chromium.send("Page.navigate", self.session, url=f"{self.server}/{query}")
        self.chromium.wait_for("Page.loadEventFired", self.session, timeout=WAIT)
        self.wait("document.body.dataset.ready === 'true'")
        self.idle()
        return self

    def js(self, expression: str, timeout: float = WAIT):
        """The value of `expression` (awaited if a promise); a JavaScript exception fails the test."""
        reply = self.chromium.send(
            "Runtime.evaluate",
            self.session,
            timeout=timeout + 10,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description") or details.get("text"))
        return reply["result"].get("value")

    def wait(self, condition: str, timeout: float = WAIT):
        """Poll `condition` in the page every 50 ms until it is truthy; return its value."""
        return self.js(
            f"""new Promise((resolve, reject) => {{
            const start = performance.now();
            const poll = () => {{
                let value;
                try {{ value = ({condition}); }} catch (error) {{ value = undefined; }}
                if (value) resolve(value);
                else if (performance.now() - start > {timeout * 1000}) reject(new Error(
                    "timed out waiting for " + {json.dumps(condition)} + "; status: " +
                    document.getElementById("status").textContent));
                else setTimeout(poll, 50);
            }};
            poll();
        }})""",
            timeout,
        )

    def idle(self) -> None:
        """Wait until no request or stream of the page is in flight."""
        self.wait("document.body.dataset.busy === '0'")

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def status(self) -> tuple[str, str]:
        return tuple(
            self.js(
                "[document.getElementById('status').textContent, document.getElementById('status').dataset.kind || '']"
            )
        )

    def query(self) -> dict[str, str]:
        """The page's own URL query: the state it says a link reproduces."""
        return dict(self.js("[...new URLSearchParams(location.search)]"))

    def _events(self):
        return [e for e in self.chromium.events if e.get("sessionId") == self.session]

    def errors(self) -> list[str]:
        found = []
        for event in self._events():
            method, params = event["method"], event["params"]
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"{params['entry']['text']} ({params['entry'].get('url', '')})")
        return found

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self._events() if e["method"] == "Network.requestWillBeSent"]

    def close(self) -> None:
        self.chromium.send("Target.closeTarget", targetId=self.target)


@pytest.fixture
def tab(chromium, server):
    """A fresh tab; after the test, it must have logged no error and asked nothing of another origin."""
    page = Tab(chromium, server)
    yield page
    try:
        assert page.errors() == [], "errors in the browser console"
        elsewhere = [url for url in page.requests() if not url.startswith(server + "/") and not url.startswith("data:")]
        assert elsewhere == [], f"the page asked beyond its origin: {elsewhere}"
    finally:
        page.close()


# ---------------------------------------------------------------- the tests


def test_the_page_lists_the_runs_and_their_views(tab, server, runs):
    with urllib.request.urlopen(f"{server}/", timeout=WAIT) as response:  # the page runs under the strict policy
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    tab.open()
    described = api(server, "runs")["runs"]
    names = tab.js("[...document.querySelectorAll('#run-picker option')].map(o => o.textContent)")
    assert [name.split(" (")[0] for name in names] == [run["name"] for run in described]
    assert len(names) == len(runs)
    assert tab.query()["run"] == "0" and tab.query()["view"] == "sample"  # the state went into the URL
    assert tab.js("document.querySelectorAll('#sample-grid img').length") == 16  # the VAE's default grid
    tabs = tab.js("""[...document.querySelectorAll('.view-tab')].map(t =>
        [t.dataset.view, t.disabled, (t.querySelector('.reason') || {}).textContent || ''])""")
    vae_views = {view["name"]: view for view in described[VAE]["views"]}
    assert [name for name, _, _ in tabs] == list(vae_views)
    for name, disabled, reason in tabs:
        assert disabled == (not vae_views[name]["available"])
        assert reason == (vae_views[name]["reason"] or "")  # an unavailable view says why
    # The run view: a chart per numeric key of the history, and the metrics table.
    tab.click(".view-tab[data-view=run]")
    tab.idle()
    assert tab.js("document.querySelectorAll('#run-curves svg polyline').length") >= 3
    assert tab.js("document.querySelector('#run-metrics').textContent").count("fid") >= 1
    assert tab.query()["view"] == "run"
    # Another run from the picker: its tabs replace the VAE's, and the state follows in the URL.
    tab.js("const p = document.getElementById('run-picker'); p.value = '4'; p.dispatchEvent(new Event('change'))")
    tab.idle()
    assert tab.js("document.querySelector('.view-tab[data-view=text]').disabled") is False
    assert tab.js("document.querySelector('.view-tab[data-view=sample]').disabled") is True
    assert tab.query()["run"] == "4"


def test_clicking_a_sample_opens_its_nearest_training_images(tab):
    link = f"?run={GAN}&view=sample&seed=3&n=4"
    grid = "[...document.querySelectorAll('#sample-grid img')].map(img => img.src)"
    first = tab.open(link).js(grid)
    assert len(first) == 4 and tab.open(link).js(grid) == first  # a link shows the same images again
    tab.js("for (let i = 0; i < 3; i += 1) document.getElementById('sample-draw').click()")  # impatient clicks
    tab.idle()  # the first two were aborted: no error, one grid
    assert tab.js("document.querySelectorAll('#sample-grid img').length") == 4
    tab.click("#sample-grid .image-button")
    tab.idle()
    assert tab.query()["view"] == "nearest" and tab.query()["image"]
    assert tab.js("document.querySelectorAll('#nearest-row img').length") == 6  # the image and its 5 nearest
    assert "copy" in tab.js("document.getElementById('nearest-verdict').textContent")
    assert "threshold" in tab.js("document.getElementById('nearest-numbers').textContent")


def test_a_latent_slider_moves_the_image_to_the_decoded_latent(tab, server):
    tab.open(f"?run={GAN}&view=latent&seed=5")
    assert tab.js("document.querySelectorAll('.latent-slider').length") == 8
    assert tab.js("document.querySelectorAll('#latent-candidates img').length") == 8
    before = tab.js("document.getElementById('latent-image').src")
    tab.js("""for (const [index, value] of [[0, '2.5'], [2, '-1.5']]) {
        const slider = document.querySelectorAll('.latent-slider')[index];
        slider.value = value;
        slider.dispatchEvent(new Event('input', {bubbles: true}));
    }""")
    tab.idle()  # the slider's request is in flight from its input event on
    after = tab.js("document.getElementById('latent-image').src")
    assert after != before
    assert tab.query()["offsets"].startswith("2.5,0,-1.5")
    # The GAN's directions are its first latent coordinates (docs/serve.md): z(seed) from a generator seeded
    # with the seed, moved by the offsets, decoded by the model itself.
    model = genlab.load("zoo:gan-mnist5k").model
    z = model.sample_latent(1, torch.Generator().manual_seed(5))
    z[0, 0] += 2.5
    z[0, 2] -= 1.5
    expected = model.decode(z)[0, 0].numpy()
    assert np.abs(pixels(after) - expected).max() <= 1 / 255 + 1e-6
    # A fast drag: the page keeps one request in flight and draws the newest position, not every one.
    sent = len([url for url in tab.requests() if "/latent?" in url])
    tab.js("""const slider = document.querySelectorAll('.latent-slider')[1];
        for (let i = 1; i <= 20; i += 1) {
            slider.value = String(i / 10);
            slider.dispatchEvent(new Event('input', {bubbles: true}));
        }""")
    tab.idle()
    assert "offsets=2.5%2C2%2C-1.5" in tab.js("document.getElementById('latent-image').dataset.query")
    assert 1 <= len([url for url in tab.requests() if "/latent?" in url]) - sent <= 3
    # Two candidates: the path between them.
    tab.click("#latent-candidates .image-button[data-index='1']")
    tab.click("#latent-candidates .image-button[data-index='6']")
    tab.wait("document.querySelectorAll('#latent-path img').length === 9")
    assert tab.query()["a"] == "1" and tab.query()["b"] == "6"


def test_a_class_3_sample_of_the_conditional_ddpm_shows_threes(tab):
    from genlab.eval.features import extractor_for

    tab.open(f"?run={DDPM}&view=sample&seed=1&n=8&label=3")
    images = tab.js("[...document.querySelectorAll('#sample-grid img')].map(img => img.src)")
    assert len(images) == 8
    assert tab.js("document.getElementById('sample-label').value") == "3"
    batch = torch.tensor(np.stack([pixels(src) for src in images]), dtype=torch.float32)[:, None]  # (8, 1, 28, 28)
    predicted = extractor_for("mnist-5k", (1, 28, 28)).predict(batch)
    assert int((predicted == 3).sum()) >= 6, predicted.tolist()


def test_denoise_streams_every_step(tab, server):
    tab.open(f"?run={DDPM}&view=denoise&seed=2&label=7")
    tab.click("#denoise-run")
    tab.wait("document.getElementById('status').textContent.startsWith('denoised')")
    tab.idle()
    steps = next(o["default"] for o in api(server, "runs")["runs"][DDPM]["sampler_options"] if o["name"] == "steps")
    assert tab.js("document.getElementById('denoise-step').textContent") == f"step {steps} / {steps}"
    scrubber = tab.js("(s => [Number(s.min), Number(s.max), s.disabled])(document.getElementById('denoise-scrubber'))")
    assert scrubber[1] - scrubber[0] + 1 >= steps and scrubber[2] is False
    last = tab.js("document.getElementById('denoise-xt').src")
    tab.js(
        "const s = document.getElementById('denoise-scrubber'); s.value = s.min; s.dispatchEvent(new Event('input'))"
    )
    assert tab.js("document.getElementById('denoise-step').textContent") == f"step 1 / {steps}"
    assert tab.js("document.getElementById('denoise-xt').src") != last  # the first step is still noise


def test_a_completion_keeps_the_rows_kept(tab, server):
    tab.open(f"?run={PIXELCNN}&view=complete&n=2&seed=1")
    # A stroke drawn with the mouse goes onto the canvas, and into the URL.
    box = tab.js("(b => [b.left, b.top, b.width])(document.getElementById('complete-canvas').getBoundingClientRect())")
    for kind, x in (("mousePressed", 0.3), ("mouseMoved", 0.5), ("mouseMoved", 0.7), ("mouseReleased", 0.7)):
        tab.chromium.send(
            "Input.dispatchMouseEvent",
            tab.session,
            type=kind,
            x=box[0] + x * box[2],
            y=box[1] + 0.5 * box[2],
            button="left",
            buttons=0 if kind == "mouseReleased" else 1,
            clickCount=1,
        )
    drawn = tab.query().get("canvas", "")
    assert len(drawn) == 28 * 28 and drawn.count("f") >= 5
    # A test image instead, its top 14 rows kept.
    tab.js("document.getElementById('complete-test-index').value = '3'")
    tab.click("#complete-test")
    tab.idle()
    assert tab.query()["test"] == "3" and "canvas" not in tab.query()
    tab.click("#complete-run")
    tab.wait("document.getElementById('status').textContent.startsWith('completed')")
    tab.idle()
    rows = int(tab.query()["rows"])
    assert rows == 14
    kept = np.array([int(d, 16) / 15 for d in api(server, f"runs/{PIXELCNN}/test-image", index=3)["canvas"]]).reshape(
        28, 28
    )
    completions = tab.js("[...document.querySelectorAll('#complete-results img')].map(img => img.src)")
    assert len(completions) == 2
    for src in completions:
        image = pixels(src)
        assert np.abs(image[:rows] - kept[:rows]).max() <= 1 / 15 + 1e-6
        assert image[rows:].max() > 0  # the rest was drawn
    assert (
        np.abs(pixels(tab.js("document.getElementById('complete-kept').src"))[:rows] - kept[:rows]).max()
        <= 1 / 15 + 1e-6
    )


def test_text_tokens_appear_with_their_alternatives(tab):
    tab.open(f"?run={GPT}&view=text&prompt=The&max_new_tokens=12&seed=1")
    assert tab.js("document.getElementById('text-prompt').value") == "The"
    tab.click("#text-write")
    tab.wait("document.getElementById('status').textContent.startsWith('written')")
    tab.idle()
    tokens = tab.js(
        "[...document.querySelectorAll('#text-output .token')].map(t => [t.textContent, t.title, t.className])"
    )
    assert len(tokens) == 12
    for _, title, classes in tokens:
        alternatives = title.split("\n")[1:]
        assert len(alternatives) == 5 and all(line.endswith("%") and line.startswith('"') for line in alternatives)
        assert "shade-" in classes


def test_an_api_error_shows_in_the_status_line(chromium, server):
    tab = Tab(chromium, server)
    try:
        tab.open(f"?run={DDPM}&view=sample&n=2&steps=100000")  # more steps than the server allows
        text, kind = tab.status()
        assert kind == "error" and "steps" in text
        assert tab.js("document.querySelectorAll('#sample-grid img').length") == 0
        errors = tab.errors()
        assert errors and all("status of 400" in error for error in errors)  # the refused request, no exception
    finally:
        tab.close()
