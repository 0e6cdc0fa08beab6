"""Runs user transformations for the processor, in worker processes that hold the memory limit.

Contexts are keyed by workspace, transformation version and a hash of the code, so two workspaces
never share one, even with the same versionId; a context lives in one worker and is reused there.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from transformers.user_js.pool import Chunk, WorkerPool
from transformers.user_js.results import BatchResult, TransformationError

LogSink = Callable[[str, str], None]  # (version_id, line)


class UserTransformer:
    def __init__(
        self,
        time_limit_ms: int = 4000,
        memory_limit_mb: int = 128,
        workers: int = 1,
        *,
        max_contexts: int = 32,
        on_log: LogSink | None = None,
    ) -> None:
        if time_limit_ms <= 0 or memory_limit_mb <= 0 or workers <= 0 or max_contexts <= 0:
            raise ValueError("time_limit_ms, memory_limit_mb, workers and max_contexts must be positive")
        self.time_limit_ms = time_limit_ms
        self.memory_limit_mb = memory_limit_mb
        self.workers = workers
        self.max_contexts = max_contexts  # per worker
        self.on_log = on_log
        self._lock = threading.Lock()
        self._pool = WorkerPool(workers, time_limit_ms, memory_limit_mb, max_contexts)
        self._closed = False

    # Counters read without the lock, so they can be watched while a call runs.

    @property
    def compilations(self) -> int:
        """How many times user code was compiled into a fresh context (reuse keeps this flat)."""
        return self._pool.compilations

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes running now (they start with the first call)."""
        return self._pool.pids

    @property
    def restarts(self) -> int:
        """Workers replaced after dying or hanging."""
        return self._pool.restarts

    def run(self, workspace_id: str, version_id: str, code: str, events: list[dict],
            metadata: list[dict]) -> BatchResult:
        """Transform one chunk (one V8 call). JavaScript problems come back in the result, never as
        exceptions: one EventResult per input, always."""
        return self.run_chunks(workspace_id, version_id, code, [(events, metadata)])[0]

    def run_chunks(self, workspace_id: str, version_id: str, code: str,
                   chunks: list[tuple[list[dict], list[dict]]]) -> list[BatchResult]:
        """Transform several chunks of one transformation, pipelined: one V8 call per chunk."""
        work = []
        for events, metadata in chunks:
            if len(metadata) != len(events):
                raise ValueError("events and metadata must have the same length")
            work.append(Chunk(list(events), list(metadata)))
        with self._lock:
            if self._closed:
                raise RuntimeError("UserTransformer is closed")
            self._pool.run(_key(workspace_id, version_id, code), code, work)
        results = [chunk.result() for chunk in work]
        if self.on_log is not None:
            for result in results:
                for line in result.logs:
                    self.on_log(version_id, line)
        return results

    def compile(self, workspace_id: str, version_id: str, code: str) -> None:
        """Compile ahead of the first chunk; raise TransformationError if the code cannot run."""
        with self._lock:
            if self._closed:
                raise RuntimeError("UserTransformer is closed")
            error = self._pool.compile(_key(workspace_id, version_id, code), code)
        if error is not None:
            raise TransformationError(error)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pool.close()

    def __enter__(self) -> UserTransformer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _key(workspace_id: str, version_id: str, code: str) -> tuple[str, str, str]:
    return (str(workspace_id), str(version_id), hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest())


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
    with UserTransformer(time_limit_ms=time_limit_ms, memory_limit_mb=memory_limit_mb, max_contexts=1) as runner:
        return runner.run("preview", "preview", code, events, metadata)
