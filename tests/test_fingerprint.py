"""Fingerprints: stable hashes of message-boundary prefixes, the same whichever dialect carried
the messages, and no content unless asked for."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtrace.fingerprint import (
    ContentError,
    canonical_json,
    content_fields,
    estimate_tokens,
)

SYSTEM = "You are a support assistant. Answer in one sentence."
TURNS = [
    ("user", "Where is order 1182?"),
    ("assistant", "It shipped yesterday."),
    ("user", "When will it arrive?"),
]
TOOL = {
    "type": "function",
    "name": "track_order",
    "description": "Look up an order",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
}


def otel(turns=TURNS, system=SYSTEM, tools=(TOOL,), indent=None, sort_keys=False) -> dict:
    """OTel GenAI v1.37+ content attributes (JSON strings, as util-genai writes them)."""
    messages = [{"role": r, "parts": [{"type": "text", "content": c}]} for r, c in turns]
    dump = lambda value: json.dumps(value, indent=indent, sort_keys=sort_keys)  # noqa: E731
    attrs = {"gen_ai.input.messages": dump(messages)}
    if system:
        attrs["gen_ai.system_instructions"] = dump([{"type": "text", "content": system}])
    if tools:
        attrs["gen_ai.tool.definitions"] = dump(list(tools))
    return attrs


def openllmetry(turns=TURNS, system=SYSTEM) -> dict:
    attrs = {}
    messages = ([("system", system)] if system else []) + list(turns)
    for i, (role, content) in enumerate(messages):
        attrs[f"gen_ai.prompt.{i}.role"] = role
        attrs[f"gen_ai.prompt.{i}.content"] = content
    attrs["llm.request.functions.0.name"] = TOOL["name"]
    attrs["llm.request.functions.0.description"] = TOOL["description"]
    attrs["llm.request.functions.0.parameters"] = json.dumps(TOOL["parameters"])
    return attrs


def openinference(turns=TURNS, system=SYSTEM) -> dict:
    attrs = {}
    messages = ([("system", system)] if system else []) + list(turns)
    for i, (role, content) in enumerate(messages):
        attrs[f"llm.input_messages.{i}.message.role"] = role
        attrs[f"llm.input_messages.{i}.message.contents.0.message_content.type"] = "text"
        attrs[f"llm.input_messages.{i}.message.contents.0.message_content.text"] = content
    openai_tool = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
    attrs["llm.tools.0.tool.json_schema"] = json.dumps(openai_tool)
    return attrs


def langfuse(turns=TURNS, system=SYSTEM) -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": r, "content": c} for r, c in turns
    ]
    openai_tool = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
    return {
        "langfuse.observation.input": json.dumps({"messages": messages, "tools": [openai_tool]})
    }


def test_same_prompt_in_every_dialect_gives_the_same_hashes():
    expected = content_fields(otel())
    assert len(expected["prefix_hashes"]) == 1 + len(TURNS)
    for attrs in (openllmetry(), openinference(), langfuse()):
        got = content_fields(attrs)
        assert got["prefix_hashes"] == expected["prefix_hashes"]
        assert got["template_fingerprint"] == expected["template_fingerprint"]
        assert got["prefix_tokens"] == expected["prefix_tokens"]


def test_whitespace_and_key_order_do_not_change_hashes():
    plain = content_fields(otel())
    pretty = content_fields(otel(indent=2, sort_keys=True))
    assert pretty["prefix_hashes"] == plain["prefix_hashes"]
    reordered = otel()
    messages = json.loads(reordered["gen_ai.input.messages"])
    reordered["gen_ai.input.messages"] = json.dumps(
        [{"parts": m["parts"], "role": m["role"]} for m in messages]
    )
    assert content_fields(reordered)["prefix_hashes"] == plain["prefix_hashes"]


def test_shared_prefix_shares_hashes_and_a_changed_message_does_not():
    short = content_fields(otel(TURNS[:1]))["prefix_hashes"]
    long = content_fields(otel(TURNS))["prefix_hashes"]
    assert long[:2] == short
    edited = content_fields(otel([TURNS[0], ("assistant", "It shipped today."), TURNS[2]]))
    assert edited["prefix_hashes"][:2] == short
    assert edited["prefix_hashes"][2] != long[2]
    other_system = content_fields(otel(system="You are a pirate."))
    assert other_system["template_fingerprint"] != content_fields(otel())["template_fingerprint"]
    assert set(other_system["prefix_hashes"]).isdisjoint(long)


def test_hashes_follow_the_documented_recipe():
    """Recomputed here from the docstring alone, so a change of recipe cannot go unnoticed."""
    fields = content_fields(otel(TURNS[:1], tools=()))
    template = canonical_json({"system": [SYSTEM], "tools": []}).encode()
    first = hashlib.blake2b(b"T" + template, digest_size=8).digest()
    message = canonical_json({"role": "user", "content": TURNS[0][1]}).encode()
    second = hashlib.blake2b(first + b"M" + message, digest_size=8).digest()
    assert fields["prefix_hashes"] == [int.from_bytes(first, "big"), int.from_bytes(second, "big")]
    assert fields["template_fingerprint"] == first.hex()
    assert fields["input_fingerprint"] == second.hex()
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_prefix_token_estimates():
    fields = content_fields(otel([("user", "x" * 40)], system="y" * 400, tools=()))
    assert fields["prefix_tokens"] == [100, 100 + 4 + 10]
    assert estimate_tokens(0) == 0
    assert estimate_tokens(1) == 1
    assert estimate_tokens(8) == 2


def test_no_template_without_system_or_tools():
    fields = content_fields(otel(system=None, tools=()))
    assert fields["template_fingerprint"] is None
    assert fields["input_fingerprint"] == f"{fields['prefix_hashes'][-1]:016x}"


def test_no_content_means_no_fingerprint():
    fields = content_fields({"gen_ai.usage.input_tokens": 3})
    assert all(value is None for value in fields.values())


def test_content_is_kept_only_when_asked():
    attrs = {
        **otel(),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "Tomorrow."}]}]
        ),
    }
    assert content_fields(attrs)["input_content"] is None
    assert content_fields(attrs)["output_content"] is None
    kept = content_fields(attrs, keep_content=True)
    assert json.loads(kept["input_content"])["messages"][0]["content"] == TURNS[0][1]
    assert json.loads(kept["output_content"]) == [{"role": "assistant", "content": "Tomorrow."}]


def test_v1_26_prompt_and_openllmetry_completion():
    attrs = {"gen_ai.prompt": json.dumps([{"role": "user", "content": "hi"}])}
    assert len(content_fields(attrs)["prefix_hashes"]) == 2
    attrs = {
        "gen_ai.prompt": "just text",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "ok",
    }
    kept = content_fields(attrs, keep_content=True)
    assert json.loads(kept["input_content"])["messages"] == [
        {"role": "user", "content": "just text"}
    ]
    assert json.loads(kept["output_content"]) == [{"role": "assistant", "content": "ok"}]


def test_invalid_json_content_is_hashed_as_text():
    fields = content_fields({"gen_ai.input.messages": '[{"role": "user", "parts": [trunc'})
    assert len(fields["prefix_hashes"]) == 2


def test_recorded_fingerprints_are_read_back():
    source = content_fields(otel())
    attrs = {
        "llmtrace.prompt.prefix_hashes": [f"{h:016x}" for h in source["prefix_hashes"]],
        "llmtrace.prompt.prefix_tokens": source["prefix_tokens"],
        "llmtrace.prompt.template_fingerprint": source["template_fingerprint"],
        "llmtrace.prompt.input_fingerprint": source["input_fingerprint"],
    }
    assert content_fields(attrs) == {**source, "input_content": None, "output_content": None}
    with pytest.raises(ContentError, match="llmtrace.prompt.prefix_hashes"):
        content_fields({"llmtrace.prompt.prefix_hashes": ["not-hex"]})
    with pytest.raises(ContentError, match="llmtrace.prompt.prefix_tokens"):
        content_fields(
            {"llmtrace.prompt.prefix_hashes": ["00ff"], "llmtrace.prompt.prefix_tokens": [1, 2]}
        )


def test_tuple_attributes_read_like_lists():
    """SDK spans hold sequence attributes as tuples, OTLP decoders as lists: same fields."""
    source = content_fields(otel())
    hashes = [f"{h:016x}" for h in source["prefix_hashes"]]
    as_lists = {
        "llmtrace.prompt.prefix_hashes": hashes,
        "llmtrace.prompt.prefix_tokens": source["prefix_tokens"],
    }
    as_tuples = {key: tuple(value) for key, value in as_lists.items()}
    assert content_fields(as_tuples) == content_fields(as_lists)
    assert content_fields(as_tuples)["prefix_hashes"] == source["prefix_hashes"]
    tools = {"gen_ai.input.messages": "[]", "gen_ai.tool.definitions": [json.dumps(TOOL)] * 2}
    tuple_tools = {**tools, "gen_ai.tool.definitions": tuple(tools["gen_ai.tool.definitions"])}
    assert content_fields(tuple_tools) == content_fields(tools)
    assert content_fields(tools)["template_fingerprint"] is not None


roles = st.sampled_from(["user", "assistant", "tool"])
texts = st.text(max_size=60)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(roles, texts), max_size=8), st.text(max_size=40))
def test_hash_properties(turns, system):
    fields = content_fields(otel(turns, system=system or None, tools=()))
    hashes, counts = fields["prefix_hashes"], fields["prefix_tokens"]
    assert len(hashes) == len(counts) == len(turns) + 1
    assert all(0 <= h < 2**64 for h in hashes)
    assert counts == sorted(counts)
    assert content_fields(otel(turns, system=system or None, tools=(), indent=1)) == fields
    if turns or system:  # a call with no message at all has nothing to compare
        same = content_fields(otel(turns, system=system or None, tools=({**TOOL},)))
        assert content_fields(openllmetry(turns, system=system or None)) == same


def test_canonical_json_is_json_dumps_with_the_documented_options():
    """canonical_json reuses one C encoder (issue 15): the bytes must stay json.dumps's, for
    every kind of value a span attribute or a parsed message can hold."""
    values = [
        "plain",
        "é \u202e \x00 \ud800",
        0,
        -(2**70),
        1.0,
        -0.0,
        1e16,
        2.5e-324,
        float("nan"),
        float("inf"),
        None,
        True,
        [],
        {},
        [1, "a", None, [2.5, {"z": 1, "a": [True]}]],
        {"b": {"d": 1, "c": 2}, "a": ["x", {"é": 1}]},
        {"role": "user", "content": [{"type": "image", "url": "u"}, "text"]},
    ]
    for value in values:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical_json(value) == expected
    for bad in ({1: "a", "b": 2}, {"a": object()}):
        with pytest.raises(TypeError):
            canonical_json(bad)
