"""Worker processes: a killed worker is replaced and its chunk's good events still succeed; contexts
belong to one workspace; chunks spread over several workers come back in order."""

import os
import signal
import threading

from tests.support.procs import wait_for
from tests.user_js.events import WS, batch
from transformers.user_js import UserTransformer

OK = "export function transformEvent(event) { event.ok = true; return event; }"


def test_a_worker_killed_mid_chunk_is_replaced_and_the_good_events_succeed():
    # The chunk as a whole never finishes (until its minute-long time limit); one event alone does.
    code = """
    export function transformBatch(events) {
      if (events.length > 1) { while (true) {} }
      return events.map((e) => Object.assign(e, { ok: true }));
    }
    """
    with UserTransformer(time_limit_ms=60000) as runner:
        answer = {}
        call = threading.Thread(target=lambda: answer.update(
            result=runner.run(WS, "v-kill", code, *batch("a", "b", "c"))))
        call.start()
        # Compiled: the chunk itself is now on its way to the worker or running there.
        wait_for(lambda: runner.compilations >= 1, timeout=30, what="the chunk to start")
        [victim] = runner.worker_pids
        os.kill(victim, signal.SIGKILL)
        call.join(timeout=120)
        assert not call.is_alive()
        result = answer["result"]
        assert [r.error for r in result.results] == [None, None, None]
        assert [r.outputs[0]["messageId"] for r in result.results] == ["a", "b", "c"]
        assert all(r.outputs[0]["ok"] for r in result.results)
        assert runner.restarts == 1
        assert victim not in runner.worker_pids
        # The replacement goes on serving.
        assert runner.run(WS, "v-ok", OK, *batch("d")).results[0].outputs[0]["ok"] is True


def test_a_worker_killed_between_calls_is_replaced(transformer):
    assert transformer.run(WS, "v-ok", OK, *batch("a")).results[0].error is None
    for events in (("b", "c"), ("d",)):  # a chunk, and a single event (not blamed for the death)
        [victim] = transformer.worker_pids
        os.kill(victim, signal.SIGKILL)
        result = transformer.run(WS, "v-ok", OK, *batch(*events))
        assert [r.error for r in result.results] == [None] * len(events)
        assert [r.outputs[0]["ok"] for r in result.results] == [True] * len(events)
        assert victim not in transformer.worker_pids
    assert transformer.restarts == 2


def test_same_version_id_in_two_workspaces_with_different_code(transformer):
    code = "export function transformEvent(event) { event.owner = %r; return event; }"
    runs = [("ws-a", code % "a"), ("ws-b", code % "b"), ("ws-a", code % "a"), ("ws-b", code % "b")]
    owners = [transformer.run(ws, "v-shared", c, *batch("m")).results[0].outputs[0]["owner"] for ws, c in runs]
    assert owners == ["a", "b", "a", "b"]
    assert transformer.compilations == 2  # one context each, both kept


def test_same_version_id_and_code_in_two_workspaces_share_no_state(transformer):
    code = """
    let calls = 0;
    export function transformEvent(event) {
      globalThis.seen = (globalThis.seen || []).concat([event.messageId]);
      event.calls = ++calls;
      event.seen = globalThis.seen;
      return event;
    }
    """

    def run(ws, mid):
        return transformer.run(ws, "v-same", code, *batch(mid)).results[0].outputs[0]

    assert run("ws-a", "a1") == {**run_shape("a1"), "calls": 1, "seen": ["a1"]}
    assert run("ws-a", "a2")["seen"] == ["a1", "a2"]
    assert run("ws-b", "b1") == {**run_shape("b1"), "calls": 1, "seen": ["b1"]}
    assert run("ws-a", "a3")["calls"] == 3


def run_shape(mid):
    return {"messageId": mid, "type": "track", "event": "Viewed"}


def test_chunks_spread_over_several_workers_come_back_in_order():
    code = "let calls = 0;\nexport function transformEvent(event) { event.calls = ++calls; return event; }"
    chunks = [batch(*(f"c{c}-{i}" for i in range(50))) for c in range(6)]
    with UserTransformer(workers=2) as runner:
        results = runner.run_chunks(WS, "v-spread", code, chunks)
        assert len(runner.worker_pids) == 2
        assert runner.compilations == 2  # one context per worker
    ids = [[r.outputs[0]["messageId"] for r in result.results] for result in results]
    assert ids == [[f"c{c}-{i}" for i in range(50)] for c in range(6)]
    assert all(r.error is None for result in results for r in result.results)
