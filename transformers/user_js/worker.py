"""The process side of user transformations: a zygote that forks workers, and the worker loop that
runs chunks in V8 under an operating-system memory limit.

`python -m transformers.user_js.worker CTL_FD TIME_MS MEMORY_MB MAX_CONTEXTS` starts the zygote. It
initialises V8 once, then forks a worker for every socket the processor sends it (a fork costs a few
milliseconds where a fresh interpreter and V8 cost a few hundred), and reaps them on request.

The memory limit is RLIMIT_DATA, which Linux (4.7 and later) applies to every private writable
mapping: V8's heap pages, ArrayBuffer and WebAssembly backing stores (committed inside V8's sandbox
reservation, which is not writable until used) and malloc alike. RLIMIT_AS cannot work: V8 reserves
more than a terabyte of address space up front. While V8 runs a request, the worker's soft limit is
what it used when the request began plus the transformation's limit (and a little headroom), so one
call can add at most that much, whatever route the JavaScript takes. A refused allocation is a
RangeError in JavaScript or, for V8's own heap, the death of the worker; the processor then retries
the chunk event by event.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
import traceback
from collections import OrderedDict
from typing import Any

from transformers.user_js import wire
from transformers.user_js.sandbox import MEMORY, MEMORY_MARK, OK, Outcome, Sandbox

_MB = 1024 * 1024
# What a call may use beyond the transformation's own limit: the worker's bookkeeping and the copies
# of the answer on its way out of V8, which the same process limit covers.
HEADROOM = 16 * _MB

Key = tuple[str, str, str]  # (workspace id, version id, code hash)


class _DataSize:
    """This process's private writable memory (statm's data field), what RLIMIT_DATA counts."""

    def __init__(self) -> None:
        # Opened in the worker itself: /proc/self is resolved at open time.
        self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __call__(self) -> int:
        return int(os.pread(self._fd, 256, 0).split()[5]) * self._page


class Worker:
    def __init__(self, sock: socket.socket, time_limit_ms: int, memory_limit_mb: int, max_contexts: int):
        self.sock = sock
        self.time_limit_ms = time_limit_ms
        self.memory_limit_mb = memory_limit_mb
        self.limit_bytes = memory_limit_mb * _MB
        self.max_contexts = max_contexts
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self._loop_exception)
        self.contexts: OrderedDict[Key, Sandbox] = OrderedDict()
        self.by_version: dict[tuple[str, str], Key] = {}
        self.costs: dict[Key, int] = {}  # what creating each live context added to the data size
        self.compilations = 0
        self.data_size = _DataSize()
        self._warm_up()
        self.floor = self.data_size()
        self.soft_limit = resource.RLIM_INFINITY
        self._task: asyncio.Task | None = None
        self._memory_error = False

    def _warm_up(self) -> None:
        # V8 makes its process-wide reservations (the code range, among others) with the first
        # isolate; made under a transformation's limit they would fail, so make them before any.
        from py_mini_racer import mini_racer

        async def warm_up() -> None:
            # Made on the loop: mini-racer's constructor makes a blocking call it must not wait for.
            with mini_racer(event_loop=self.loop) as racer:
                await racer.eval_cancelable("0")

        self.loop.run_until_complete(warm_up())

    # -- the loop --------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            request = wire.read_frame(self.sock)
            if request is None:
                return
            header, body = request
            self._memory_error = False
            self._task = self.loop.create_task(self._handle(header, body))
            try:
                reply, out = self.loop.run_until_complete(self._task)
            finally:
                self._task = None
            wire.send_frame(self.sock, reply, out)
            if reply.get("retire"):
                return

    def _limit_memory(self) -> None:
        # Only the soft limit moves: the hard one stays as it was, so it can be raised again after.
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        self.soft_limit = self.data_size() + self.limit_bytes + HEADROOM
        if hard != resource.RLIM_INFINITY:
            self.soft_limit = min(self.soft_limit, hard)  # an operator's own limit still wins
        resource.setrlimit(resource.RLIMIT_DATA, (self.soft_limit, hard))

    def _unlimit_memory(self) -> None:
        # Between calls no JavaScript runs (no timers, no finalizers, no async WebAssembly), and the
        # worker's own reading and writing should not trip over what a call left behind.
        _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))

    def _at_limit(self) -> bool:
        return self.data_size() > self.soft_limit - HEADROOM // 2

    def _loop_exception(self, context: dict[str, Any]) -> None:
        # mini-racer hands V8's answers to the loop as callbacks; one that cannot allocate its result
        # would leave the call waiting for its timeout, so end the call as out of memory instead.
        if isinstance(context.get("exception"), MemoryError):
            self._memory_error = True
            if self._task is not None:
                self._task.cancel()
            return
        self.loop.default_exception_handler(context)

    # -- requests --------------------------------------------------------------------------------

    async def _handle(self, header: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        op = header["op"]
        key: Key = (header["ws"], header["ver"], header["hash"])
        code_len = header["code_len"]
        code = body[:code_len].decode("utf-8", "surrogatepass")
        evicted: list[Key] = []
        sandbox = self.contexts.get(key)
        if sandbox is None:
            sandbox = self._add(key, code, evicted)
        else:
            self.contexts.move_to_end(key)
        reply: dict[str, Any] = {"id": header["id"]}
        if evicted:
            reply["evicted"] = evicted
        out = b""
        before = self.data_size()
        compiled_before = sandbox.compilations
        payload = body[code_len:]
        self._limit_memory()
        try:
            if op == "compile":
                failed = await sandbox.compile()
                outcome = failed if failed is not None else Outcome(OK, "")
            else:
                outcome = await sandbox.run(payload)
        except asyncio.CancelledError:
            if not self._memory_error:
                raise
        finally:
            self._unlimit_memory()
        if self._memory_error:
            sandbox.close()
            outcome = Outcome(MEMORY, _memory(self))
        elif outcome.status == OK and op != "compile":
            out = outcome.text.encode("utf-8", "surrogatepass")
        if sandbox.compilations != compiled_before and sandbox.ready:
            self.costs[key] = self.data_size() - before
        if not sandbox.ready:
            self.costs.pop(key, None)
        reply["status"] = outcome.status
        if outcome.status != OK:
            reply["reason"] = outcome.text
            reply["fixed"] = outcome.fixed
        elif out.startswith(MEMORY_MARK.encode()):
            reply["memory"] = True
        reply["ready"] = sandbox.ready or outcome.fixed
        self.compilations += sandbox.compilations - compiled_before
        reply["compilations"] = self.compilations
        # Memory a call left behind (in a context's globals, or not given back to the system) counts
        # against the next calls' limits; past one limit's worth, a fresh worker takes over.
        now = self.data_size()
        retained = now - self.floor - sum(self.costs.values())
        if retained > self.limit_bytes:
            reply["retire"] = True
        elif (outcome.status == MEMORY or reply.get("memory")) and now > before + HEADROOM:
            # After a hit, the memory must come back at once; V8 keeps freed heap pages for later
            # isolates, so only a fresh worker gives them back.
            reply["retire"] = True
        return reply, out

    def _add(self, key: Key, code: str, evicted: list[Key]) -> Sandbox:
        # A version's code changed (or a new version arrived): the old context is of no more use.
        previous = self.by_version.get(key[:2])
        if previous is not None and previous in self.contexts:
            self._drop(previous)
            evicted.append(previous)
        sandbox = Sandbox(code, self.loop, self.time_limit_ms, self.memory_limit_mb, self._at_limit)
        self.contexts[key] = sandbox
        self.by_version[(key[0], key[1])] = key
        while len(self.contexts) > self.max_contexts:
            old_key = next(iter(self.contexts))
            self._drop(old_key)
            evicted.append(old_key)
        return sandbox

    def _drop(self, key: Key) -> None:
        sandbox = self.contexts.pop(key)
        if self.by_version.get(key[:2]) == key:
            del self.by_version[(key[0], key[1])]
        self.costs.pop(key, None)
        sandbox.close()


def _memory(worker: Worker) -> str:
    return f"Memory limit exceeded: the transformation used more than {worker.memory_limit_mb} MB"


# -- the zygote -----------------------------------------------------------------------------------


def zygote(ctl_fd: int, time_limit_ms: int, memory_limit_mb: int, max_contexts: int) -> None:
    import signal

    from py_mini_racer import DEFAULT_V8_FLAGS, init_mini_racer

    # Ctrl-C reaches the whole process group; the processor decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # V8 is initialised here, once; the zygote itself never makes a context (or a thread), so forking
    # it is safe. gc() lets the runtime give back the buffers of a call that hit the limit before
    # its answer crosses to Python (the runtime takes gc away from the user's code).
    init_mini_racer(flags=(*DEFAULT_V8_FLAGS, "--expose-gc"), ignore_duplicate_init=True)
    ctl = socket.socket(fileno=ctl_fd)
    children: set[int] = set()
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(ctl, 64, 1)
        except OSError:
            break
        if not message:
            break
        if message[:1] == wire.FORK and fds:
            pid = os.fork()
            if pid == 0:
                status = 1
                try:
                    ctl.close()
                    sock = socket.socket(fileno=fds[0])
                    Worker(sock, time_limit_ms, memory_limit_mb, max_contexts).serve()
                    status = 0
                except BaseException:  # noqa: BLE001 - report, then leave without running the zygote's code
                    traceback.print_exc()
                finally:
                    os._exit(status)
            os.close(fds[0])
            children.add(pid)
            ctl.sendall(wire.PID.pack(pid))
        elif message[:1] == wire.REAP:
            pid = wire.PID.unpack(message[1:1 + wire.PID.size])[0]
            status = -1
            if pid in children:
                children.discard(pid)
                status = os.waitpid(pid, 0)[1]
            ctl.sendall(wire.PID.pack(status))
        else:
            for fd in fds:
                os.close(fd)
    # The processor has gone: its workers see the end of their sockets and leave too.
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def main(argv: list[str]) -> int:
    ctl_fd, time_limit_ms, memory_limit_mb, max_contexts = (int(a) for a in argv)
    zygote(ctl_fd, time_limit_ms, memory_limit_mb, max_contexts)
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv[1:]))
