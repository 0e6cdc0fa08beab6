"""One V8 context running one transformation version inside a worker process: compiled once, reused
for every chunk. The worker's event loop drives it; the process's memory limit is the worker's job.

mini-racer facts this relies on (0.14):
- eval_cancelable() under asyncio.wait_for: the timeout terminates JavaScript running in that eval.
- Promise continuations run in a microtask checkpoint *after* the eval returns, where no timeout
  applies; a runaway continuation blocks the context until the next eval times out. Freeing the
  context terminates it, so any timeout or memory-limit hit throws the context away and the next
  chunk gets a fresh one.
- The hard heap limit is checked after garbage collections and terminates execution; the context
  keeps reporting the limit afterwards, another reason to replace it.
- Host calls are plain evals with string arguments: calling a JSFunction makes blocking calls on the
  isolate first, which would hang if it were stuck in a microtask.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import resources

import orjson
from py_mini_racer import (
    JSEvalException,
    JSOOMException,
    JSParseException,
    MiniRacer,
    mini_racer,
)

from transformers.user_js.source import USER_SCRIPT_NAME, SourceError, prepare

_RUNTIME_JS = resources.files(__package__).joinpath("runtime.js").read_text(encoding="utf-8")
_PENDING = "__sluice_pending__"
_MB = 1024 * 1024
# The answer starts like this when the process refused an allocation during the call.
MEMORY_MARK = '{"m":'

OK = "ok"  # text is the runtime's JSON answer
FAILED = "failed"  # text is the reason, for every event of the chunk
TIMEOUT = "timeout"
MEMORY = "memory"  # the call as a whole ran out of memory: retry its events one by one


@dataclass(frozen=True)
class Outcome:
    status: str
    text: str
    fixed: bool = False  # a compile error that recompiling cannot fix


def memory_reason(limit_mb: int, detail: str | None = None) -> str:
    reason = f"Memory limit exceeded: the transformation used more than {limit_mb} MB"
    return f"{reason} ({detail})" if detail else reason


def timeout_reason(limit_ms: int) -> str:
    return f"Timed out: the transformation ran longer than {limit_ms} ms"


class Sandbox:
    def __init__(self, code: str, loop: asyncio.AbstractEventLoop, time_limit_ms: int, memory_limit_mb: int,
                 at_memory_limit: Callable[[], bool] = lambda: False):
        self.code = code
        self._at_memory_limit = at_memory_limit
        self.compilations = 0
        self._loop = loop
        self._time_limit_ms = time_limit_ms
        self._memory_limit_mb = memory_limit_mb
        self._racer: MiniRacer | None = None
        self._owner: AbstractContextManager[MiniRacer] | None = None
        self._fixed_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._racer is not None

    async def compile(self) -> Outcome | None:
        """Make sure the context is ready; the failure, if any."""
        if self._fixed_error is not None:
            return Outcome(FAILED, self._fixed_error, fixed=True)
        if self._racer is not None:
            return None
        try:
            prepared = prepare(self.code)
        except SourceError as e:
            return self._fix(str(e))

        owner = mini_racer(event_loop=self._loop)
        racer = owner.__enter__()
        self._owner, self._racer = owner, racer
        self.compilations += 1
        timeout = self._time_limit_ms / 1000
        try:
            # The process limit is the real one. The heap limit ends a runaway heap with a clean error
            # before the process refuses V8 memory (which V8 does not survive): a heap of N MB holds
            # up to about twice that in pages, so the heap gets half the limit.
            racer.set_hard_memory_limit(self._memory_limit_mb * _MB // 2)
            # Above a quarter V8 is told to collect harder, so garbage alone rarely trips the limit.
            racer.set_soft_memory_limit(self._memory_limit_mb * _MB // 4)
            await self._eval(_RUNTIME_JS, timeout)
            status = json.loads(str(await self._eval(prepared.script, timeout)))
        except JSParseException as e:
            self.close()
            return self._fix(_syntax_error(str(e), user_lines=self.code.count("\n") + 1))
        except (TimeoutError, JSEvalException, MemoryError) as e:
            failure = self._failure(e)
            self.close()
            return failure
        if "error" in status:
            self.close()
            if status.get("m"):
                return Outcome(MEMORY, memory_reason(self._memory_limit_mb, str(status["error"]).split("\n")[0]))
            # Top-level code threw or the exports are wrong: the same code fails the same way again.
            return self._fix(str(status["error"]))
        return None

    async def run(self, payload: bytes) -> Outcome:
        """One chunk: `payload` is the JSON text (UTF-8) of {"events", "metadata"}."""
        failed = await self.compile()
        if failed is not None:
            # The module's own code failed: no event is to blame, so none is retried alone.
            return Outcome(FAILED, failed.text, failed.fixed) if failed.status == MEMORY else failed
        racer = self._racer
        assert racer is not None
        limit = self._time_limit_ms / 1000
        deadline = self._loop.time() + limit
        try:
            # The chunk travels as a JS string literal: a plain eval is the one host call that a
            # timeout can always interrupt.
            out = await self._eval("__sluice.run(" + _js_literal(payload) + ")", limit)
            # Promise continuations run between the two evals, outside any timeout; the second eval
            # cannot start until they finish, so its timeout bounds them.
            remaining = max(deadline - self._loop.time(), 0.001)
            settled = await self._eval("__sluice.collect()", remaining)
        except (TimeoutError, JSEvalException, MemoryError) as e:
            failure = self._failure(e)
            self.close()
            return failure
        if out == _PENDING:
            out = settled
        if out == _PENDING:
            return Outcome(FAILED, "Timed out: a promise returned by the transformation never settled")
        if not isinstance(out, str):
            return Outcome(FAILED, f"Transformation failed: the runtime answered {type(out).__name__}")
        if out.startswith(MEMORY_MARK):
            # The memory the refused call held is given back with the context.
            self.close()
        return Outcome(OK, out)

    def close(self) -> None:
        owner, self._owner, self._racer = self._owner, None, None
        if owner is not None:
            owner.__exit__(None, None, None)

    async def _eval(self, code: str, timeout: float) -> object:
        racer = self._racer
        assert racer is not None
        return await asyncio.wait_for(racer.eval_cancelable(code), timeout)

    def _fix(self, error: str) -> Outcome:
        self._fixed_error = error
        return Outcome(FAILED, error, fixed=True)

    def _failure(self, e: BaseException) -> Outcome:
        if isinstance(e, TimeoutError):
            if self._at_memory_limit():
                # mini-racer could not hand V8's answer to Python (that takes memory too), so the
                # call only looked slow.
                return Outcome(MEMORY, memory_reason(self._memory_limit_mb))
            return Outcome(TIMEOUT, timeout_reason(self._time_limit_ms))
        if isinstance(e, (JSOOMException, MemoryError)):
            return Outcome(MEMORY, memory_reason(self._memory_limit_mb))
        message = _syntax_error(str(e))
        if _is_memory_message(message):
            return Outcome(MEMORY, memory_reason(self._memory_limit_mb, message))
        return Outcome(FAILED, f"Transformation failed: {message}")


def _is_memory_message(message: str) -> bool:
    lowered = message.lower()
    return lowered.startswith("rangeerror") and any(
        m in lowered for m in ("allocation failed", "out of memory", "could not allocate memory", "unable to grow")
    )


def _js_literal(payload: bytes) -> str:
    """JSON text as a single-quoted JavaScript string literal. Compact JSON holds no raw line breaks,
    so escaping backslashes and single quotes is enough; anything else (lone surrogates, which are
    not UTF-8) takes the slow road."""
    if b"\n" not in payload and b"\r" not in payload:
        try:
            return "'" + payload.replace(b"\\", b"\\\\").replace(b"'", b"\\'").decode("utf-8") + "'"
        except UnicodeDecodeError:
            pass
    return _js_string(payload.decode("utf-8", "surrogatepass"))


def _js_string(text: str) -> str:
    """`text` as a JavaScript string literal. JSON's string syntax is JavaScript's (U+2028 and U+2029
    included, since ES2019); orjson cannot encode lone surrogates, json escapes them."""
    try:
        return orjson.dumps(text).decode()
    except TypeError:
        return json.dumps(text)


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
