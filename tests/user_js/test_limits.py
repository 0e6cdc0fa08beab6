"""Time limits fail the whole chunk, memory limits the guilty event, and the transformer keeps working
afterwards. (Every route to memory is in test_memory.py.)"""

import time

from tests.user_js.events import WS, batch
from transformers.user_js import UserTransformer

OK = "export function transformEvent(event) { event.ok = true; return event; }"


def _still_works(runner, version="v-ok"):
    events, metadata = batch("x")
    result = runner.run(WS, version, OK, events, metadata)
    assert result.batch_error is None
    assert result.results[0].outputs[0]["ok"] is True


def test_infinite_loop_hits_the_time_limit():
    code = "export function transformEvent(event) { if (event.messageId === 'b') { while (true) {} } return event; }"
    events, metadata = batch("a", "b", "c")
    with UserTransformer(time_limit_ms=300) as runner:
        started = time.monotonic()
        result = runner.run(WS, "v-loop", code, events, metadata)
        assert time.monotonic() - started < 3
        assert result.batch_error == "Timed out: the transformation ran longer than 300 ms"
        assert [r.error for r in result.results] == [result.batch_error] * 3
        _still_works(runner)
        # The same version gets a fresh context and times out again, rather than hanging.
        assert runner.run(WS, "v-loop", code, events, metadata).batch_error == result.batch_error
        _still_works(runner)


def test_runaway_async_continuation_hits_the_time_limit():
    code = "export async function transformEvent(event) { await null; while (true) {} }"
    events, metadata = batch("a")
    with UserTransformer(time_limit_ms=300) as runner:
        started = time.monotonic()
        result = runner.run(WS, "v-async-loop", code, events, metadata)
        assert time.monotonic() - started < 3
        assert result.batch_error.startswith("Timed out")
        _still_works(runner)


def test_detached_runaway_is_charged_to_its_own_batch():
    code = "export function transformEvent(event) { (async () => { await null; while (true) {} })(); return event; }"
    events, metadata = batch("a")
    with UserTransformer(time_limit_ms=300) as runner:
        assert runner.run(WS, "v-detached", code, events, metadata).batch_error.startswith("Timed out")
        _still_works(runner)


def test_a_promise_that_never_settles_fails_the_batch(transformer):
    code = "export function transformEvent(event) { return new Promise(() => {}); }"
    events, metadata = batch("a")
    result = transformer.run(WS, "v-never", code, events, metadata)
    assert result.batch_error == "Timed out: a promise returned by the transformation never settled"
    _still_works(transformer)


def test_unbounded_allocation_hits_the_memory_limit():
    code = """
    export function transformEvent(event) {
      const hoard = [];
      while (true) hoard.push({ n: Math.random(), s: "payload " + Math.random() });
    }
    """
    events, metadata = batch("a", "b")
    with UserTransformer(memory_limit_mb=32, time_limit_ms=20000) as runner:
        result = runner.run(WS, "v-oom", code, events, metadata)
        # Each event is retried alone after the chunk hit the limit, and each fails on its own.
        reason = "Memory limit exceeded: the transformation used more than 32 MB"
        assert [r.error for r in result.results] == [reason] * 2
        _still_works(runner)


def test_array_buffers_count_against_the_memory_limit():
    code = "export function transformEvent(event) { event.size = new Uint8Array(64 * 1024 * 1024).length; return event; }"
    events, metadata = batch("a")
    with UserTransformer(memory_limit_mb=32) as runner:
        error = runner.run(WS, "v-buf", code, events, metadata).results[0].error
        assert error == ("Memory limit exceeded: the transformation used more than 32 MB "
                         "(RangeError: Array buffer allocation failed)")
        _still_works(runner)


def test_garbage_alone_does_not_trip_the_memory_limit():
    code = """
    export function transformEvent(event) {
      let total = 0;
      for (let i = 0; i < 300000; i++) total += ({ i, text: "item " + i }).text.length;
      event.total = total;
      return event;
    }
    """
    events, metadata = batch("a", "b")
    with UserTransformer(memory_limit_mb=32, time_limit_ms=20000) as runner:
        result = runner.run(WS, "v-garbage", code, events, metadata)
        assert result.batch_error is None
        assert result.results[1].outputs[0]["total"] > 0


def test_top_level_code_past_the_memory_limit_fails_the_chunk():
    code = "const big = new ArrayBuffer(256 * 1024 * 1024);\nexport function transformEvent(event) { return event; }"
    events, metadata = batch("a", "b", "c")
    with UserTransformer(memory_limit_mb=32) as runner:
        result = runner.run(WS, "v-top", code, events, metadata)
        assert result.batch_error is not None
        assert result.batch_error.startswith("Memory limit exceeded: the transformation used more than 32 MB")
        assert [r.error for r in result.results] == [result.batch_error] * 3
        _still_works(runner)
