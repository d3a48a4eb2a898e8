"""genlab serve's API over real HTTP: a uvicorn server in a thread, spoken to with urllib.

The runs are the tiny committed fixture runs (8x8 digits: fast), a zoo model where a trained conditional DDPM
is needed, and a tiny text run trained here. Each view's images are checked against what the library itself
draws for the same seed; bad input gets a 4xx with one line and the server keeps serving.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.cli import main
from genlab.data.text import load_text_splits
from genlab.images import to_uint8
from genlab.serve import app as serve_app
from genlab.serve.app import ServerThread, create_app
from genlab.serve.explorer import Explorer, ImageStore, Ticket, canvas_of, seeded_generator
from genlab.serve.workers import ProcessWorker, ThreadWorker

FIXTURES = Path(__file__).parents[1] / "fixtures" / "runs"
VAE, GAN, DDPM, PIXELCNN, REALNVP = (str(FIXTURES / name) for name in ("vae", "gan", "ddpm", "pixelcnn", "realnvp"))
CONDITIONAL_DDPM = "zoo:ddpm-mnist5k-cond"


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("serve-text")
    corpus = folder / "quotes.txt"
    train, _ = load_text_splits("fortunes")
    corpus.write_text("\n\n".join(d.replace("\n\n", "\n") for d in train.documents if len(d) < 300)[:20_000] + "\n")
    out = folder / "gpt"
    genlab.train("gpt", f"text:{corpus}", out, epochs=1, batch_size=16, seed=0, progress=False, sample_every=0,
                 model_config={"preset": "tiny", "context": 32})  # fmt: skip
    return str(out)


@pytest.fixture(scope="module")
def server(gpt_run):
    runs = [VAE, GAN, DDPM, PIXELCNN, REALNVP, gpt_run, CONDITIONAL_DDPM]
    # --workers auto: the long-running runs in processes of their own (the browser tests serve the default, threads)
    thread = ServerThread(create_app(runs, processes=None)).start()
    yield thread
    thread.stop()


def get(server, path: str, **params) -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body) of a GET; an HTTP error is returned, not raised."""
    url = server.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=120) as reply:
            return reply.status, reply.headers, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def api(server, path: str, **params) -> dict:
    status, _, body = get(server, path, **params)
    assert status == 200, body
    return json.loads(body)


def events(body: bytes) -> list[tuple[str, dict]]:
    """The server-sent events of a finished stream: (event, data) in order."""
    found = []
    for block in body.decode().split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def pixels(data_url: str) -> np.ndarray:
    """A PNG data URL's pixels (H, W) uint8."""
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def as_uint8(image: torch.Tensor) -> np.ndarray:
    """A (1, H, W) image in [0, 1] as the PNG holds it."""
    return to_uint8(image)[0].numpy()


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_runs_are_listed_with_their_views_and_the_reasons_for_the_missing_ones(server):
    runs = {run["name"].split("/")[-1]: run for run in api(server, "api/runs")["runs"]}
    views = {name: {v["name"]: v["available"] for v in run["views"]} for name, run in runs.items()}
    assert views["vae"] == {"sample": True, "latent": True, "denoise": False, "complete": False, "text": False,
                            "nearest": False, "run": True}  # fmt: skip: no extractor for 8x8 digits
    assert views["zoo:ddpm-mnist5k-cond"]["nearest"]
    assert views["ddpm"]["denoise"] and not views["ddpm"]["latent"]
    assert views["pixelcnn"]["complete"] and not views["pixelcnn"]["latent"]
    assert views["gpt"] == {"sample": False, "latent": False, "denoise": False, "complete": False, "text": True,
                            "nearest": False, "run": True}  # fmt: skip
    reasons = {v["name"]: v["reason"] for v in runs["gpt"]["views"]}
    assert "writes text" in reasons["sample"]
    assert runs["vae"]["latent"]["directions"] == 2  # the fixture VAE's latent has 2 dimensions
    assert runs["gan"]["latent"]["directions"] == 4
    assert [o["name"] for o in runs["ddpm"]["sampler_options"]] == ["sampler", "steps", "eta", "guidance"]
    assert runs["zoo:ddpm-mnist5k-cond"]["classes"][3] == "3"


@pytest.mark.parametrize("index, run", [(0, VAE), (2, DDPM), (3, PIXELCNN)])
def test_sample_gives_the_images_genlab_sample_draws_for_the_seed(server, index, run):
    found = api(server, f"api/runs/{index}/sample", n=4, seed=5)["images"]
    expected = genlab.load(run).sample(4, generator=generator(5))
    assert [pixels(image["png"]).tolist() for image in found] == [as_uint8(image).tolist() for image in expected]
    again = api(server, f"api/runs/{index}/sample", n=4, seed=5)["images"]
    assert [image["png"] for image in again] == [image["png"] for image in found]
    assert len({image["id"] for image in found + again}) == 8  # every image drawn gets its own id


def test_the_latent_view_decodes_the_seeds_latent_moved_along_each_direction(server):
    model = genlab.load(GAN).model
    z = model.sample_latent(1, generator(3))
    plain = pixels(api(server, "api/runs/1/latent", seed=3)["image"]["png"])
    assert plain.tolist() == as_uint8(model.decode(z)[0]).tolist()
    moved = pixels(api(server, "api/runs/1/latent", seed=3, offsets="0,1.5")["image"]["png"])
    shifted = z.clone()
    shifted[0, 1] += 1.5  # the GAN's directions are its coordinates
    assert moved.tolist() == as_uint8(model.decode(shifted)[0]).tolist()
    assert moved.tolist() != plain.tolist()


def test_the_vae_directions_are_the_principal_directions_of_its_training_latents(server):
    explorer = Explorer(0, genlab.load(VAE), ImageStore())
    directions = explorer.directions()  # (2, 2): scaled by each direction's std
    train, _ = explorer.splits()
    latents = explorer.model.latent_of(train.images.float() / 255)
    variances = latents.double().var(0).sum()
    assert torch.allclose(directions.double().pow(2).sum(), variances, rtol=1e-3)  # PCA keeps the total variance
    assert abs(float(directions[0] @ directions[1])) < 1e-4  # orthogonal
    assert directions[0].norm() >= directions[1].norm()


def test_an_interpolation_runs_from_one_candidate_to_the_other(server):
    found = api(server, "api/runs/1/interpolate", seed=2, n=6, a=1, b=4, steps=5)
    assert len(found["candidates"]) == 6 and len(found["path"]) == 5
    assert pixels(found["path"][0]["png"]).tolist() == pixels(found["candidates"][1]["png"]).tolist()
    assert pixels(found["path"][-1]["png"]).tolist() == pixels(found["candidates"][4]["png"]).tolist()


def test_denoise_streams_every_step_then_the_image_sample_draws(server):
    status, headers, body = get(server, "api/runs/2/denoise", seed=4, label=7, steps=5, sampler="ddim")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    found = events(body)
    assert [name for name, _ in found] == ["start"] + ["step"] * 5 + ["done"]
    assert [data["step"] for name, data in found if name == "step"] == [1, 2, 3, 4, 5]
    assert all(data["total"] == 5 for name, data in found if name == "step")
    last_step, done = found[-2][1], found[-1][1]
    expected = genlab.load(DDPM).sample(1, generator=generator(4), labels=7, steps=5, sampler="ddim")[0]
    assert pixels(done["image"]["png"]).tolist() == as_uint8(expected).tolist()
    assert pixels(last_step["x_t"]).tolist() == pixels(done["image"]["png"]).tolist()  # the last x_t is x_0


def test_a_completion_keeps_the_kept_rows_and_streams_each_drawn_row(server):
    test_image = api(server, "api/runs/3/test-image", index=11)
    status, _, body = get(server, "api/runs/3/complete", canvas=test_image["canvas"], rows=3, n=3, seed=1)
    assert status == 200, body
    found = events(body)
    assert [data["row"] for name, data in found if name == "row"] == [3, 4, 5, 6, 7]
    kept = pixels(found[0][1]["kept"])
    for image in found[-1][1]["images"]:
        drawn = pixels(image["png"])
        assert np.abs(drawn[:3].astype(int) - kept[:3].astype(int)).max() <= 1  # on the model's grid: within a level
    assert (kept[3:] == 0).all()


def test_text_streams_each_token_with_its_likeliest_alternatives(server):
    status, _, body = get(server, "api/runs/5/text", prompt="To be", max_new_tokens=12, temperature=0.8, seed=3)
    assert status == 200, body
    found = events(body)
    tokens = [data for name, data in found if name == "token"]
    assert len(tokens) == 12 and found[-1][0] == "done"
    assert found[-1][1]["text"].startswith("".join(token["text"] for token in tokens))  # a broken last byte held back
    for token in tokens:
        assert len(token["top"]) == 5 and 0 < token["probability"] <= 1
        probabilities = [alternative["probability"] for alternative in token["top"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    expected = genlab.load(server_run(server, 5)).generate("To be", max_new_tokens=12, temperature=0.8,
                                                           generator=generator(3))  # fmt: skip
    assert found[-1][1]["text"] == expected[0]


def server_run(server, index: int) -> str:
    return api(server, "api/runs")["runs"][index]["name"]


def test_nearest_shows_the_closest_training_images_against_the_held_out_floor(server):
    image = api(server, "api/runs/6/sample", n=1, seed=1, label=2, steps=5)["images"][0]
    found = api(server, "api/runs/6/nearest", image=image["id"])
    distances = [neighbour["distance"] for neighbour in found["neighbours"]]
    assert len(distances) == 5 and distances == sorted(distances) and distances[0] == found["distance"]
    assert 0 <= found["held_out_closer"] <= 1 and found["threshold"] > 0 and found["verdict"]


def test_a_training_image_is_called_a_copy_by_the_nearest_view():
    explorer = Explorer(0, genlab.load("zoo:vae-mnist5k"), ImageStore())
    train, _ = explorer.splits()
    copied = explorer.images.keep(0, train.images[17].float() / 255)
    found = explorer.nearest(copied)
    assert found["distance"] == pytest.approx(0, abs=1e-5) and "may be a copy" in found["verdict"]
    assert found["held_out_closer"] == 0


def test_a_canvas_round_trips_through_its_hex_digits():
    image = torch.rand(1, 8, 8)
    canvas = canvas_of(image)
    assert len(canvas) == 64 and set(canvas) <= set("0123456789abcdef")
    assert canvas_of(torch.ones(1, 2, 2)) == "ffff"


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("api/runs/99/sample", {}, 404, "no run '99'"),
        ("api/runs/x/sample", {}, 404, "no run 'x'"),
        ("api/runs/0/sample", {"n": 10**9}, 400, "n must be from 1 to 256"),
        ("api/runs/0/sample", {"seed": -1}, 400, "seed must be from 0"),
        ("api/runs/0/sample", {"n": "many"}, 400, "n must be an integer"),
        ("api/runs/2/sample", {"steps": -3}, 400, "steps must be from 1"),
        ("api/runs/2/sample", {"sampler": "magic"}, 400, "--sampler must be one of"),
        ("api/runs/0/sample", {"label": 3}, 400, "label needs a conditional run"),
        ("api/runs/0/denoise", {}, 404, "no denoise view"),
        ("api/runs/0/latent", {"offsets": "1,2,3"}, 400, "at most 2 values"),
        ("api/runs/0/latent", {"offsets": "1,nan"}, 400, "offsets"),
        ("api/runs/3/complete", {"canvas": "0" * 63}, 400, "canvas must be 64 hex digits"),
        ("api/runs/3/complete", {"canvas": "g" * 64}, 400, "hex digits"),
        ("api/runs/3/complete", {"canvas": "0" * 64, "rows": 8}, 400, "rows must be from 0 to 7"),
        ("api/runs/3/complete", {}, 400, "canvas=HEX"),
        ("api/runs/5/text", {"prompt": "x" * 2001}, 400, "at most 2,000"),
        ("api/runs/5/text", {"temperature": "inf"}, 400, "temperature must be from 0"),
        ("api/runs/6/nearest", {"image": "i999999"}, 400, "no image 'i999999'"),
        ("api/runs/0/nearest", {"image": "i1"}, 404, "no shipped extractor fits images of shape 1x8x8"),
        ("api/runs/0/teleport", {}, 404, "no view 'teleport'"),
        ("static/../run.py", {}, 404, "nothing at"),
        ("static/secrets.py", {}, 404, "no file"),
    ],
)
def test_bad_input_gets_a_4xx_with_one_line_and_the_server_keeps_serving(server, path, params, status, words):
    found, headers, body = get(server, path, **params)
    assert found == status, body
    message = json.loads(body)["error"]
    assert words in message and "\n" not in message and "Traceback" not in message
    assert "Content-Security-Policy" in headers
    assert get(server, "api/runs")[0] == 200


def test_a_post_with_malformed_json_gets_one_line_and_the_server_keeps_serving(server):
    request = urllib.request.Request(server.url + "api/runs/0/sample", data=b"{n: 10**9", method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405
    assert json.loads(refused.value.read())["error"] == "POST is not served here: the explorer's API takes GET only"
    assert get(server, "api/runs")[0] == 200


def test_every_response_carries_the_strict_content_security_policy(server):
    for path in ("", "static/app.js", "api/runs"):
        status, headers, _ = get(server, path)
        assert status == 200
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "https:" not in policy


def test_a_newer_request_of_the_same_view_stops_the_older_one(server):
    url = server.url + "api/runs/5/text?" + urllib.parse.urlencode({"max_new_tokens": 1000, "client": "tab1"})
    with urllib.request.urlopen(url, timeout=60) as older:
        first = older.readline()  # the stream has begun
        assert first.startswith(b"event: ")
        newer = api_text(server, client="tab1")
        assert newer[-1][0] == "done"
        rest = older.read()
    found = events(first + rest)
    assert found[-1][0] == "error" and "superseded" in found[-1][1]["error"]
    assert sum(name == "token" for name, _ in found) < 1000


def api_text(server, **params) -> list[tuple[str, dict]]:
    status, _, body = get(server, "api/runs/5/text", max_new_tokens=5, **params)
    assert status == 200
    return events(body)


def test_a_request_past_the_time_limit_is_stopped(server, monkeypatch):
    monkeypatch.setattr(serve_app, "REQUEST_SECONDS", 0.0)
    found = events(get(server, "api/runs/2/denoise", seed=1, label=1)[2])
    assert found[-1][0] == "error" and "stopped after" in found[-1][1]["error"]
    status, _, body = get(server, "api/runs/0/sample", n=2)
    assert status == 504 and "stopped after" in json.loads(body)["error"]


def test_a_long_chain_on_one_run_does_not_hold_up_a_slider_on_another(server):
    long_chain = {"seed": 1, "label": 3, "steps": 1000, "sampler": "ddim", "client": "busy"}
    chain = threading.Thread(target=get, args=(server, "api/runs/6/denoise"), kwargs=long_chain)
    chain.start()
    try:
        time.sleep(1.0)  # the chain is under way
        started = time.monotonic()
        api(server, "api/runs/1/latent", seed=1, offsets="0.5")
        waited = time.monotonic() - started
        assert chain.is_alive(), "the chain ended before the slider was asked: make it longer"
        assert waited < 5.0
    finally:
        get(server, "api/runs/6/denoise", seed=1, steps=1, client="busy")  # supersedes the long chain
        chain.join(timeout=60)


def test_serve_refuses_a_missing_run_and_a_busy_port_in_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nothing"), "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "genlab serve: error:" in error
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", VAE, "--port", str(port)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in error


def spawned_workers(pid: int) -> list[int]:
    """The multiprocessing workers (spawned interpreters) among process `pid`'s children, from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_genlab_serve_prints_its_address_serves_and_stops_cleanly_on_ctrl_c():
    # The default layout (--workers auto): the DDPM's work in a process of its own, which Ctrl-C ends too
    command = [sys.executable, "-X", "faulthandler", "-m", "genlab", "serve", VAE, DDPM, "--port", "0"]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A shell without job control starts background commands with SIGINT ignored, and Python keeps an ignored SIGINT
    # ignored (no KeyboardInterrupt): a `make test &` would pass that on to the server. The child starts with
    # Ctrl-C's default, as a terminal's foreground command does.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        line = process.stdout.readline()
        assert "http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split()[line.split().index("at") + 1]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as reply:
            assert [run["family"] for run in json.loads(reply.read())["runs"]] == ["vae", "ddpm"]
        workers = spawned_workers(process.pid)
        assert len(workers) == 1  # the DDPM's; the VAE keeps a thread
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=90)  # a loaded machine: the server, then its worker, must end
        except subprocess.TimeoutExpired:  # where it waits: faulthandler prints every thread's stack on SIGABRT
            process.send_signal(signal.SIGABRT)
            out, err = process.communicate(timeout=30)
            pytest.fail(f"genlab serve did not end within 90 s of Ctrl-C; its threads:\n{err[-8000:]}")
    finally:
        process.kill()
    assert process.returncode == 0 and "stopped" in out and "Traceback" not in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_the_tickets_remembered_for_cancelling_stay_bounded_whatever_client_ids_come(monkeypatch):
    from starlette.requests import Request

    monkeypatch.setattr(serve_app, "MAX_CLIENT_VIEWS", 3)
    state = serve_app.ExplorerApp([ThreadWorker(Explorer(0, genlab.load(VAE), ImageStore()))])
    worker = state.workers[0]

    def request(client: str) -> Request:
        return Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                        "query_string": f"client={client}".encode()})  # fmt: skip

    first = state.ticket(request("a"), worker, "latent")
    again = state.ticket(request("a"), worker, "latent")
    assert first.cancelled.is_set() and not again.cancelled.is_set()  # superseded
    for client in "bcdefg":
        state.ticket(request(client), worker, "latent")
    assert len(state._latest) == 3


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_the_long_running_runs_work_in_processes_of_their_own_at_a_lower_priority(server):
    workers = server.app.state.explorer.workers
    kinds = [type(worker).__name__ for worker in workers]
    # vae, gan, ddpm, pixelcnn, realnvp, gpt, conditional ddpm: chains, completions and text run long
    assert kinds == ["ThreadWorker", "ThreadWorker", "ProcessWorker", "ProcessWorker", "ThreadWorker",
                     "ProcessWorker", "ProcessWorker"]  # fmt: skip
    for worker in workers:
        if isinstance(worker, ProcessWorker):
            assert worker.process.is_alive() and worker.process.pid != os.getpid()
            assert niceness(worker.process.pid) == min(niceness(0) + 10, 19)  # the server's threads come first


def test_a_worker_process_that_dies_is_one_line_and_the_other_runs_keep_serving():
    thread = ServerThread(create_app([VAE, DDPM], processes=None)).start()
    try:
        process = thread.app.state.explorer.workers[1].process
        assert api(thread, "api/runs/1/sample", n=2, steps=2)["images"]
        process.kill()
        process.join(timeout=10)
        status, _, body = get(thread, "api/runs/1/sample", n=2, steps=2)
        assert status == 503 and "has stopped: restart genlab serve" in json.loads(body)["error"]
        found = events(get(thread, "api/runs/1/denoise", steps=2)[2])
        assert found == [("error", {"error": json.loads(body)["error"]})]
        assert len(api(thread, "api/runs/0/sample", n=2)["images"]) == 2
    finally:
        thread.stop()


def test_stopping_the_server_ends_its_worker_processes():
    thread = ServerThread(create_app([VAE, DDPM], processes=True)).start()
    processes = [worker.process for worker in thread.app.state.explorer.workers]
    # every run in a process: the quick VAE's at the server's priority, the DDPM's lower
    assert [niceness(process.pid) for process in processes] == [niceness(0), min(niceness(0) + 10, 19)]
    assert api(thread, "api/runs/0/latent", seed=1, offsets="0.5")["image"]["png"].startswith("data:image/png")
    thread.stop()
    assert not any(process.is_alive() for process in processes)


def test_a_request_superseded_while_queued_in_a_worker_process_is_answered_at_once_and_never_runs(server):
    long_chain = {"seed": 1, "label": 3, "steps": 1000, "sampler": "ddim", "client": "queue-chain"}
    chain = threading.Thread(target=get, args=(server, "api/runs/6/denoise"), kwargs=long_chain)
    chain.start()
    try:
        time.sleep(1.0)  # the chain (the zoo's conditional DDPM: seconds) holds its process
        answers: dict[str, tuple] = {}
        first = threading.Thread(
            target=lambda: answers.setdefault("first", get(server, "api/runs/6/sample", n=1, steps=2, label=1, client="q"))
        )
        first.start()
        time.sleep(0.5)  # queued behind the chain
        second = threading.Thread(
            target=lambda: answers.setdefault("second", get(server, "api/runs/6/sample", n=1, steps=2, label=1, client="q"))
        )
        second.start()
        first.join(timeout=30)
        status, _, body = answers["first"]
        assert status == 409 and "superseded" in json.loads(body)["error"]
        assert chain.is_alive()  # answered at once, not when the chain let the queue move
    finally:
        get(server, "api/runs/6/denoise", seed=1, steps=1, client="queue-chain")  # supersedes the long chain
        chain.join(timeout=60)
    second.join(timeout=60)
    assert answers["second"][0] == 200


def test_a_conditional_pixelcnn_draws_under_the_guidance_the_page_sets(tmp_path):
    settings = {"conditional": True, "channels": 8, "layers": 2, "kernel_size": 3, "head_channels": 8}
    run = genlab.train("pixelcnn", "digits", tmp_path / "px", epochs=1, seed=0, progress=False, sample_every=0,
                       model_config=settings)  # fmt: skip
    explorer = Explorer(0, run, ImageStore())
    assert [o["name"] for o in explorer.sampler_options()] == ["guidance"]
    guided = explorer.sample(3, 1, 2, {"guidance": 3.0}, Ticket(60))
    plain = explorer.sample(3, 1, 2, {}, Ticket(60))  # the run's default, 2
    with torch.no_grad():
        expected = run.model.sample(3, seeded_generator(1), labels=2, guidance=3.0)
    assert [pixels(image["png"]).tolist() for image in guided] == [as_uint8(one).tolist() for one in expected]
    assert [pixels(image["png"]).tolist() for image in plain] != [pixels(image["png"]).tolist() for image in guided]
