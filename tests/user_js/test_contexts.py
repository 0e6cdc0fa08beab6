"""Context cache: one compile per version and code, changes take effect, bounded size."""

import json

from tests.user_js.events import WS, batch
from transformers.user_js import UserTransformer, format_preview, run_file

V1 = "export function transformEvent(event) { event.version = 1; return event; }"
V2 = "export function transformEvent(event) { event.version = 2; return event; }"


def _version(runner, version_id, code):
    events, metadata = batch("a")
    return runner.run(WS, version_id, code, events, metadata).results[0].outputs[0]["version"]


def test_same_version_is_compiled_once(transformer):
    for _ in range(5):
        assert _version(transformer, "v1", V1) == 1
    assert transformer.compilations == 1


def test_context_state_persists_between_batches(transformer):
    code = "let calls = 0;\nexport function transformEvent(event) { event.calls = ++calls; return event; }"
    events, metadata = batch("a")
    first = transformer.run(WS, "v-state", code, events, metadata).results[0].outputs[0]["calls"]
    second = transformer.run(WS, "v-state", code, events, metadata).results[0].outputs[0]["calls"]
    assert (first, second) == (1, 2)


def test_changed_code_under_the_same_version_takes_effect(transformer):
    assert _version(transformer, "v1", V1) == 1
    assert _version(transformer, "v1", V2) == 2
    assert transformer.compilations == 2


def test_new_version_takes_effect(transformer):
    assert _version(transformer, "v1", V1) == 1
    assert _version(transformer, "v2", V2) == 2
    assert _version(transformer, "v1", V1) == 1
    assert transformer.compilations == 2


def test_cache_is_bounded():
    with UserTransformer(max_contexts=2) as runner:
        for version in ("a", "b", "c"):
            _version(runner, version, V1)
        _version(runner, "c", V1)
        assert runner.compilations == 3
        _version(runner, "a", V1)  # evicted earlier: compiled again
        assert runner.compilations == 4


def test_empty_batch(transformer):
    result = transformer.run(WS, "v1", V1, [], [])
    assert result.results == [] and result.batch_error is None


def test_run_file_and_preview():
    code = """
    export function transformEvent(event) {
      if (event.event === "drop") return null;
      if (event.event === "fail") throw new Error("no");
      return event;
    }
    """
    events = [
        {"messageId": "m1", "event": "keep"},
        {"messageId": "m2", "event": "drop"},
        {"messageId": "m3", "event": "fail"},
    ]
    lines = [json.loads(line) for line in format_preview(run_file(code, events), events)]
    assert lines[0] == {"index": 0, "messageId": "m1", "outputs": [events[0]]}
    assert lines[1] == {"index": 1, "messageId": "m2", "dropped": True}
    assert lines[2]["index"] == 2 and lines[2]["error"].startswith("Error: no\n    at transformEvent")
