"""The completion hook's direct path gives the same fingerprints as the general one.

``fingerprint_attributes`` builds the prompt straight from util-genai's objects when every
message is plain text; ``shaped_fingerprint_attributes`` shapes them as util-genai's span
attributes and reads them back (what a span with captured content gives). The inputs are made
by the official OpenAI instrumentation's own converter from chat messages of many shapes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.instrumentation.genai.openai.utils import _prepare_input_messages
from opentelemetry.util.genai.types import FunctionToolDefinition, TextPart

from llmtrace import fingerprint
from llmtrace.otel import hook

ROLES = ["user", "assistant", "system", "developer", "User", " ai ", "model", "tool-ish", ""]
TEXTS = ["", "hi", 'Héllo \u2028 "quoted" \\ back', "x" * 300, '{"json": 1}', "\U0001f600"]


def _message(rng: random.Random) -> dict[str, Any]:
    role = rng.choice(ROLES)
    shape = rng.randrange(6)
    if shape == 0:
        content: Any = rng.choice(TEXTS)
    elif shape == 1:
        content = [{"type": "text", "text": rng.choice(TEXTS)} for _ in range(rng.randrange(3))]
    elif shape == 2:
        content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    elif shape == 3:
        content = [{"type": "text", "text": "see"}, {"type": "image_url",
                   "image_url": {"url": "https://x/y.png"}}]  # fmt: skip
    elif shape == 4:
        role = "assistant"
        content = None
    else:
        content = rng.choice(TEXTS)
    message: dict[str, Any] = {"role": role, "content": content}
    if rng.random() < 0.3:
        message["name"] = rng.choice(["bob", "a b"])
    if role == "assistant" and rng.random() < 0.4:
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "x"}'},
            }  # fmt: skip
        ]
    if role == "tool" or (rng.random() < 0.1):
        message = {"role": "tool", "tool_call_id": "call_1", "content": rng.choice(TEXTS)}
    return message


@pytest.mark.parametrize("seed", range(40))
def test_direct_path_equals_the_shaped_path(seed: int) -> None:
    rng = random.Random(seed)
    messages = [_message(rng) for _ in range(rng.randrange(0, 7))]
    inputs = _prepare_input_messages(messages)
    system = [TextPart(content=rng.choice(TEXTS)) for _ in range(rng.randrange(3))]
    for args in ((inputs, system, None), (inputs, [], None), ([], system, None)):
        assert hook.fingerprint_attributes(*args) == hook.shaped_fingerprint_attributes(*args)
        _assert_parts_agree(*args)


def _assert_parts_agree(inputs: Any, system: Any, tools: Any) -> None:
    """``fingerprint_parts`` (the live worker's one step) gives what ``fingerprint.fingerprint``
    of ``_direct_prompt``'s prompt and its ``prints_attributes`` give, or None where the direct
    path does not apply; twice, the second time from the hash-chain steps it kept."""
    prompt = hook._direct_prompt(inputs, system) if (inputs or system) and not tools else None
    for _ in range(2):
        got = hook.fingerprint_parts(inputs, system, tools)
        if prompt is None:
            assert got is None
            assert hook.plain_texts(inputs, system, tools) is None or not (inputs or system)
            continue
        fields = fingerprint.fingerprint(prompt)
        assert got == (fields, hook.prints_attributes(fields))
        assert hook.fingerprint_fields(inputs, system, tools) == fields
        # what the hook stashes for the worker: texts only, the same fingerprints from them
        texts = hook.plain_texts(inputs, system, tools)
        assert texts is not None and _only_text(texts[1:])
        assert hook.prompt_parts(texts) == got == hook.prompt_parts((inputs, system, tools))
        assert hook.prompt_attributes(texts) == hook.fingerprint_attributes(inputs, system, tools)


def _only_text(value: Any) -> bool:
    if type(value) is tuple:
        return all(_only_text(item) for item in value)
    return value is None or type(value) is str


def test_direct_path_is_taken_for_text_messages() -> None:
    inputs = _prepare_input_messages(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    )
    prompt = hook._direct_prompt(inputs, [])
    assert prompt is not None
    assert prompt.system == ["Be brief."]
    assert prompt.messages == [{"name": None, "role": "user", "content": "Hello"}]
    attrs = hook.fingerprint_attributes(inputs, [], None)
    assert attrs == hook.shaped_fingerprint_attributes(inputs, [], None)
    assert len(attrs["llmtrace.prompt.prefix_hashes"]) == 2


def test_tools_take_the_shaped_path_and_agree() -> None:
    inputs = _prepare_input_messages([{"role": "user", "content": "Hi"}])
    tools = [FunctionToolDefinition(name="f", description=None, parameters={"type": "object"})]
    got = hook.fingerprint_attributes(inputs, [], tools)
    assert got == hook.shaped_fingerprint_attributes(inputs, [], tools)
    assert got != hook.fingerprint_attributes(inputs, [], None)  # the tools are in the template
    _assert_parts_agree(inputs, [], tools)


@pytest.mark.parametrize(
    "content",
    [
        [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        [{"type": "text", "text": "only"}],
        [],
        "",
    ],
    ids=["two-text-parts", "one-text-part", "no-parts", "empty-text"],
)
def test_text_part_shapes_agree(content: Any) -> None:
    inputs = _prepare_input_messages(
        [{"role": "user", "content": "first"}, {"role": "assistant", "content": content}]
    )
    system = [TextPart(content="s1"), TextPart(content="s2")]
    assert hook._direct_prompt(inputs, system) is not None
    for args in ((inputs, system, None), (inputs, [], None)):
        assert hook.fingerprint_attributes(*args) == hook.shaped_fingerprint_attributes(*args)
        _assert_parts_agree(*args)


def test_named_messages_in_the_stashed_texts_agree() -> None:
    """What the hook stashes (one flat tuple of texts, three items a message) keeps each
    message's role, name and content: named text messages, a multi-part one and system parts
    give the fingerprints of the objects themselves (the random inputs above never have a
    name on an all-text input)."""
    inputs = _prepare_input_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "bob"},
            {"role": "assistant", "content": "Hello", "name": "shop bot"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "name": "bob",
            },
        ]  # fmt: skip
    )
    system = [TextPart(content="rule 1"), TextPart(content="rule 2")]
    texts = hook.plain_texts(inputs, system, None)
    assert texts is not None and len(texts) == 2 + 3 * len(inputs)
    assert texts[2:] == ("system", None, "Be brief.", "user", "bob", "Hi", "assistant",
                         "shop bot", "Hello", "user", "bob", ("a", "b"))  # fmt: skip
    fields = fingerprint.fingerprint(hook._direct_prompt(inputs, system))
    assert hook.prompt_parts(texts) == (fields, hook.prints_attributes(fields))
    assert hook.prompt_attributes(texts) == hook.shaped_fingerprint_attributes(inputs, system, None)
    anonymous = hook.plain_texts(
        _prepare_input_messages([{"role": "user", "content": "Hi"}]), [], None
    )
    named = hook.plain_texts(inputs[1:2], [], None)
    assert hook.prompt_parts(anonymous) != hook.prompt_parts(named)  # the name is hashed
