"""Runs user transformations for the processor: a bounded cache of V8 contexts, one per version.

All contexts share one asyncio loop thread (mini-racer's own default is a thread per context).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

from transformers.user_js.results import BatchResult, TransformationError
from transformers.user_js.sandbox import Sandbox

LogSink = Callable[[str, str], None]  # (version_id, line)


class UserTransformer:
    def __init__(
        self,
        time_limit_ms: int = 4000,
        memory_limit_mb: int = 128,
        max_contexts: int = 32,
        on_log: LogSink | None = None,
    ) -> None:
        if time_limit_ms <= 0 or memory_limit_mb <= 0 or max_contexts <= 0:
            raise ValueError("time_limit_ms, memory_limit_mb and max_contexts must be positive")
        self.time_limit_ms = time_limit_ms
        self.memory_limit_mb = memory_limit_mb
        self.max_contexts = max_contexts
        self.on_log = on_log
        self._lock = threading.Lock()
        self._sandboxes: OrderedDict[tuple[str, str], Sandbox] = OrderedDict()
        self._by_version: dict[str, tuple[str, str]] = {}
        self._retired_compilations = 0
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="user-js-loop", daemon=True)
        self._loop_thread.start()
        self._closed = False

    @property
    def compilations(self) -> int:
        """How many times user code was compiled into a fresh context (reuse keeps this flat)."""
        with self._lock:
            live = sum(s.compilations for s in self._sandboxes.values())
            return self._retired_compilations + live

    def run(self, version_id: str, code: str, events: list[dict], metadata: list[dict]) -> BatchResult:
        """Transform a batch. JavaScript problems come back in the result, never as exceptions."""
        if len(metadata) != len(events):
            raise ValueError("events and metadata must have the same length")
        if not events:
            return BatchResult(results=[])
        sandbox = self._sandbox(version_id, code)
        with sandbox.lock:
            result = sandbox.run(events, metadata)
        if self.on_log is not None:
            for line in result.logs:
                self.on_log(version_id, line)
        return result

    def compile(self, version_id: str, code: str) -> None:
        """Compile ahead of the first batch; raise TransformationError if the code cannot run."""
        sandbox = self._sandbox(version_id, code)
        with sandbox.lock:
            error = sandbox.compile()
        if error is not None:
            raise TransformationError(error)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sandboxes = list(self._sandboxes.values())
            self._sandboxes.clear()
            self._by_version.clear()
        for sandbox in sandboxes:
            self._retire(sandbox)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join()
        self._loop.close()

    def __enter__(self) -> UserTransformer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sandbox(self, version_id: str, code: str) -> Sandbox:
        key = (version_id, hashlib.sha256(code.encode("utf-8")).hexdigest())
        evicted: list[Sandbox] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("UserTransformer is closed")
            sandbox = self._sandboxes.get(key)
            if sandbox is not None:
                self._sandboxes.move_to_end(key)
                return sandbox
            # A version's code changed (or a new version arrived): the old context is of no more use.
            previous = self._by_version.get(version_id)
            if previous is not None and previous in self._sandboxes:
                evicted.append(self._sandboxes.pop(previous))
            sandbox = Sandbox(code, self._loop, self.time_limit_ms, self.memory_limit_mb)
            self._sandboxes[key] = sandbox
            self._by_version[version_id] = key
            while len(self._sandboxes) > self.max_contexts:
                old_key, old = self._sandboxes.popitem(last=False)
                if self._by_version.get(old_key[0]) == old_key:
                    del self._by_version[old_key[0]]
                evicted.append(old)
        for old in evicted:
            self._retire(old)
        return sandbox

    def _retire(self, sandbox: Sandbox) -> None:
        # Waits for a batch still running in that context, then frees it.
        with sandbox.lock:
            sandbox.close()
            with self._lock:
                self._retired_compilations += sandbox.compilations
            sandbox.compilations = 0


def run_file(
    code: str,
    events: list[dict],
    metadata: list[dict] | None = None,
    *,
    time_limit_ms: int = 4000,
    memory_limit_mb: int = 128,
) -> BatchResult:
    """One-off run for `sluice transform --transformation FILE.js --events FILE.jsonl`."""
    if metadata is None:
        metadata = [
            {
                "messageId": event.get("messageId", f"preview-{i}")
                if isinstance(event, dict)
                else f"preview-{i}"
            }
            for i, event in enumerate(events)
        ]
    with UserTransformer(
        time_limit_ms=time_limit_ms, memory_limit_mb=memory_limit_mb, max_contexts=1
    ) as runner:
        return runner.run("preview", code, events, metadata)
