"""One V8 context running one transformation version: compiled once, reused for every batch.

mini-racer facts this relies on (0.14):
- A timeout passed to eval() terminates JavaScript that is running *inside* that eval.
- Promise continuations run in a microtask checkpoint *after* the eval returns, where no timeout
  applies; a runaway continuation blocks the context until the next eval times out. Freeing the
  context terminates it, so any timeout or memory-limit hit throws the context away and the next
  batch gets a fresh one.
- The hard memory limit is checked after garbage collections and terminates execution; the context
  keeps reporting the limit afterwards, another reason to replace it.
- Host calls go through eval() with string arguments only: JSFunction calls and promise .get() make
  blocking calls on the event loop, which would hang if the isolate were stuck in a microtask.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import AbstractContextManager
from importlib import resources

import orjson
from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSParseException,
    JSTimeoutException,
    MiniRacer,
    mini_racer,
)

from transformers import json_codec
from transformers.user_js.results import BatchResult, EventResult
from transformers.user_js.source import USER_SCRIPT_NAME, SourceError, prepare

_RUNTIME_JS = resources.files(__package__).joinpath("runtime.js").read_text(encoding="utf-8")
_PENDING = "__sluice_pending__"
_IDLE = "__sluice_idle__"
_MB = 1024 * 1024


class Sandbox:
    """A transformation version's V8 context. Not thread-safe: callers hold `lock` around run()."""

    def __init__(self, code: str, loop: asyncio.AbstractEventLoop, time_limit_ms: int, memory_limit_mb: int):
        self.code = code
        self.lock = threading.Lock()
        self.compilations = 0
        self._loop = loop
        self._time_limit_ms = time_limit_ms
        self._memory_limit_mb = memory_limit_mb
        self._racer: MiniRacer | None = None
        self._owner: AbstractContextManager[MiniRacer] | None = None
        self._fixed_error: str | None = None  # a compile error that recompiling cannot fix

    # -- lifecycle -------------------------------------------------------------------------------

    def compile(self) -> str | None:
        """Make sure the context is ready; return the compile error, if any."""
        if self._fixed_error is not None:
            return self._fixed_error
        if self._racer is not None:
            return None
        try:
            prepared = prepare(self.code)
        except SourceError as e:
            self._fixed_error = str(e)
            return self._fixed_error

        owner = mini_racer(event_loop=self._loop)
        racer = owner.__enter__()
        self._owner, self._racer = owner, racer
        self.compilations += 1
        timeout = self._time_limit_ms / 1000
        try:
            racer.set_hard_memory_limit(self._memory_limit_mb * _MB)
            # Above half the limit V8 is told to collect harder, so garbage alone rarely trips the limit.
            racer.set_soft_memory_limit(self._memory_limit_mb * _MB // 2)
            racer.eval(_RUNTIME_JS, timeout_sec=timeout)
            status = json.loads(str(racer.eval(prepared.script, timeout_sec=timeout)))
        except JSParseException as e:
            self.close()
            self._fixed_error = _syntax_error(str(e), user_lines=self.code.count("\n") + 1)
            return self._fixed_error
        except JSEvalException as e:
            reason = self._limit_reason(e)
            self.close()
            return reason
        if "error" in status:
            # Top-level code threw or the exports are wrong: the same code fails the same way again.
            self.close()
            self._fixed_error = str(status["error"])
            return self._fixed_error
        return None

    def close(self) -> None:
        owner, self._owner, self._racer = self._owner, None, None
        if owner is not None:
            owner.__exit__(None, None, None)

    # -- running ---------------------------------------------------------------------------------

    def run(self, events: list[dict], metadata: list[dict]) -> BatchResult:
        count = len(events)
        error = self.compile()
        if error is not None:
            return BatchResult.failed(count, error)
        racer = self._racer
        assert racer is not None
        try:
            # Encoded in parts: metadata nearly always holds a null, which makes the encoder look for
            # NaN in what it encoded; the events then need no such look.
            payload = (
                '{"events":' + json_codec.dumps_strict(events) + ',"metadata":' + json_codec.dumps_strict(metadata)
                + ',"bufferBudget":' + str(self._memory_limit_mb * _MB) + "}"
            )
        except (TypeError, ValueError) as e:
            return BatchResult.failed(count, f"events are not JSON-serializable: {e}")

        limit = self._time_limit_ms / 1000
        deadline = time.monotonic() + limit
        try:
            # The batch travels as a JS string literal: a plain eval is the one host call that a
            # timeout can always interrupt.
            out = racer.eval(f"__sluice.run({_js_string(payload)})", timeout_sec=limit)
            # Promise continuations run between the two evals, outside any timeout; the second eval
            # cannot start until they finish, so its timeout bounds them.
            remaining = max(deadline - time.monotonic(), 0.001)
            settled = racer.eval("__sluice.collect()", timeout_sec=remaining)
            if out == _PENDING:
                out = settled
            if out == _PENDING:
                return BatchResult.failed(
                    count, "Timed out: a promise returned by the transformation never settled"
                )
        except JSEvalException as e:
            reason = self._limit_reason(e)
            self.close()
            return BatchResult.failed(count, reason)
        return _decode(str(out), count)

    def _limit_reason(self, e: JSEvalException) -> str:
        if isinstance(e, JSTimeoutException):
            return f"Timed out: the transformation ran longer than {self._time_limit_ms} ms"
        if isinstance(e, JSOOMException):
            return f"Memory limit exceeded: the transformation used more than {self._memory_limit_mb} MB"
        return f"Transformation failed: {_syntax_error(str(e))}"


def _js_string(text: str) -> str:
    """`text` as a JavaScript string literal. JSON's string syntax is JavaScript's (U+2028 and U+2029
    included, since ES2019); orjson cannot encode lone surrogates, json escapes them."""
    try:
        return orjson.dumps(text).decode()
    except TypeError:
        return json.dumps(text)


def _decode(out: str, count: int) -> BatchResult:
    data = json_codec.loads(out)
    logs = [str(line) for line in data.get("l", [])]
    if "b" in data:
        return BatchResult.failed(count, str(data["b"]), logs)
    results = []
    for index, item in enumerate(data["r"]):
        results.append(EventResult(index=index, outputs=item.get("o", []), error=item.get("e")))
    return BatchResult(results=results, logs=logs)


def _syntax_error(message: str, user_lines: int | None = None) -> str:
    """mini-racer's message is `<script>:<line>: <Error>` + source excerpt; keep error and line."""
    first = message.strip().splitlines()[0] if message.strip() else message
    prefix, sep, rest = first.partition(": ")
    if sep and ":" in prefix:
        script, _, line = prefix.rpartition(":")
        if script in (USER_SCRIPT_NAME, "<anonymous>"):
            if user_lines is not None and line.isdigit() and int(line) > user_lines:
                # The parser only noticed in our wrapper's closing lines: the user's code is unfinished.
                return f"SyntaxError: Unexpected end of input (base transformation:{user_lines})"
            return f"{rest} (base transformation:{line})"
        return f"{rest} ({script}:{line})"
    return first
