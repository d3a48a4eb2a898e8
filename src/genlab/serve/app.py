"""The explorer's HTTP side: a Starlette app over the views of `genlab.serve.explorer`, served by uvicorn.

Every run gets one worker (`genlab.serve.workers`: a thread, or a process of its own for a run whose views run
long), so a long DDPM chain queues behind nothing but its own run's work and never blocks a VAE's slider. Each
request holds a `Ticket`; a newer request of the same client, run and view cancels
the one before it (a slider dragged fast keeps only the newest), as does a client that goes away, and every
request stops at REQUEST_SECONDS. Every number from the client is bounded here before any model sees it, and the
client picks runs by index among those the server was started with: no path from the client reaches the disk.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from genlab.errors import GenlabError
from genlab.serve.explorer import Explorer, ImageStore, Stopped, Ticket, image_of_canvas
from genlab.serve.workers import ProcessWorker, ThreadWorker, WorkerGone, runs_long

REQUEST_SECONDS = 120.0  # a request still computing after this is stopped (504, or an `error` event)
MAX_IMAGES = 256  # n of the sample view
MAX_STEPS = 1000  # a sampler's steps
MAX_CANDIDATES = 16  # the latent view's candidates
MAX_PATH = 32  # images on an interpolation path
MAX_COMPLETIONS = 16
MAX_PROMPT = 2000  # characters
MAX_NEW_TOKENS = 1000
MAX_OFFSET = 10.0  # a slider's offset, in standard deviations
MAX_SEED = 2**63 - 1
MAX_CLIENT_VIEWS = 10_000  # (client, run, view) whose latest request is remembered, for cancelling it
STATIC_FILES = {"app.js": "text/javascript", "app.css": "text/css"}
# As strict as the report's, but the page is served: its own script and style, images as data: URLs, requests to
# its own origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(Exception):
    """A request the server refuses: its status and one line saying what is wrong."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Query:
    """A request's query parameters, read with bounds: each reader raises BadRequest with one line."""

    def __init__(self, request: Request):
        self.values = request.query_params

    def has(self, name: str) -> bool:
        return self.values.get(name, "") != ""

    def integer(self, name: str, default: int | None, minimum: int, maximum: int) -> int:
        return self._bounded(name, default, minimum, maximum, int, "an integer", "{:,}")

    def optional_integer(self, name: str, minimum: int, maximum: int) -> int | None:
        return self.integer(name, None, minimum, maximum) if self.has(name) else None

    def number(self, name: str, default: float | None, minimum: float, maximum: float) -> float:
        return self._bounded(name, default, minimum, maximum, float, "a number", "{:g}")

    def _bounded(self, name: str, default: Any, minimum: Any, maximum: Any, parse: Callable[[str], Any], kind: str,
                 style: str) -> Any:  # fmt: skip
        """The parameter parsed by `parse` (`default` when absent) within [minimum, maximum], shown in `style`."""
        bounds = f"from {style.format(minimum)} to {style.format(maximum)}"
        raw = self.values.get(name, "")
        if raw == "":
            if default is None:
                raise BadRequest(f"{name} is missing: give {kind} {bounds}")
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise BadRequest(f"{name} must be {kind}, got {raw[:40]!r}") from None
        if not math.isfinite(value) or not minimum <= value <= maximum:
            shown = style.format(value) if parse is int else raw[:40]  # a number as written: "inf", "1e400"
            raise BadRequest(f"{name} must be {bounds}, got {shown}")
        return value

    def text(self, name: str, default: str, longest: int) -> str:
        value = self.values.get(name, default)
        if len(value) > longest:
            raise BadRequest(f"{name} is {len(value):,} characters long; at most {longest:,} are read")
        return value

    def numbers(self, name: str, longest: int, bound: float) -> list[float]:
        raw = self.values.get(name, "")
        parts = [part for part in raw.split(",") if part.strip()] if raw else []
        if len(parts) > longest:
            raise BadRequest(f"{name}: at most {longest} comma-separated numbers, got {len(parts)}")
        try:
            values = [float(part) for part in parts]
        except ValueError:
            raise BadRequest(f"{name} must be comma-separated numbers, got {raw[:40]!r}") from None
        if any(not math.isfinite(value) or abs(value) > bound for value in values):
            raise BadRequest(f"{name}: each value must be from {-bound:g} to {bound:g}")
        return values


Worker = ThreadWorker | ProcessWorker


class ExplorerApp:
    """The runs, their workers and the tickets of the requests in flight."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers
        self._latest: OrderedDict[tuple[str, int, str], Ticket] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the runs' workers (their processes end, all asked at once)."""
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.close()

    def worker(self, request: Request) -> Worker:
        raw = request.path_params["run"]
        if not raw.isdigit() or int(raw) >= len(self.workers):
            raise BadRequest(f"no run {raw[:20]!r}: this server shows runs 0 to {len(self.workers) - 1}", 404)
        return self.workers[int(raw)]

    def ticket(self, request: Request, worker: Worker, view: str) -> Ticket:
        """A ticket for this request, cancelling the same client's earlier one for this run and view."""
        ticket = Ticket(REQUEST_SECONDS)
        client = request.query_params.get("client", "")[:64]
        if client:
            key = (client, worker.explorer.index, view)
            with self._lock:
                earlier = self._latest.pop(key, None)
                if earlier is not None:
                    earlier.cancel()
                self._latest[key] = ticket
                while len(self._latest) > MAX_CLIENT_VIEWS:  # the oldest forgotten: memory bounded whatever ids come
                    self._latest.popitem(last=False)
        return ticket

    def stream(self, worker: Worker, ticket: Ticket, method: str, *args: Any) -> StreamingResponse:
        """Server-sent events of the explorer's streamed `method`, each sent as the run's worker emits it; the
        client going away cancels the ticket, which stops the work at its next step."""

        async def events() -> AsyncIterator[str]:
            stream = worker.stream(ticket, method, *args)
            try:
                async for event, data in stream:
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            finally:
                ticket.cancel()  # the client left (or the job ended): stop at the next step, or never start
                await stream.aclose()  # the worker's own cleanup, now rather than when the generator is collected

        return StreamingResponse(events(), media_type="text/event-stream", headers=SECURITY_HEADERS)


def error_response(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def create_app(run_specs: list[str], processes: bool | None = False) -> Starlette:
    """The explorer's app over the runs named (run directories or zoo:NAME), each loaded now: a run that
    cannot be loaded is a GenlabError before the server starts. `processes`: every run's work on a thread
    (False, the default), every run's in a process of its own (True), or a process at a lower priority for the runs
    whose views run long (None, `--workers auto`).
    `close_app(app)` stops the workers."""
    from genlab.run import Run

    if not run_specs:
        raise GenlabError("genlab serve needs at least one run: genlab serve runs/vae zoo:NAME ...")
    store = ImageStore()
    explorers = [Explorer(index, Run.load(spec), store) for index, spec in enumerate(run_specs)]
    workers: list[Worker] = []
    try:
        for spec, explorer in zip(run_specs, explorers, strict=True):
            long = runs_long(explorer)
            in_a_process = processes if processes is not None else long
            workers.append(ProcessWorker(explorer, spec, background=long) if in_a_process else ThreadWorker(explorer))
    except BaseException:
        for worker in workers:
            worker.close()
        raise
    state = ExplorerApp(workers)

    def option_values(query: Query, explorer: Explorer) -> dict[str, Any]:
        """The family's sampler options present in the query, read as their declared types."""
        options: dict[str, Any] = {}
        for option in explorer.sampler_options():
            if not query.has(option["name"]):
                continue
            name = option["name"]
            if option["kind"] == "str":
                options[name] = query.text(name, "", 40)
            elif option["kind"] == "int":
                options[name] = query.integer(name, None, int(option["minimum"] or 0), MAX_STEPS)
            else:
                top = option["maximum"] if option["maximum"] is not None else 1e6
                options[name] = query.number(name, None, float(option["minimum"] or 0), float(top))
        return options

    def label_of(query: Query, explorer: Explorer) -> int | None:
        classes = explorer.classes()
        if not query.has("label"):
            return None
        if classes is None:
            raise BadRequest("label needs a conditional run; this one draws no class on demand")
        return query.integer("label", None, 0, len(classes) - 1)

    def requires(explorer: Explorer, view: str) -> None:
        reason = dict(explorer.views())[view]
        if reason is not None:
            raise BadRequest(f"no {view} view for {explorer.run.name}: {reason}", 404)

    async def index(request: Request) -> Response:
        page = resources.files("genlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return error_response(f"no file {name[:40]!r} here", 404)
        body = resources.files("genlab.serve").joinpath(f"static/{name}").read_bytes()
        return Response(body, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    async def runs(request: Request) -> Response:
        limits = {
            "n": MAX_IMAGES, "steps": MAX_STEPS, "candidates": MAX_CANDIDATES, "path": MAX_PATH,
            "completions": MAX_COMPLETIONS, "prompt": MAX_PROMPT, "max_new_tokens": MAX_NEW_TOKENS,
            "offset": MAX_OFFSET, "seconds": REQUEST_SECONDS,
        }  # fmt: skip
        described = [worker.explorer.describe() for worker in state.workers]
        return JSONResponse({"runs": described, "limits": limits}, headers=SECURITY_HEADERS)

    async def view(request: Request) -> Response:
        worker = state.worker(request)
        explorer, name, query = worker.explorer, request.path_params["view"], Query(request)
        handler = VIEWS.get(name)
        if handler is None:
            raise BadRequest(f"no view {name[:40]!r}; the views are {', '.join(VIEWS)}", 404)
        return await handler(worker, explorer, query, request)

    async def sample(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "sample")
        n = query.integer("n", 16, 1, MAX_IMAGES)
        seed = query.integer("seed", 0, 0, MAX_SEED)
        label, options = label_of(query, explorer), option_values(query, explorer)
        ticket = state.ticket(request, worker, "sample")
        started = time.perf_counter()
        images = await worker.call(ticket, "sample", n, seed, label, options)
        return JSONResponse({"images": images, "seconds": time.perf_counter() - started}, headers=SECURITY_HEADERS)

    async def latent(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "latent")
        seed = query.integer("seed", 0, 0, MAX_SEED)
        offsets = query.numbers("offsets", 64, MAX_OFFSET)
        label = label_of(query, explorer)
        ticket = state.ticket(request, worker, "latent")
        image = await worker.call(ticket, "latent", seed, offsets, label)
        return JSONResponse({"image": image}, headers=SECURITY_HEADERS)

    async def interpolate(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "latent")
        seed = query.integer("seed", 0, 0, MAX_SEED)
        n = query.integer("n", 8, 2, MAX_CANDIDATES)
        a, b = query.optional_integer("a", 0, n - 1), query.optional_integer("b", 0, n - 1)
        steps = query.integer("steps", 9, 2, MAX_PATH)
        label = label_of(query, explorer)
        ends = None if a is None or b is None else (a, b)
        ticket = state.ticket(request, worker, "interpolate")
        found = await worker.call(ticket, "interpolate", seed, n, ends, steps, label)
        return JSONResponse(found, headers=SECURITY_HEADERS)

    async def denoise(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "denoise")
        seed = query.integer("seed", 0, 0, MAX_SEED)
        label, options = label_of(query, explorer), option_values(query, explorer)
        explorer.run_options(options)  # a bad option is a 400, before the stream starts
        ticket = state.ticket(request, worker, "denoise")
        return state.stream(worker, ticket, "denoise", seed, label, options)

    async def complete(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "complete")
        shape = explorer.model.data.image_shape
        height = shape[1]
        rows = query.integer("rows", height // 2, 0, height - 1)
        n = query.integer("n", 4, 1, MAX_COMPLETIONS)
        seed = query.integer("seed", 0, 0, MAX_SEED)
        label = label_of(query, explorer)
        if query.has("canvas"):
            canvas = query.text("canvas", "", shape[0] * shape[1] * shape[2] + 1)
            image_of_canvas(canvas, shape)  # a canvas of the wrong size or with other characters is a 400 now
        elif query.has("test"):
            test = query.integer("test", None, 0, 10**9)
            found = await worker.call(Ticket(REQUEST_SECONDS), "test_image", test)
            canvas = found["canvas"]
            label = found["label"] if label is None and explorer.model.conditional else label
        else:
            raise BadRequest("complete needs the image to keep rows of: canvas=HEX (one digit a pixel) or test=K")
        ticket = state.ticket(request, worker, "complete")
        return state.stream(worker, ticket, "complete", canvas, rows, n, seed, label)

    async def test_image(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "complete")
        index = query.integer("index", None, 0, 10**9)
        found = await worker.call(Ticket(REQUEST_SECONDS), "test_image", index)
        return JSONResponse(found, headers=SECURITY_HEADERS)

    async def text(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "text")
        prompt = query.text("prompt", "", MAX_PROMPT)
        max_new_tokens = query.integer("max_new_tokens", 100, 1, MAX_NEW_TOKENS)
        temperature = query.number("temperature", 0.8, 0.0, 10.0)
        top_k = query.optional_integer("top_k", 1, 1 << 20)
        top_p = query.number("top_p", 1.0, 1e-6, 1.0) if query.has("top_p") else None
        seed = query.integer("seed", 0, 0, MAX_SEED)
        ticket = state.ticket(request, worker, "text")
        return state.stream(worker, ticket, "text", prompt, max_new_tokens, temperature, top_k, top_p, seed)

    async def nearest(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        requires(explorer, "nearest")
        image_id = query.text("image", "", 40)
        if not image_id:
            raise BadRequest("nearest needs image=ID, the id of an image this server drew")
        ticket = state.ticket(request, worker, "nearest")
        found = await worker.call(ticket, "nearest", image_id)
        return JSONResponse(found, headers=SECURITY_HEADERS)

    async def facts(worker: Worker, explorer: Explorer, query: Query, request: Request) -> Response:
        found = await worker.call(Ticket(REQUEST_SECONDS), "facts")
        return JSONResponse(found, headers=SECURITY_HEADERS)

    VIEWS = {
        "sample": sample, "latent": latent, "interpolate": interpolate, "denoise": denoise,
        "complete": complete, "test-image": test_image, "text": text, "nearest": nearest, "facts": facts,
    }  # fmt: skip

    async def refuse(request: Request, error: Exception) -> Response:
        if isinstance(error, BadRequest):
            return error_response(str(error), error.status)
        if isinstance(error, Stopped):
            return error_response(str(error), 504 if error.timed_out else 409)
        if isinstance(error, WorkerGone):
            return error_response(str(error), 503)
        if isinstance(error, GenlabError):
            return error_response(str(error), 400)
        return error_response("the server failed on this request (a bug: please report it)", 500)

    async def not_found(request: Request, error: Exception) -> Response:
        return error_response(f"nothing at {request.url.path[:80]}", 404)

    def get_only(endpoint: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """`endpoint` for GET and HEAD; any other method is refused in one line (405)."""

        async def checked(request: Request) -> Response:
            if request.method not in ("GET", "HEAD"):
                raise BadRequest(f"{request.method[:10]} is not served here: the explorer's API takes GET only", 405)
            return await endpoint(request)

        return checked

    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    app = Starlette(
        routes=[
            Route("/", get_only(index), methods=every_method),
            Route("/static/{name}", get_only(static), methods=every_method),
            Route("/api/runs", get_only(runs), methods=every_method),
            Route("/api/runs/{run}/{view}", get_only(view), methods=every_method),
        ],
        exception_handlers={
            BadRequest: refuse,
            Stopped: refuse,
            GenlabError: refuse,
            Exception: refuse,
            404: not_found,
            405: not_found,
        },  # fmt: skip
    )
    app.state.explorer = state
    return app


def close_app(app: Starlette) -> None:
    """Stop the workers of an app made by `create_app` (their processes end); the app serves no more views."""
    state = getattr(app.state, "explorer", None)
    if state is not None:
        state.close()


class ServerThread:
    """A uvicorn server for `app` in a background thread (the tests' and `genlab serve`'s way to run it);
    port 0 picks a free one, read back as `url` once started."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="genlab-serve", daemon=True)
        self.host = host

    def start(self, timeout: float = 30.0) -> ServerThread:
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise GenlabError(f"the explorer's server did not start on {self.host} (is the port in use?)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        sockets = [socket for server in self.server.servers for socket in server.sockets]
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> None:
        """Stop serving, then stop the app's workers."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        close_app(self.app)
