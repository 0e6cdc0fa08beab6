"""The memory limit holds for every way JavaScript can get memory: each route is tried by one event in
a chunk of good ones. The guilty event fails with the memory limit, its neighbours are transformed,
and the memory comes back (the processor's process and its workers, measured with psutil)."""

import os

import psutil
import pytest

from tests.user_js.events import WS, batch
from transformers.user_js import UserTransformer

LIMIT_MB = 128
MB = 1024 * 1024
REASON = f"memory limit exceeded: the transformation used more than {LIMIT_MB} mb"

# Each allocates about 512 MB (four times the limit) when the event is the bad one.
ROUTES = {
    "heap": """
        const hoard = [];
        while (true) hoard.push({ n: Math.random(), s: "payload " + Math.random() });
    """,
    "big string": """
        const s = "x".repeat(512 * MB - 64);
        event.last = s.charCodeAt(s.length - 1);  // flattening the rope makes one 512 MB string
    """,
    "array buffer": """
        event.size = new ArrayBuffer(512 * MB).byteLength;
    """,
    "array buffers retained": """
        const keep = [];
        for (let i = 0; i < 512; i++) keep.push(new ArrayBuffer(MB));
        event.size = keep.length;
    """,
    "constructor of a buffer": """
        const Buffer = new Uint8Array(1).buffer.constructor;
        event.size = new Buffer(512 * MB).byteLength;
    """,
    "resizable buffer": """
        const b = new ArrayBuffer(1, { maxByteLength: 1024 * MB });
        b.resize(512 * MB);
        event.size = b.byteLength;
    """,
    "typed arrays": """
        const keep = [];
        for (let i = 0; i < 8; i++) keep.push(new Float64Array(8 * MB));
        event.size = keep.length;
    """,
    "shared array buffer": """
        event.size = new SharedArrayBuffer(512 * MB).byteLength;
    """,
    "growable shared array buffer": """
        const b = new SharedArrayBuffer(1, { maxByteLength: 1024 * MB });
        b.grow(512 * MB);
        event.size = b.byteLength;
    """,
}


def _code(allocation: str) -> str:
    return f"""
    const MB = 1024 * 1024;
    export function transformEvent(event) {{
      if (event.messageId === "bad") {{
        {allocation}
      }}
      event.ok = true;
      return event;
    }}
    """


def _rss(pid: int) -> int:
    """Resident memory of a process and everything it started (the zygote and the workers)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


@pytest.fixture(scope="module")
def runner():
    with UserTransformer(time_limit_ms=10000, memory_limit_mb=LIMIT_MB) as r:
        yield r


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_guilty_event_fails_alone_and_the_memory_comes_back(runner, route):
    code = _code(ROUTES[route])
    events, metadata = batch("good-1", "bad", "good-2")
    # Warm: the context, the worker and the processor side have all done this once.
    runner.run(WS, f"v-{route}", code, *batch("warm-1", "warm-2"))
    baseline = _rss(os.getpid())

    result = runner.run(WS, f"v-{route}", code, events, metadata)

    assert [len(r.results) for r in [result]] == [3]
    good_1, bad, good_2 = result.results
    assert good_1.error is None and good_1.outputs[0]["ok"] is True
    assert good_2.error is None and good_2.outputs[0]["ok"] is True
    assert bad.outputs == []
    assert bad.error is not None and bad.error.lower().startswith(REASON), bad.error
    assert result.batch_error is None
    assert _rss(os.getpid()) < baseline + 150 * MB
    # And the same transformation goes on working.
    after = runner.run(WS, f"v-{route}", code, *batch("later"))
    assert after.results[0].outputs[0]["ok"] is True


def test_webassembly_cannot_be_reached(runner):
    # Deleted from the global object by the runtime; nothing else leads to it. (Were it reachable,
    # its memory would still be inside the worker's limit, like any ArrayBuffer.)
    code = """
    export function transformEvent(event) {
      const seen = new Set();
      const found = [];
      const visit = (value, path, depth) => {
        if (value === null || (typeof value !== "object" && typeof value !== "function")) return;
        if (seen.has(value) || depth > 6) return;
        seen.add(value);
        let tag = "";
        try { tag = Object.prototype.toString.call(value); } catch (e) {}
        if (tag === "[object WebAssembly]" || (typeof value === "function" && /^(Memory|Module|Instance)$/.test(value.name) && path.includes("Memory") === false && value.prototype && "grow" in value.prototype)) {
          found.push(path);
        }
        for (const key of Reflect.ownKeys(value)) {
          let child;
          try { child = value[key]; } catch (e) { continue; }
          visit(child, path + "." + String(key), depth + 1);
        }
        visit(Object.getPrototypeOf(value), path + ".__proto__", depth + 1);
      };
      visit(globalThis, "globalThis", 0);
      visit(Function("return this")(), "Function(return this)", 0);
      event.found = found;
      event.types = [typeof WebAssembly, typeof globalThis.WebAssembly, typeof FinalizationRegistry, typeof gc];
      return event;
    }
    """
    result = runner.run(WS, "v-wasm", code, *batch("a"))
    assert result.results[0].error is None, result.results[0].error
    out = result.results[0].outputs[0]
    assert out["found"] == []
    assert out["types"] == ["undefined"] * 4


def test_a_call_can_use_memory_below_the_limit(runner):
    # Four buffers of 16 MB and a heap of a few MB: well within 128 MB, so nothing fails.
    code = """
    export function transformEvent(event) {
      const keep = [];
      for (let i = 0; i < 4; i++) keep.push(new Uint8Array(16 * 1024 * 1024).fill(1));
      const objects = [];
      for (let i = 0; i < 20000; i++) objects.push({ i, s: "item " + i });
      event.sum = keep.reduce((n, a) => n + a[a.length - 1], 0) + objects.length;
      return event;
    }
    """
    result = runner.run(WS, "v-below", code, *batch("a", "b"))
    assert [r.error for r in result.results] == [None, None]
    assert [r.outputs[0]["sum"] for r in result.results] == [20004, 20004]


def test_memory_kept_between_calls_is_limited_too():
    # Each call keeps 24 MB in a global: no single call passes the limit of 64 MB, but the worker
    # would grow without end. Past one limit's worth of kept memory a fresh worker takes over.
    code = """
    const kept = [];
    export function transformEvent(event) {
      kept.push(new Uint8Array(24 * 1024 * 1024).fill(1));
      event.kept = kept.length;
      return event;
    }
    """
    with UserTransformer(memory_limit_mb=64) as runner:
        counts = []
        for n in range(8):
            result = runner.run(WS, "v-keep", code, *batch(f"e{n}"))
            assert result.results[0].error is None, result.results[0].error
            counts.append(result.results[0].outputs[0]["kept"])
        # The kept count starts again when a new worker (and a new context) takes over.
        assert max(counts) < 8
        assert counts[0] == 1 and 1 in counts[1:]
