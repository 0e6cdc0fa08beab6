"""transformBatch: outputs attributed to inputs by messageId; a throw fails the whole batch."""

from tests.user_js.events import WS, batch


def test_outputs_are_attributed_by_message_id(transformer):
    code = """
    export function transformBatch(events, metadata) {
      const out = events.filter((e) => e.messageId !== "b").reverse().map((e) => ({ ...e, src: metadata(e).sourceId }));
      out.push({ type: "track", event: "Summary", count: events.length });
      return out;
    }
    """
    events, metadata = batch("a", "b", "c")
    result = transformer.run(WS, "v-batch", code, events, metadata)
    assert result.batch_error is None
    first, second, third = result.results
    assert [o.get("messageId") for o in first.outputs] == ["a", None]
    assert first.outputs[0]["src"] == "src-1"
    assert first.outputs[1] == {"type": "track", "event": "Summary", "count": 3}
    assert second.dropped
    assert [o["messageId"] for o in third.outputs] == ["c"]


def test_async_transform_batch(transformer):
    code = "export async function transformBatch(events) { await null; return events.slice(1); }"
    events, metadata = batch("a", "b")
    result = transformer.run(WS, "v-batch", code, events, metadata)
    assert result.results[0].dropped
    assert result.results[1].outputs[0]["messageId"] == "b"


def test_throwing_fails_the_whole_batch(transformer):
    code = "export function transformBatch(events) { throw new Error('batch broke'); }"
    events, metadata = batch("a", "b")
    result = transformer.run(WS, "v-batch", code, events, metadata)
    assert result.batch_error.startswith("Error: batch broke\n    at transformBatch (base transformation:1:")
    assert [r.error for r in result.results] == [result.batch_error] * 2
    assert all(r.outputs == [] for r in result.results)


def test_must_return_an_array(transformer):
    code = "export function transformBatch(events) { return events[0]; }"
    events, metadata = batch("a")
    result = transformer.run(WS, "v-batch", code, events, metadata)
    assert result.batch_error == "returned events from transformBatch(event) is not an array"
