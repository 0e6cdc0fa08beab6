"""transformEvent: modify, drop, fan out, per-event errors, async, log() and metadata()."""

from tests.user_js.events import WS, batch

MODIFY = """
export function transformEvent(event, metadata) {
  event.properties = { seen: true };
  return event;
}
"""


def test_modify(transformer):
    events, metadata = batch("a", "b")
    result = transformer.run(WS, "v1", MODIFY, events, metadata)
    assert result.batch_error is None
    assert [r.index for r in result.results] == [0, 1]
    assert result.results[0].outputs == [
        {"messageId": "a", "type": "track", "event": "Viewed", "properties": {"seen": True}}
    ]
    assert result.results[1].outputs[0]["messageId"] == "b"
    assert all(r.error is None for r in result.results)


def test_null_and_undefined_drop_the_event(transformer):
    code = """
    export function transformEvent(event) {
      if (event.messageId === "a") return null;
      if (event.messageId === "b") return undefined;
      return event;
    }
    """
    events, metadata = batch("a", "b", "c")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert [r.outputs for r in result.results[:2]] == [[], []]
    assert [r.error for r in result.results] == [None, None, None]
    assert result.results[0].dropped and result.results[1].dropped
    assert result.results[2].outputs[0]["messageId"] == "c"


def test_array_fans_out(transformer):
    code = """
    export function transformEvent(event) {
      return [1, 2, 3].map((n) => ({ ...event, event: event.event + " " + n }));
    }
    """
    events, metadata = batch("a")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert [o["event"] for o in result.results[0].outputs] == ["Viewed 1", "Viewed 2", "Viewed 3"]


def test_array_with_a_non_object_is_an_error(transformer):
    code = "export function transformEvent(event) { return [event, 7]; }"
    events, metadata = batch("a")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert result.results[0].outputs == []
    assert (
        result.results[0].error
        == "returned event in events array from transformEvent(event) is not an object"
    )


def test_non_object_is_an_error(transformer):
    code = "export function transformEvent(event) { return 'nope'; }"
    events, metadata = batch("a")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert result.results[0].error == "returned event from transformEvent(event) is not an object"


def test_a_throwing_event_fails_alone(transformer):
    code = """export function transformEvent(event) {
  if (event.messageId === "b") {
    throw new Error("Manual Error");
  }
  return event;
}
"""
    events, metadata = batch("a", "b", "c")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert result.batch_error is None
    assert result.results[0].outputs and result.results[2].outputs
    assert result.results[1].outputs == []
    assert result.results[1].error == "Error: Manual Error\n    at transformEvent (base transformation:3:11)"


def test_thrown_non_errors_are_reported(transformer):
    code = "export function transformEvent(event) { throw 'plain string'; }"
    events, metadata = batch("a")
    assert transformer.run(WS, "v1", code, events, metadata).results[0].error == "plain string"


def test_async_transform_event(transformer):
    code = """
    async function helper(event) { await null; return { ...event, late: true }; }
    export async function transformEvent(event) {
      if (event.messageId === "b") { await null; throw new TypeError("async failure"); }
      if (event.messageId === "c") return null;
      return await helper(event);
    }
    """
    events, metadata = batch("a", "b", "c")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert result.batch_error is None
    assert result.results[0].outputs[0]["late"] is True
    assert result.results[1].error.startswith(
        "TypeError: async failure\n    at transformEvent (base transformation:"
    )
    assert result.results[2].dropped


def test_without_export_keyword(transformer):
    code = "function transformEvent(event) { event.plain = 1; return event; }"
    events, metadata = batch("a")
    assert transformer.run(WS, "v1", code, events, metadata).results[0].outputs[0]["plain"] == 1


def test_metadata_returns_the_callers_metadata(transformer):
    code = """
    export function transformEvent(event, metadata) {
      const m = metadata(event);
      event.context = { sourceId: m.sourceId, destinationId: m.destinationId, jobId: m.jobId, same: metadata === globalThis.metadata };
      return event;
    }
    """
    events, metadata = batch("a", "b")
    result = transformer.run(WS, "v1", code, events, metadata)
    assert result.results[1].outputs[0]["context"] == {
        "sourceId": "src-1",
        "destinationId": "dst-1",
        "jobId": 1,
        "same": True,
    }


def test_log_lines_reach_the_caller():
    from transformers.user_js import UserTransformer

    seen = []
    code = """
    export function transformEvent(event) {
      log("event", event.messageId, { n: 1 }, [2], 3);
      return event;
    }
    """
    events, metadata = batch("a", "b")
    with UserTransformer(on_log=lambda version, line: seen.append((version, line))) as runner:
        result = runner.run(WS, "v-log", code, events, metadata)
    assert result.logs == ['event a {"n":1} [2] 3', 'event b {"n":1} [2] 3']
    assert seen == [("v-log", line) for line in result.logs]


def test_only_ecmascript_builtins(transformer):
    code = """
    export function transformEvent(event) {
      event.globals = [typeof setTimeout, typeof require, typeof process, typeof fetch, typeof Buffer,
                       typeof WebAssembly, typeof Atomics.waitAsync, typeof JSON, typeof log, typeof metadata];
      return event;
    }
    """
    events, metadata = batch("a")
    globals_ = transformer.run(WS, "v1", code, events, metadata).results[0].outputs[0]["globals"]
    assert globals_ == ["undefined"] * 7 + ["object", "function", "function"]


ENCODING = "transformation output cannot be encoded as JSON: "


def test_outputs_json_cannot_encode_fail_alone(transformer):
    code = """
    export function transformEvent(event) {
      switch (event.messageId) {
        case "undefined-json": return { toJSON() { return undefined; } };
        case "cycle": { const e = { ...event }; e.self = e; return e; }
        case "bigint": return { ...event, n: 10n };
        case "getter": return { ...event, get boom() { throw new Error("getter broke"); } };
        case "string-json": return { toJSON() { return "just a string"; } };
        case "in-array": return [event, { n: 1n }];
        default: return event;
      }
    }
    """
    ids = ("good-1", "undefined-json", "cycle", "bigint", "getter", "string-json", "in-array", "good-2")
    events, metadata = batch(*ids)
    result = transformer.run(WS, "v-encode", code, events, metadata)
    assert result.batch_error is None and len(result.results) == len(ids)
    by_id = dict(zip(ids, result.results, strict=True))
    assert by_id["good-1"].outputs[0]["messageId"] == "good-1" and by_id["good-1"].error is None
    assert by_id["good-2"].outputs[0]["messageId"] == "good-2" and by_id["good-2"].error is None
    assert by_id["undefined-json"].error == ENCODING + "toJSON() returned undefined"
    assert by_id["cycle"].error.startswith(ENCODING + "TypeError: Converting circular structure to JSON")
    assert by_id["bigint"].error.startswith(ENCODING + "TypeError: Do not know how to serialize a BigInt")
    assert by_id["getter"].error.startswith(ENCODING + "Error: getter broke")
    assert by_id["string-json"].error == ENCODING + "its JSON form is not an object"
    assert by_id["in-array"].error.startswith(ENCODING + "TypeError: Do not know how to serialize a BigInt")
    for mid in ids[1:-1]:
        assert by_id[mid].outputs == []


def test_transform_batch_output_that_cannot_be_encoded_fails_its_input(transformer):
    code = """
    export function transformBatch(events) {
      return events.map((e) => e.messageId === "cycle" ? Object.assign(e, { self: e }) : e);
    }
    """
    events, metadata = batch("a", "cycle", "c")
    result = transformer.run(WS, "v-encode-batch", code, events, metadata)
    assert result.batch_error is None
    assert [r.outputs[0]["messageId"] for r in (result.results[0], result.results[2])] == ["a", "c"]
    assert result.results[1].outputs == []
    assert result.results[1].error.startswith(ENCODING + "TypeError: Converting circular structure to JSON")


def test_what_javascript_throws_or_breaks_never_raises(transformer):
    # Throwing getters on what is thrown and returned, then.then traps, the runtime's own built-ins
    # replaced: every call still answers one result per event.
    code = """
    const hostile = new Proxy({}, { get() { throw new Error("trap"); }, getPrototypeOf() { throw new Error("trap"); } });
    export function transformEvent(event) {
      switch (event.messageId) {
        case "throw-hostile": throw hostile;
        case "return-hostile": return hostile;
        case "bad-then": return { get then() { throw new Error("then getter"); } };
        case "bad-stack": { const e = new Error("x"); Object.defineProperty(e, "stack", { get() { throw 1; } }); throw e; }
        case "pollute":
          Array.prototype.join = () => { throw new Error("join replaced"); };
          String.prototype.split = () => { throw new Error("split replaced"); };
          Promise.prototype.then = () => { throw new Error("then replaced"); };
          Map.prototype.get = () => { throw new Error("get replaced"); };
          return event;
        default: return event;
      }
    }
    """
    ids = ("a", "throw-hostile", "return-hostile", "bad-then", "bad-stack", "pollute", "z")
    for _ in range(2):  # the second call runs with the built-ins replaced
        events, metadata = batch(*ids)
        result = transformer.run(WS, "v-hostile", code, events, metadata)
        assert len(result.results) == len(ids)
        assert result.results[0].error is None and result.results[-1].error is None
        assert result.results[1].error and result.results[2].error and result.results[3].error
        assert result.results[4].error


def test_awkward_text_crosses_unchanged(transformer):
    text = "it's a \\ back\\slash, \"quotes\", \n\r\t, \u2028\u2029, \u00e9, \U0001f600, \x00"
    events, metadata = batch("a", "b")
    events[0]["properties"] = {"text": text, text: 1}
    events[1]["properties"] = {"lone": "\ud800"}  # a lone surrogate: only `json` can encode it
    result = transformer.run(WS, "v-text", "export function transformEvent(e) { e.len = JSON.stringify(e).length; return e; }",
                             events, metadata)
    assert result.results[0].outputs[0]["properties"] == {"text": text, text: 1}
    assert result.results[1].outputs[0]["properties"] == {"lone": "\ud800"}
