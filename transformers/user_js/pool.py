"""The processor's side of the JavaScript workers: starts the zygote, forks and replaces workers,
sends them chunks, and turns a worker's death or a memory-limit hit into per-event retries, so only
the guilty event fails.

Chunks are pipelined: the next one is on its way while the worker runs the current one, and the
processor decodes one answer while the worker computes the next. One socket round trip per chunk.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import json_codec
from transformers.user_js import wire
from transformers.user_js.results import BatchResult, EventResult
from transformers.user_js.sandbox import MEMORY, OK, memory_reason, timeout_reason

log = logging.getLogger("sluice.user_js.workers")

Key = tuple[str, str, str]  # (workspace id, version id, code hash)

DEPTH = 2  # requests in flight per worker: one running, one waiting in the socket
GRACE_S = 10.0  # beyond the worker's own time limits, before a silent worker is killed
READ_SIZE = 1 << 20
MAX_STDERR_LINE = 2000
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the `transformers` package
# Signals V8 dies of when it cannot get memory (it aborts through a trap instruction).
_OOM_SIGNALS = {signal.SIGTRAP, signal.SIGABRT, signal.SIGILL}


class WorkerStartError(RuntimeError):
    """The worker processes cannot be started at all (a broken installation, not a transformation)."""


@dataclass
class Chunk:
    """One call's worth of events, and what became of each."""

    events: list
    metadata: list
    results: list[EventResult | None] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    batch_error: str | None = None

    def __post_init__(self) -> None:
        self.results = [None] * len(self.events)

    def fail(self, indexes: list[int], reason: str) -> None:
        for i in indexes:
            self.results[i] = EventResult(index=i, outputs=[], error=reason)

    def result(self) -> BatchResult:
        results = [r if r is not None else EventResult(index=i, error="Transformation failed: no result")
                   for i, r in enumerate(self.results)]
        return BatchResult(results=results, logs=self.logs, batch_error=self.batch_error)


@dataclass
class _Job:
    op: str  # "compile" | "run"
    key: Key
    chunk: Chunk | None = None
    indexes: list[int] = field(default_factory=list)  # the chunk's events this request carries
    attempts: int = 0  # deaths so far (a compile is tried twice)
    frame_end: int = 0  # where its request ends in the bytes written to its worker

    @property
    def whole(self) -> bool:
        return self.chunk is not None and len(self.indexes) == len(self.chunk.events)


class _Worker:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.reader = wire.FrameReader()
        self.out = bytearray()
        self.sent = 0  # bytes written to this process so far
        self.queue: deque[_Job] = deque()
        self.inflight: deque[_Job] = deque()
        self.known: dict[Key, str | None] = {}  # contexts the worker holds: None, or their fixed error
        self.compiling: set[Key] = set()
        self.compilations = 0  # as the current process last reported
        self.deadline = 0.0
        self.mask = 0

    def reset(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.pid = self.sock = None
        self.reader = wire.FrameReader()
        self.out.clear()
        self.sent = 0
        self.known.clear()
        self.compiling.clear()
        self.compilations = 0
        self.mask = 0


class WorkerPool:
    def __init__(self, size: int, time_limit_ms: int, memory_limit_mb: int, max_contexts: int) -> None:
        self.time_limit_ms = time_limit_ms
        self.memory_limit_mb = memory_limit_mb
        self.max_contexts = max_contexts
        self.restarts = 0  # workers replaced after a death, a memory-limit hit or a hang
        self._unheard = 0  # workers in a row that died before a request of ours reached them
        self._workers = [_Worker(i) for i in range(size)]
        self._retired_compilations = 0
        self._selector = selectors.DefaultSelector()
        self._zygote: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._stderr_thread: threading.Thread | None = None
        self._next_id = 0
        self._budget = 4 * time_limit_ms / 1000 + GRACE_S  # a compile and a run, two evals each

    # -- public ----------------------------------------------------------------------------------

    @property
    def compilations(self) -> int:
        return self._retired_compilations + sum(w.compilations for w in self._workers)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def run(self, key: Key, code: str, chunks: list[Chunk]) -> None:
        """Transform every chunk; each one's results are filled in (one per event, always)."""
        code_bytes = code.encode("utf-8", "surrogatepass")
        first = int(key[2][:8], 16)
        for n, chunk in enumerate(chunks):
            if chunk.events:
                worker = self._workers[(first + n) % len(self._workers)]
                worker.queue.append(_Job("run", key, chunk, list(range(len(chunk.events)))))
        self._drive(code_bytes)

    def compile(self, key: Key, code: str) -> str | None:
        """Compile in the worker that will run `key`; the error, if any."""
        worker = self._workers[int(key[2][:8], 16) % len(self._workers)]
        if key in worker.known:
            return worker.known[key]
        probe = Chunk(events=[None], metadata=[None])
        worker.queue.append(_Job("compile", key, probe, [0]))
        self._drive(code.encode("utf-8", "surrogatepass"))
        if key in worker.known:
            return worker.known[key]
        result = probe.results[0]
        return result.error if result is not None else None

    def close(self) -> None:
        for worker in self._workers:
            self._end(worker, kill=True)
        self._selector.close()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._zygote is not None:
            try:
                self._zygote.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._zygote.kill()
                self._zygote.wait()
            self._zygote = None
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=10)

    # -- the I/O loop ----------------------------------------------------------------------------

    def _drive(self, code: bytes) -> None:
        try:
            self._loop(code)
        except BaseException:
            # Interrupted (no zygote, or the caller is being stopped): nothing of this call may be
            # left to answer the next one.
            for worker in self._workers:
                worker.queue.clear()
                if worker.inflight:
                    worker.inflight.clear()
                    self._end(worker, kill=True)
            raise

    def _loop(self, code: bytes) -> None:
        while True:
            busy = False
            for worker in self._workers:
                self._feed(worker, code)
                busy = busy or bool(worker.inflight) or bool(worker.queue)
                self._watch(worker)
            if not busy:
                return
            now = time.monotonic()
            waiting = [w.deadline for w in self._workers if w.inflight]
            timeout = max(min(waiting) - now, 0) if waiting else None
            for selected, mask in self._selector.select(timeout):
                worker = selected.data
                if worker.sock is None:
                    continue
                if mask & selectors.EVENT_WRITE and worker.out:
                    try:
                        with memoryview(worker.out) as pending:
                            sent = worker.sock.send(pending)
                    except OSError:
                        self._died(worker)
                        continue
                    del worker.out[:sent]
                    worker.sent += sent
                if mask & selectors.EVENT_READ:
                    try:
                        data = worker.sock.recv(READ_SIZE)
                    except OSError:
                        data = b""
                    if not data:
                        self._died(worker)
                        continue
                    for header, body in worker.reader.feed(data):
                        self._answered(worker, header, body)
                        if worker.sock is None:
                            break  # retired: what it had not answered is queued again
            now = time.monotonic()
            for worker in self._workers:
                if worker.inflight and now >= worker.deadline:
                    log.warning("transformation worker stopped answering; killing it",
                                extra={"pid": worker.pid, "seconds": self._budget})
                    self._died(worker, hung=True)

    def _feed(self, worker: _Worker, code: bytes) -> None:
        """Move queued requests into the worker's socket, up to DEPTH in flight."""
        while worker.queue and len(worker.inflight) < DEPTH:
            job = worker.queue[0]
            if job.op == "run" and job.key in worker.known and worker.known[job.key] is not None:
                worker.queue.popleft()
                self._fail(job, str(worker.known[job.key]))
                continue
            if worker.sock is None:
                self._start(worker)
            if job.op == "run" and job.key not in worker.known and job.key not in worker.compiling:
                # Compiled on its own, so a death while compiling is not blamed on an event.
                job = _Job("compile", job.key, attempts=job.attempts)
            else:
                worker.queue.popleft()
            payload = b""
            if job.op == "run":
                assert job.chunk is not None
                try:
                    payload = _payload(job.chunk, job.indexes)
                except (TypeError, ValueError) as e:
                    self._fail(job, f"events are not JSON-serializable: {e}")
                    continue
            else:
                worker.compiling.add(job.key)
            self._next_id += 1
            header = {"op": job.op, "id": self._next_id, "ws": job.key[0], "ver": job.key[1],
                      "hash": job.key[2], "code_len": len(code)}
            if not worker.inflight:
                worker.deadline = time.monotonic() + self._budget
            worker.inflight.append(job)
            wire.append_frame(worker.out, header, code, payload)
            job.frame_end = worker.sent + len(worker.out)

    def _watch(self, worker: _Worker) -> None:
        mask = 0
        if worker.sock is not None:
            if worker.inflight:
                mask |= selectors.EVENT_READ
            if worker.out:
                mask |= selectors.EVENT_WRITE
        if mask == worker.mask:
            return
        if worker.mask and worker.sock is not None:
            if mask:
                self._selector.modify(worker.sock, mask, worker)
            else:
                self._selector.unregister(worker.sock)
        elif mask:
            self._selector.register(worker.sock, mask, worker)
        worker.mask = mask

    # -- answers ---------------------------------------------------------------------------------

    def _answered(self, worker: _Worker, header: dict[str, Any], body: bytes) -> None:
        self._unheard = 0
        job = worker.inflight.popleft()
        worker.deadline = time.monotonic() + self._budget
        worker.compilations = int(header.get("compilations", worker.compilations))
        for evicted in header.get("evicted", ()):
            worker.known.pop(tuple(evicted), None)  # type: ignore[arg-type]
        status = header.get("status")
        if job.op == "compile":
            worker.compiling.discard(job.key)
            if status == OK:
                worker.known[job.key] = None
            elif header.get("fixed"):
                worker.known[job.key] = str(header.get("reason"))
            else:
                # Could not compile this time (time or memory limit in top-level code): the chunks
                # waiting for it fail with that reason; later chunks try again.
                reason = str(header.get("reason"))
                self._fail_waiting(worker, job.key, reason)
                if job.chunk is not None:
                    self._fail(job, reason)
        else:
            if not header.get("ready", True):
                worker.known.pop(job.key, None)
            self._settle(worker, job, status, header, body)
        if header.get("retire"):
            log.info("transformation worker replaced, to give back memory a transformation kept",
                     extra={"pid": worker.pid})
            self._requeue(worker)
            self._end(worker)

    def _settle(self, worker: _Worker, job: _Job, status: Any, header: dict[str, Any], body: bytes) -> None:
        chunk = job.chunk
        assert chunk is not None
        if status == MEMORY:
            self._retry_alone(worker, job, str(header.get("reason")))
            return
        if status != OK:
            self._fail(job, str(header.get("reason")))
            return
        try:
            answer = json_codec.loads(body)
            logs = [str(line) for line in answer.get("l", [])]
        except (ValueError, TypeError, AttributeError) as e:
            self._fail(job, f"transformation output could not be read: {e}")
            return
        chunk.logs.extend(logs)
        if "b" in answer:
            reason = str(answer["b"])
            if answer.get("m"):
                self._retry_alone(worker, job, memory_reason(self.memory_limit_mb, _first_line(reason)))
            else:
                self._fail(job, reason)
            return
        items = answer.get("r")
        if not isinstance(items, list) or len(items) != len(job.indexes):
            self._fail(job, "transformation output could not be read: one result per event expected")
            return
        alone: list[int] = []
        results = chunk.results
        for i, item in zip(job.indexes, items, strict=True):
            # The runtime's own JSON: outputs are objects it encoded one by one. Only its shape is
            # checked here (a transformation that replaced built-ins may bend the rest).
            try:
                outputs, error, memory = item.get("o", []), item.get("e"), item.get("m")
            except AttributeError:
                outputs, error, memory = [], "transformation output could not be read", None
            if type(outputs) is not list:
                outputs, error = [], "transformation output could not be read"
            if error is not None:
                if memory:
                    if len(job.indexes) > 1:
                        alone.append(i)
                        continue
                    error = memory_reason(self.memory_limit_mb, _first_line(str(error)))
                error = str(error)
            results[i] = EventResult(i, outputs, error)
        if alone:
            worker.queue.extendleft(reversed([_Job("run", job.key, chunk, [i]) for i in alone]))

    def _retry_alone(self, worker: _Worker, job: _Job, reason: str) -> None:
        if len(job.indexes) == 1:
            self._fail(job, reason)
            return
        assert job.chunk is not None
        singles = [_Job("run", job.key, job.chunk, [i]) for i in job.indexes]
        worker.queue.extendleft(reversed(singles))

    def _fail(self, job: _Job, reason: str) -> None:
        if job.chunk is None:
            return
        job.chunk.fail(job.indexes, reason)
        if job.whole:
            job.chunk.batch_error = reason

    def _fail_waiting(self, worker: _Worker, key: Key, reason: str) -> None:
        """Requests for `key` not yet sent fail with `reason` (its compile just failed)."""
        keep: deque[_Job] = deque()
        for job in worker.queue:
            if job.key == key and job.op == "run":
                self._fail(job, reason)
            else:
                keep.append(job)
        worker.queue = keep

    # -- deaths ----------------------------------------------------------------------------------

    def _died(self, worker: _Worker, hung: bool = False) -> None:
        if hung and worker.pid is not None:
            _kill(worker.pid)
        head = worker.inflight.popleft() if worker.inflight else None
        if head is not None and not hung and worker.sent < head.frame_end:
            # It died before this request had even arrived: not the request's doing.
            worker.inflight.appendleft(head)
            head = None
        self._requeue(worker)
        status = self._end(worker)
        self.restarts += 1
        if head is None:
            self._unheard += 1
            if self._unheard >= 3:
                raise WorkerStartError("transformation workers die before they can take a request; "
                                       "see their log lines")
            return
        reason = (timeout_reason(self.time_limit_ms) if hung
                  else _death_reason(status, self.memory_limit_mb))
        log.warning("transformation worker died", extra={"pid_status": status, "reason": reason[:200],
                                                         "events": len(head.indexes), "op": head.op})
        if head.op == "compile":
            worker.compiling.discard(head.key)
            if hung or head.attempts >= 1:
                self._fail_waiting(worker, head.key, reason)
                self._fail(head, reason)
            else:
                head.attempts += 1
                worker.queue.appendleft(head)
            return
        if hung:
            self._fail(head, reason)
        elif len(head.indexes) == 1 and not _out_of_memory(status) and head.attempts == 0:
            # Killed from outside, perhaps while it waited for this request: once more.
            head.attempts += 1
            worker.queue.appendleft(head)
        else:
            self._retry_alone(worker, head, reason)

    def _requeue(self, worker: _Worker) -> None:
        """What the worker had not answered goes back to the front of its queue, in order. (The
        compiles a run needs are sent again with it.)"""
        jobs = [j for j in worker.inflight if j.op == "run" or j.chunk is not None]
        worker.inflight.clear()
        worker.queue.extendleft(reversed(jobs))

    def _end(self, worker: _Worker, kill: bool = False) -> int | None:
        """Forget the worker's process; its wait status, when the zygote could tell."""
        pid = worker.pid
        if worker.sock is not None and worker.mask:
            self._selector.unregister(worker.sock)
        self._retired_compilations += worker.compilations
        worker.reset()
        if pid is None:
            return None
        if kill:
            _kill(pid)
        return self._reap(pid)

    # -- processes -------------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        for attempt in range(2):
            ctl = self._zygote_ctl()
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                socket.send_fds(ctl, [wire.FORK], [theirs.fileno()])
                reply = ctl.recv(wire.PID.size)
            except OSError:
                reply = b""
            finally:
                theirs.close()
            if len(reply) == wire.PID.size:
                ours.setblocking(False)
                worker.pid, worker.sock = wire.PID.unpack(reply)[0], ours
                return
            ours.close()
            self._zygote_gone()
            if attempt:
                raise WorkerStartError("the transformation worker zygote exited; see its log lines")

    def _zygote_ctl(self) -> socket.socket:
        if self._ctl is not None:
            return self._ctl
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-m", "transformers.user_js.worker", str(theirs.fileno()),
                 str(self.time_limit_ms), str(self.memory_limit_mb), str(self.max_contexts)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=env,
            )
        except OSError as e:
            ours.close()
            raise WorkerStartError(f"cannot start the transformation workers: {e}") from e
        finally:
            theirs.close()
        # Starting V8 takes a moment; a zygote that cannot start closes the socket instead.
        ours.settimeout(60)
        self._ctl = ours
        self._stderr_thread = threading.Thread(target=_relay, args=(self._zygote.stderr,),
                                               name="user-js-stderr", daemon=True)
        self._stderr_thread.start()
        return ours

    def _zygote_gone(self) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote.wait()
            self._zygote = None

    def _reap(self, pid: int) -> int | None:
        if self._ctl is None:
            return None
        try:
            self._ctl.sendall(wire.REAP + wire.PID.pack(pid))
            reply = self._ctl.recv(wire.PID.size)
        except OSError:
            reply = b""
        if len(reply) != wire.PID.size:
            self._zygote_gone()
            return None
        status = wire.PID.unpack(reply)[0]
        return None if status < 0 else status


def _payload(chunk: Chunk, indexes: list[int]) -> bytes:
    if len(indexes) == len(chunk.events):
        events, metadata = chunk.events, chunk.metadata
    else:
        events, metadata = [chunk.events[i] for i in indexes], [chunk.metadata[i] for i in indexes]
    # Encoded in parts: metadata nearly always holds a null, which makes the encoder look for NaN in
    # what it encoded; the events then need no such look.
    return b'{"events":' + _json(events) + b',"metadata":' + _json(metadata) + b"}"


def _json(value: Any) -> bytes:
    out = json_codec.dumps_bytes(value)
    if out is None:
        out = json_codec.dumps_strict(value).encode("utf-8", "surrogatepass")
    return out


def _out_of_memory(status: int | None) -> bool:
    return status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) in _OOM_SIGNALS


def _death_reason(status: int | None, memory_limit_mb: int) -> str:
    if _out_of_memory(status):
        return memory_reason(memory_limit_mb)
    if status is not None and os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"Transformation worker died ({signal.Signals(sig).name}) while running this event"
    if status is not None and os.WIFEXITED(status):
        return f"Transformation worker exited with status {os.WEXITSTATUS(status)} while running this event"
    return "Transformation worker died while running this event"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _relay(stream: Any) -> None:
    """The workers' stderr (V8's fatal messages, Python tracebacks) into our structured log."""
    try:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            # V8's fatal messages come with a C stack trace of a few dozen lines: keep the message.
            if line.strip("# ") and not (line[:1].isspace() and "[0x" in line) and not line.startswith("===="):
                log.warning("transformation worker: %s", line[:MAX_STDERR_LINE])
    except (OSError, ValueError):
        pass
    finally:
        stream.close()
