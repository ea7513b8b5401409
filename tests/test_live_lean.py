"""The completion hook's arguments built lean (llmtrace/otel/lean.py) give the same results.

With llmtrace's hook the only reader of the official OpenAI instrumentation's message objects,
``init()`` replaces its input converter by one that hands the hook the texts directly and its
output converter by one that builds nothing. The texts must be those ``hook.plain_texts`` takes
from the real converter's objects, for chat messages of every shape; a real ``openai`` client
against the loopback provider must export the same span attributes either way; and the
replacement must not happen when anything else could read the messages.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from live.clients import openai_client
from opentelemetry.instrumentation.genai.openai import patch, utils
from opentelemetry.instrumentation.genai.openai.utils import _prepare_input_messages
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_live_hook_fast import _message

from llmtrace.otel import hook, lean

pytest_plugins = ["live.fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ORIGINAL_INPUTS = utils._prepare_input_messages
ORIGINAL_OUTPUTS = patch._prepare_output_messages


def _plain(messages: Any) -> Any:
    return hook.plain_texts(_prepare_input_messages(messages), [], None)


@pytest.mark.parametrize("seed", range(60))
def test_lean_texts_are_the_hooks_texts_of_the_real_messages(seed: int) -> None:
    rng = random.Random(seed)
    messages = [_message(rng) for _ in range(rng.randrange(1, 6))]
    got = lean.plain_chat_texts(messages)
    assert got is None or got == _plain(messages)


def test_lean_texts_cover_plain_chats_and_leave_the_rest() -> None:
    taken = 0
    for seed in range(300):
        rng = random.Random(seed)
        messages = [_message(rng) for _ in range(rng.randrange(1, 4))]
        got = lean.plain_chat_texts(messages)
        if got is not None:
            taken += 1
            assert got == _plain(messages)
    assert taken >= 20  # the random shapes include enough plain-text chats to mean something
    plain = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "bob"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "developer", "content": [{"type": "text", "text": "one", "cache": 1}]},
        {"role": "user", "content": ""},
    ]
    assert lean.plain_chat_texts(plain) == _plain(plain)
    for other in (
        [{"role": "user", "content": []}],  # no parts: the converter drops the message
        [{"role": "assistant", "content": None}],
        [{"role": "assistant", "content": "x", "tool_calls": []}],
        [{"role": "assistant", "content": None, "refusal": "no"}],
        [{"role": "tool", "tool_call_id": "1", "content": "r"}],
        [{"role": "user", "content": [{"text": "untyped"}]}],
        [{"role": "user", "content": "x", "name": 3}],
        ({"role": "user", "content": "x"},),  # not a list
        [],
    ):
        assert lean.plain_chat_texts(other) is None, other


def test_texts_input_builds_the_real_messages_for_any_other_reader() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    texts = lean.plain_chat_texts(messages)
    assert texts is not None
    first = lean.TextsInput(texts, messages, _prepare_input_messages)
    assert first and first.texts == texts
    assert list(first) == _prepare_input_messages(messages)
    second = lean.TextsInput(texts, messages, _prepare_input_messages)
    assert len(second) == 2 and second[1] == _prepare_input_messages(messages)[1]
    assert hook.plain_texts(
        lean.TextsInput(texts, messages, _prepare_input_messages), [], None
    ) == (texts)


def _calls(live: Any, provider: Any, memory: InMemorySpanExporter) -> list[dict[str, Any]]:
    client = openai_client(provider)
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello.", "name": "bob"},
    ]
    client.chat.completions.create(model="gpt-4o", messages=conversation)
    chunks = client.chat.completions.create(
        model="gpt-4o",
        messages=[*conversation, {"role": "assistant", "content": "Hi."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in chunks:
        pass
    with_tool = [*conversation, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]  # fmt: skip
    client.chat.completions.create(model="gpt-4o", messages=with_tool)
    assert live.force_flush()
    spans = [s for s in memory.get_finished_spans() if "gen_ai.usage.cost" in s.attributes]
    memory.clear()
    per_call = ("gen_ai.response.id", "gen_ai.response.time_to_first_chunk")
    return [{k: v for k, v in s.attributes.items() if k not in per_call} for s in spans]


def test_real_openai_calls_export_the_same_attributes_lean_or_not(provider: Any) -> None:
    from llmtrace.otel import _guard
    from llmtrace.otel.setup import init

    _guard.reset()
    memory = InMemorySpanExporter()
    handle = init(exporters="none", span_exporters=[memory], instrument="openai",
                  set_global=False, metrics=False)  # fmt: skip
    assert handle is not None
    try:
        assert utils._prepare_input_messages is not ORIGINAL_INPUTS  # installed
        assert patch._prepare_output_messages is lean._no_outputs
        made: list[Any] = []
        prepare = utils._prepare_input_messages

        def watched(messages: Any) -> Any:
            made.append(prepare(messages))
            return made[-1]

        utils._prepare_input_messages = watched
        lean_spans = _calls(handle, provider, memory)
        utils._prepare_input_messages = prepare
        # the plain chats (one plain, one streamed) took the texts, never built the objects
        assert [type(m) is lean.TextsInput for m in made] == [True, True, False]
        assert [m._built for m in made[:2]] == [False, False]
        lean.uninstall()
        assert utils._prepare_input_messages is ORIGINAL_INPUTS
        full_spans = _calls(handle, provider, memory)
    finally:
        handle.shutdown()
    assert len(lean_spans) == 3
    assert lean_spans == full_spans
    assert all("llmtrace.prompt.input_fingerprint" in s for s in lean_spans)
    assert _guard.error_counts() == {}
    assert utils._prepare_input_messages is ORIGINAL_INPUTS
    assert patch._prepare_output_messages is ORIGINAL_OUTPUTS


def test_not_lean_when_another_reader_may_want_the_messages(
    provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook chained behind llmtrace's, or content capture on: the real converters stay."""
    assert not lean.applicable(hook.FingerprintHook(then=hook.FingerprintHook()))
    assert lean.applicable(hook.FingerprintHook())
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    assert not lean.applicable(hook.FingerprintHook())
    from llmtrace.otel.setup import init

    handle = init(exporters="none", instrument="openai", set_global=False, metrics=False)
    assert handle is not None
    try:
        assert handle.instrumented == ["openai"]
        assert utils._prepare_input_messages is ORIGINAL_INPUTS
        assert patch._prepare_output_messages is ORIGINAL_OUTPUTS
    finally:
        handle.shutdown()
