"""Whole-batch failures at compile time: syntax, exports, imports, top-level throws."""

import pytest

from tests.user_js.events import WS, batch
from transformers.user_js import TransformationError


def _batch_error(transformer, code):
    events, metadata = batch("a", "b")
    result = transformer.run(WS, "v-compile", code, events, metadata)
    assert result.batch_error is not None
    assert [r.error for r in result.results] == [result.batch_error] * 2
    assert all(r.outputs == [] for r in result.results)
    return result.batch_error


def test_syntax_error(transformer):
    error = _batch_error(transformer, "export function transformEvent(event) {\n  return event +;\n}")
    assert error.startswith("SyntaxError: ")
    assert "(base transformation:2)" in error


def test_unfinished_code(transformer):
    error = _batch_error(transformer, "export function transformEvent(event) {\n  return event;\n")
    assert error == "SyntaxError: Unexpected end of input (base transformation:3)"


def test_neither_function(transformer):
    error = _batch_error(transformer, "export function transform(events) { return events; }")
    assert error == "Expected one of transformEvent,transformBatch. Found transform"


def test_both_functions(transformer):
    code = """
    export function transformEvent(event) { return event; }
    export function transformBatch(events) { return events; }
    """
    assert _batch_error(transformer, code) == (
        "Expected one of transformEvent,transformBatch. Found transformEvent,transformBatch"
    )


def test_imports_are_not_available(transformer):
    code = (
        "import { parse } from '@rs/urlParser/v1';\nexport function transformEvent(event) { return event; }"
    )
    assert _batch_error(transformer, code) == "import from @rs/urlParser/v1 failed. Module not found."


def test_top_level_throw(transformer):
    error = _batch_error(
        transformer, "throw new Error('at load');\nexport function transformEvent(e) { return e; }"
    )
    assert error.startswith("Error: at load\n    at base transformation:1:")


def test_export_list_with_alias(transformer):
    code = "function mine(event) { event.aliased = true; return event; }\nexport { mine as transformEvent };"
    events, metadata = batch("a")
    assert transformer.run(WS, "v1", code, events, metadata).results[0].outputs[0]["aliased"] is True


def test_compile_raises_for_bad_code(transformer):
    with pytest.raises(TransformationError) as info:
        transformer.compile(WS, "v-bad", "function nothing() {}")
    assert info.value.reason == "Expected one of transformEvent,transformBatch. Found none"
    transformer.compile(WS, "v-good", "export function transformEvent(e) { return e; }")
