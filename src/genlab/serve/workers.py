"""Where a run's model work happens: a worker thread in the server's process, or a worker process of its own.

A run whose views run long (a diffusion chain, a PixelCNN completion, generated text: `runs_long`) gets a
process, at a lower CPU priority on half the cores, so that its chain shares neither the interpreter lock nor the
first call on the cores with the event loop and the quick runs' sliders. A quick run (VAE, GANs, RealNVP) keeps
a thread: no copy of the model, no pipe between a slider and its image. Both take the same calls: an explorer
method's name and its arguments (plain values: numbers, strings, lists, dicts), `call` for one answer, `stream`
for events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from typing import Any

from genlab.errors import GenlabError
from genlab.models.base import CanComplete, GeneratesText, ShowsSamplingChain
from genlab.serve.explorer import SUPERSEDED, Emit, Explorer, ImageStore, Stopped, Ticket

STREAMED = ("denoise", "complete", "text")  # explorer methods that take (..., emit, ticket)
TICKETED = ("sample",)  # explorer methods that take (..., ticket) and answer once
BACKGROUND_NICENESS = 10  # a long run's process: the server's threads first, the chain still moving
START_SECONDS = 120.0  # a worker process that has not loaded its run by then is a failure
FAILED = "the server failed on this request (a bug: please report it)"

Event = tuple[str, dict[str, Any]]


def settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WorkerGone(GenlabError):
    """A run's worker process has stopped (killed, or out of memory): its views answer no more."""


def runs_long(explorer: Explorer) -> bool:
    """Whether a run's views can compute for seconds at a time (a sampling chain, a completion, text)."""
    return isinstance(explorer.model, (ShowsSamplingChain, CanComplete, GeneratesText))


def perform(explorer: Explorer, method: str, args: list[Any], ticket: Ticket, emit: Emit | None = None) -> Any:
    """Call `explorer.method(*args)`, handing it `emit` and `ticket` where it takes them."""
    function = getattr(explorer, method)
    if method in STREAMED:
        assert emit is not None
        return function(*args, emit, ticket)
    if method in TICKETED:
        return function(*args, ticket)
    return function(*args)


def failure_of(error: Exception, explorer: Explorer, method: str) -> tuple[str, str, bool]:
    """Why a view gave no answer, in plain values that cross a pipe: (kind, one line, timed out), kind "stopped",
    "refused" or "bug". A bug is told in full on the server's log; the client gets one line."""
    if isinstance(error, Stopped):
        return "stopped", str(error), error.timed_out
    if isinstance(error, GenlabError):
        return "refused", str(error), False
    logging.getLogger("genlab.serve").error("the %s view of %s failed", method, explorer.run.name, exc_info=error)
    return "bug", FAILED, False


def error_of(kind: str, text: str, timed_out: bool) -> Exception:
    """The exception a `failure_of` (or a gone process, kind "gone") stands for, on the server's side."""
    if kind == "stopped":
        return Stopped(text, timed_out)
    if kind == "refused":
        return GenlabError(text)
    if kind == "gone":
        return WorkerGone(text)
    return RuntimeError(text)


def perform_stream(explorer: Explorer, method: str, args: list[Any], ticket: Ticket, emit: Emit) -> None:
    """A streamed view whose every ending is an event: a stop, a refusal or a bug becomes an `error` event."""
    try:
        ticket.check()  # superseded while queued: never started
        perform(explorer, method, args, ticket, emit)
    except Exception as error:
        kind, text, _ = failure_of(error, explorer, method)
        emit("error", {"error": text, "stopped": True} if kind == "stopped" else {"error": text})


class ThreadWorker:
    """A run's work on one thread of the server's process."""

    def __init__(self, explorer: Explorer):
        self.explorer = explorer
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"genlab-run-{explorer.index}")

    async def call(self, ticket: Ticket, method: str, *args: Any) -> Any:
        def guarded() -> Any:
            ticket.check()  # superseded while queued: never started
            return perform(self.explorer, method, list(args), ticket)

        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self.pool, guarded)
        superseded: asyncio.Future[None] = loop.create_future()
        ticket.on_cancel(lambda: loop.call_soon_threadsafe(settle, superseded))
        await asyncio.wait({work, superseded}, return_when=asyncio.FIRST_COMPLETED)
        if work.done():
            return work.result()
        work.cancel()  # still queued: never starts (a running one stops at its next check)
        raise Stopped(SUPERSEDED, timed_out=False)  # answered now, not when the run's queue reaches it

    async def stream(self, ticket: Ticket, method: str, *args: Any) -> AsyncGenerator[Event, None]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event | None] = asyncio.Queue()

        def guarded() -> None:
            def emit(event: str, data: dict[str, Any]) -> None:
                loop.call_soon_threadsafe(events.put_nowait, (event, data))

            try:
                perform_stream(self.explorer, method, list(args), ticket, emit)
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        future = loop.run_in_executor(self.pool, guarded)
        try:
            while (item := await events.get()) is not None:
                yield item
        finally:  # the caller cancels the ticket, which stops a running job at its next step
            future.cancel()  # still queued behind other work of this run: never start

    def stop(self) -> None:
        """Nothing to ask: `close` ends the thread's queue."""

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProcessWorker:
    """A run's work in a process of its own, which loads the run itself and runs one request at a time.

    Messages over the pipe, to the process: ("call", id, method, args, seconds left, streamed), ("cancel", id),
    ("stop",);
    from it: ("ready",) or ("failed", message) once, then ("event", id, name, data), ("done", id, answer) and
    ("error", id, kind, message, timed out) with kind "stopped", "refused" or "bug".
    """

    def __init__(self, explorer: Explorer, spec: str, background: bool):
        """`background`: the process runs at a lower priority on half the cores (a run whose views run long)."""
        self.explorer = explorer  # the server's own copy: what the page is told, and the checks of a request
        context = multiprocessing.get_context("spawn")  # never fork a process whose torch has threads running
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=serve_in_process, args=(spec, explorer.index, child_end, background),
            name=f"genlab-run-{explorer.index}", daemon=True,
        )  # fmt: skip
        self.process.start()
        child_end.close()
        self._ids = count(1)
        self._waiting: dict[int, tuple[asyncio.AbstractEventLoop, Callable[[tuple[Any, ...]], None]]] = {}
        self._lock = threading.Lock()  # the pipe's sending end and `_waiting`, shared by the loop and tickets
        self._gone: str | None = None
        self._await_ready()
        self.reader = threading.Thread(target=self._read, name=f"genlab-run-{explorer.index}-reader", daemon=True)
        self.reader.start()

    def _await_ready(self) -> None:
        if not self.connection.poll(START_SECONDS):
            self.process.kill()
            raise GenlabError(f"the worker process for {self.explorer.run.name} did not start in {START_SECONDS:g} s")
        try:
            message = self.connection.recv()
        except EOFError:
            raise GenlabError(f"the worker process for {self.explorer.run.name} stopped while starting") from None
        if message[0] != "ready":
            raise GenlabError(f"the worker process for {self.explorer.run.name} failed: {message[1]}")

    def _send(self, message: tuple[Any, ...]) -> bool:
        with self._lock:
            if self._gone is not None:
                return False
            try:
                self.connection.send(message)
            except (OSError, ValueError):  # the process is gone: the reader says so to everyone waiting
                return False
            return True

    def _read(self) -> None:
        """Hand each message from the process to the request it answers, on that request's event loop."""
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                waiting = self._waiting.get(message[1])
            if waiting is not None:
                loop, deliver = waiting
                with contextlib.suppress(RuntimeError):  # the server's loop has already closed: nobody waits
                    loop.call_soon_threadsafe(deliver, message)
        with self._lock:
            self._gone = f"the worker process for {self.explorer.run.name} has stopped: restart genlab serve"
            everyone = list(self._waiting.items())
        for request_id, (loop, deliver) in everyone:
            with contextlib.suppress(RuntimeError):  # the server's loop has already closed: nobody waits
                loop.call_soon_threadsafe(deliver, ("error", request_id, "gone", self._gone, False))

    def _start(self, ticket: Ticket, method: str, args: tuple[Any, ...], streamed: bool,
               deliver: Callable[[tuple[Any, ...]], None]) -> int:  # fmt: skip
        request_id = next(self._ids)
        with self._lock:
            if self._gone is not None:
                raise WorkerGone(self._gone)
            self._waiting[request_id] = (asyncio.get_running_loop(), deliver)
        seconds_left = max(ticket.deadline - time.monotonic(), 0.0)
        self._send(("call", request_id, method, list(args), seconds_left, streamed))
        ticket.on_cancel(lambda: self._send(("cancel", request_id)))  # after the call: a cancel before it is lost
        return request_id

    def _forget(self, request_id: int) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    async def call(self, ticket: Ticket, method: str, *args: Any) -> Any:
        answer: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()

        def deliver(message: tuple[Any, ...]) -> None:
            if not answer.done():
                answer.set_result(message)

        request_id = self._start(ticket, method, args, False, deliver)
        loop = asyncio.get_running_loop()  # superseded: answered now, not when the process's queue reaches it
        stopped = ("error", request_id, "stopped", SUPERSEDED, False)
        ticket.on_cancel(lambda: loop.call_soon_threadsafe(deliver, stopped))
        try:
            message = await answer
        finally:
            self._forget(request_id)
        if message[0] == "done":
            return message[2]
        raise error_of(*message[2:])

    async def stream(self, ticket: Ticket, method: str, *args: Any) -> AsyncGenerator[Event, None]:
        events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        try:
            request_id = self._start(ticket, method, args, True, events.put_nowait)
        except WorkerGone as gone:  # the stream's headers are sent already: said as its one event
            yield "error", {"error": str(gone)}
            return
        try:
            while (message := await events.get())[0] == "event":
                yield message[2], message[3]
            if message[0] == "error":  # the process went away mid-stream
                yield "error", {"error": message[3]}
        finally:  # the caller cancels the ticket, which tells the process
            self._forget(request_id)

    def stop(self) -> None:
        """Ask the process to end (its running request is cancelled); `close` waits for it."""
        self._send(("stop",))  # not a close of our end: our reader blocked on it would keep it open
        with self._lock:
            self._gone = self._gone or "the server is stopping"

    def close(self) -> None:
        """Stop the process and wait for it to end (killed if it has not in 3 s)."""
        self.stop()
        self.process.join(timeout=3)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=3)
        self.connection.close()


def run_in_background() -> None:
    """This process at a lower CPU priority (BACKGROUND_NICENESS more) on half the cores: the server's threads win
    a core from its chain, and the chain still moves on a machine busy with other work (beside a training job, it
    runs at about a tenth of its speed)."""
    import torch

    # Idle scheduling (SCHED_IDLE) starved it instead: beside two busy processes on 2 cores, loading a PixelCNN took
    # over 120 s and its completions timed out. Half the cores: a chain on all of them (spinning at OpenMP's
    # barriers) held up the server's decode more (benchmarks/README.md, the explorer's slider).
    with contextlib.suppress(OSError):
        os.nice(BACKGROUND_NICENESS)
    torch.set_num_threads(max(1, torch.get_num_threads() // 2))


def serve_in_process(spec: str, index: int, connection: Any, background: bool) -> None:
    """A worker process's life: load the run, say ready, then run its requests one at a time until the pipe
    closes. One thread reads the pipe (so a cancel reaches a running request); the main thread computes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it closes the pipe
    from genlab.run import Run

    try:
        explorer = Explorer(index, Run.load(spec), ImageStore())
    except Exception as error:  # said to the server, which refuses to start with it
        connection.send(("failed", str(error).splitlines()[0] if str(error) else type(error).__name__))
        return
    if background:  # after loading, which then takes its share of a busy machine
        run_in_background()
    connection.send(("ready",))
    sending = threading.Lock()
    tickets: dict[int, Ticket] = {}
    jobs: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def send(message: tuple[Any, ...]) -> None:
        with sending:
            try:
                connection.send(message)
            except (OSError, ValueError):  # the server went away: the reader sees the pipe close and ends the loop
                pass

    def read() -> None:
        while True:
            try:
                message = connection.recv()
            except (EOFError, OSError):
                break
            if message[0] == "call":
                tickets[message[1]] = Ticket(message[4])
                jobs.put(message)
            elif message[0] == "cancel" and message[1] in tickets:
                tickets[message[1]].cancel()
            elif message[0] == "stop":
                break
        for ticket in list(tickets.values()):  # the request running stops at its next step
            ticket.cancel()
        jobs.put(None)

    threading.Thread(target=read, name="genlab-worker-reader", daemon=True).start()
    while (job := jobs.get()) is not None:
        _, request_id, method, args, _, streamed = job
        ticket = tickets[request_id]
        if streamed:
            emit = functools.partial(send_event, send, request_id)
            perform_stream(explorer, method, args, ticket, emit)
            send(("done", request_id, None))
        else:
            send(answer_of(explorer, request_id, method, args, ticket))
        tickets.pop(request_id, None)
    # Done: end now, without the interpreter's teardown of torch and its modules, which at the lowered priority
    # beside busy cores took over 3 s (the server then killed the process; Ctrl-C took 7.5 s with two long runs).
    # Nothing is left to flush but the standard streams.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def send_event(send: Callable[[tuple[Any, ...]], None], request_id: int, event: str, data: dict[str, Any]) -> None:
    send(("event", request_id, event, data))


def answer_of(explorer: Explorer, request_id: int, method: str, args: list[Any], ticket: Ticket) -> tuple[Any, ...]:
    """The message answering one call: its answer, or why there is none."""
    try:
        ticket.check()  # superseded while queued: never started
        return ("done", request_id, perform(explorer, method, args, ticket))
    except Exception as error:
        return ("error", request_id, *failure_of(error, explorer, method))
