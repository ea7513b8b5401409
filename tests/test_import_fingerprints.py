"""Content fingerprints after issue 15's shortcuts are byte for byte what they were.

``llmtrace.fingerprint`` now writes text messages' canonical JSON directly, keeps the template
step per system texts and each message step per (digest so far, role, text), reads the
common message shapes without copying them, and reads JSON text with msgspec's decoder where
msgspec is loaded (``json.loads`` where it refuses the text). The import and the live path store these values,
so any difference would split prefixes that used to match. Every case here runs through the
code as it was (tests/fingerprint_reference.py, frozen at 8d3ae20) and the code as it is, twice
(the second time from the caches), and compares the fields, or the exception's type and text.
"""

from __future__ import annotations

import json
import random
from types import MappingProxyType
from typing import Any

import fingerprint_reference as reference
import pytest
from test_import_equivalence import _corpus_spans

from llmtrace import fingerprint

ROLES: list[Any] = ["user", "assistant", "system", "tool", "User ", "MODEL", "ai", "human"]
ROLES += ["developer", "", None, 3, "syst\u00e8me", "\ud800", "x\x00y", "r\u202e"]
TEXTS = ["", "hi", "caf\u00e9 \u2603", 'a\nb\t"q"\\', "\x00\x1f\x7f", "\u202eevil", "\udfff"]
TEXTS += ["x" * 300, "\U0001f600 emoji", "1e300", "{not json", "[1, 2"]


def _text(rng: random.Random) -> str:
    return rng.choice(TEXTS) if rng.random() < 0.7 else f"turn {rng.randint(0, 5)} " * 3


def _content(rng: random.Random) -> Any:
    pick = rng.random()
    if pick < 0.55:
        return _text(rng)
    if pick < 0.7:
        return [{"type": "text", "text": _text(rng)}]
    if pick < 0.8:
        return [{"type": "text", "content": _text(rng)}, {"type": "image", "url": "u"}]
    return rng.choice([None, 3, 2.5, float("nan"), 10**30, True, {"b": 1, "a": [1.0, None]}])


def _message(rng: random.Random) -> Any:
    pick = rng.random()
    role = rng.choice(ROLES)
    if pick < 0.4:
        return {"role": role, "content": _content(rng)}
    if pick < 0.55:
        return {"role": role, "parts": [{"type": "text", "content": _text(rng)}]}
    if pick < 0.65:
        return {"content": _content(rng), "role": role}  # the other key order
    if pick < 0.75:
        return {"role": role, "content": _content(rng), "name": rng.choice(["bob", None, 1])}
    if pick < 0.8:
        return {"role": role, "tool_calls": [{"id": "c1"}]}  # no content at all
    if pick < 0.85:
        return {"content": _content(rng), "name": "x"}  # no role
    if pick < 0.9:
        return _text(rng)
    if pick < 0.95:
        return MappingProxyType({"role": role, "content": _text(rng)})  # a Mapping, not a dict
    return {1: "a", "role": role}  # a key that does not sort with text


# JSON text msgspec's decoder refuses or might read otherwise (json.loads decides them)
ODD_JSON = [
    '[{"role": "user", "content": NaN}]',
    '[{"role": "user", "content": Infinity}, {"role": "user", "content": -1e400}]',
    '[{"role": "user", "content": "\\ud800 lone"}]',
    '[{"role": "user", "content": "\\udc00\\ud800"}]',
    '[{"role": "user", "content": 123456789012345678901234567890}]',
    '[{"role": "user", "content": 1.7976931348623157e309}]',
    '[{"role": "user", "content": 0.1000000000000000055511151231257827}]',
    '[{"role": "a", "role": "b", "content": "last wins"}]',
    '[{"role": "user", "content": "x"}] trailing',
    '[{"role": "user", "content": "tab\tinside"}]',
    '[{"role": "user", "content": "\\ud83d\\ude00"}]',
    '{"messages": [{"role": "user", "content": "\\u00e9"}], "tools": [1e5, -0]}',
    "[" * 3000 + "]" * 3000,
    '[{"role": "user", "content": ' + "1" * 5000 + "}]",
    '[{"role": "user", "content": 1e-400}, {"role": "user", "content": -0.0}]',
    '[{"role": "user", "content": [{"type": "text", "text": "\\u0000"}]}]',
]


def _dumps(value: Any) -> Any:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return value


def _attributes(rng: random.Random) -> dict[str, Any]:
    """One span's content attributes in one of the dialects' shapes, odd values included."""
    messages = [_message(rng) for _ in range(rng.randint(0, 5))]
    system = [_text(rng)] if rng.random() < 0.5 else []
    attrs: dict[str, Any] = {}
    kind = rng.randrange(7)
    if kind == 6:  # JSON text of every odd kind, where each JSON attribute is read
        attribute = rng.choice(
            ["gen_ai.input.messages", "gen_ai.prompt", "langfuse.observation.input"]
        )
        attrs[attribute] = rng.choice(ODD_JSON)
        attrs["gen_ai.system_instructions"] = rng.choice(ODD_JSON + [None])
        attrs["gen_ai.output.messages"] = rng.choice(ODD_JSON)
    elif kind == 0:  # OTel GenAI: JSON strings, sometimes structured values or tuples
        attrs["gen_ai.input.messages"] = rng.choice([_dumps, list, tuple])(messages)
        if system or rng.random() < 0.2:
            attrs["gen_ai.system_instructions"] = _dumps(
                [{"type": "text", "content": s} for s in system]
            )
        if rng.random() < 0.3:
            tool = {"name": "t", "description": _text(rng), "parameters": {"type": "object"}}
            attrs["gen_ai.tool.definitions"] = rng.choice([_dumps([tool]), (_dumps(tool),)])
    elif kind in (1, 2):  # OpenLLMetry / OpenInference: indexed attributes
        prefix, middle = (
            ("gen_ai.prompt.", ".")
            if kind == 1
            else (
                "llm.input_messages.",
                ".message.",
            )
        )
        for i, message in enumerate([{"role": "system", "content": s} for s in system] + messages):
            message = message if isinstance(message, dict) else {"content": message}
            if "role" in message or rng.random() < 0.2:
                attrs[f"{prefix}{i}{middle}role"] = message.get("role")
            content = message.get("content")
            if kind == 2 and rng.random() < 0.3:
                attrs[f"{prefix}{i}{middle}contents.0.message_content.text"] = _text(rng)
            else:
                attrs[f"{prefix}{i}{middle}content"] = content if content is not None else ""
        completion = "gen_ai.completion.0." if kind == 1 else "llm.output_messages.0.message."
        attrs[completion + "role"] = "assistant"
        attrs[completion + "content"] = _text(rng)
        if rng.random() < 0.3:
            attrs["llm.request.functions.0.name"] = "f"
            attrs["llm.request.functions.0.parameters"] = '{"type": "object"}'
    elif kind == 3:  # OTel GenAI v1.26: a JSON list or text
        attrs["gen_ai.prompt"] = rng.choice([_dumps(messages), _text(rng)])
        attrs["gen_ai.completion"] = rng.choice([_dumps(messages[:1]), _text(rng)])
    elif kind == 4:  # Langfuse
        body = {"messages": messages, "tools": [{"function": {"name": "f"}}]}
        attrs["langfuse.observation.input"] = _dumps(rng.choice([messages, body, _text(rng)]))
        attrs["langfuse.observation.output"] = _dumps(rng.choice([messages[:1], _text(rng)]))
    else:
        attrs["gen_ai.output.messages"] = _dumps(messages)
        if rng.random() < 0.5:
            attrs["gen_ai.input.messages"] = _dumps(messages)
    return attrs


def _outcome(function: Any, *args: Any, **options: Any) -> Any:
    try:
        return function(*args, **options)
    except Exception as exc:  # noqa: BLE001 - the same failure is part of the same outcome
        return (type(exc).__name__, str(exc))


def _assert_same(cases: list[Any]) -> None:
    for rounds in range(2):  # the second round reads the steps the first one kept
        for attrs in cases:
            for keep in (False, True):
                old = _outcome(reference.content_fields, attrs, keep_content=keep)
                new = _outcome(fingerprint.content_fields, attrs, keep_content=keep)
                assert new == old, (rounds, attrs)


def test_random_and_hostile_content_gives_the_same_fingerprints() -> None:
    assert fingerprint.msgspec_decoder() is not None  # the importer's JSON reading is tested
    rng = random.Random(15)
    cases = [_attributes(rng) for _ in range(1500)]
    kinds = [_outcome(reference.content_fields, a) for a in cases]
    assert sum(isinstance(k, tuple) for k in kinds) > 20  # failures are compared too
    assert sum(isinstance(k, dict) and bool(k["prefix_hashes"]) for k in kinds) > 800
    _assert_same(cases)


def test_the_corpus_gives_the_same_fingerprints() -> None:
    spans = _corpus_spans()
    cases = [span["attributes"] for span in spans]
    assert sum(1 for a in cases if reference.content_fields(a)["prefix_hashes"]) > 50
    _assert_same(cases)


def test_prompts_as_the_live_hook_builds_them_give_the_same_fingerprints() -> None:
    """``fingerprint.fingerprint`` of ``Prompt``s of any shape (the live hook's messages carry
    a name; tools; non-text system parts)."""
    rng = random.Random(3)
    for _ in range(2):
        rng.seed(3)
        for _ in range(600):
            messages = [_message(rng) for _ in range(rng.randint(0, 4))]
            messages = [
                m if isinstance(m, dict) else {"role": "user", "content": m} for m in messages
            ]
            if rng.random() < 0.3:
                messages = [{"name": None, **m} for m in messages]
            system = rng.choice([[], [_text(rng)], [_text(rng), _text(rng)], [{"a": 1}], [3]])
            tools = rng.choice([[], [{"name": "f", "description": None, "parameters": None}]])
            old = _outcome(reference.fingerprint, reference.Prompt(system, tools, messages))
            new = _outcome(fingerprint.fingerprint, fingerprint.Prompt(system, tools, messages))
            assert new == old, (system, tools, messages)


def test_kept_steps_are_told_apart_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same texts split differently, or after another prefix, are other steps; full
    caches are emptied and the values stay the same."""
    monkeypatch.setattr(fingerprint, "_STEP_LIMIT", 3)
    monkeypatch.setattr(fingerprint, "_TEMPLATE_LIMIT", 2)
    monkeypatch.setattr(fingerprint, "_STEP_MAX_TEXT", 50)
    cases = [
        {"gen_ai.prompt.0.role": "system", "gen_ai.prompt.0.content": "ab"},
        {
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "a",
            "gen_ai.prompt.1.role": "system",
            "gen_ai.prompt.1.content": "b",
        },
    ]
    for first in ("a", "b", "c" * 80):
        for second in ("a", "b", "c" * 80):
            for role in ("user", "assistant"):
                cases.append(
                    {
                        "gen_ai.prompt.0.role": role,
                        "gen_ai.prompt.0.content": first,
                        "gen_ai.prompt.1.role": "user",
                        "gen_ai.prompt.1.content": second,
                    }
                )
    _assert_same(cases)
    prints = [fingerprint.content_fields(a)["prefix_hashes"] for a in cases]
    assert len({tuple(p) for p in prints}) == len(prints)
    assert len(fingerprint._STEPS) <= 3 and len(fingerprint._TEMPLATES) <= 2


def test_recorded_fingerprints_read_as_before() -> None:
    """``llmtrace.prompt.*`` attributes as the hook writes them (lists, tuples) and as they
    must not be (JSON text, bad hex, negative or too large hashes, odd counts, lengths that
    differ): the same fields or the same error as the frozen reference."""
    hashes: list[Any] = [["00ff", "0a"], ("ab",), ["ff" * 8, "1" + "0" * 16], ["-1"], ["0x10"]]
    hashes += [[" ab "], ["a_b"], ["zz"], [], (), None, "ab", '["ab", "cd"]', "[1", 5, [5], [None]]
    hashes += [[True], ["ab", 3], ["ab"] * 40, "", {"a": 1}, ("ab", "ff")]
    tokens: list[Any] = [None, [1, 2], (3,), [1], [1, 2, 3], ["1", "2"], [1.5, 2.9], [-1, 2]]
    tokens += [[True, False], ["x", 1], "[1, 2]", 7, [], (), [0, 0], [2**70, 1], [None, 1]]
    cases = []
    for hash_value in hashes:
        for token_value in tokens:
            attrs: dict[str, Any] = {"llmtrace.prompt.prefix_hashes": hash_value}
            if token_value is not None:
                attrs["llmtrace.prompt.prefix_tokens"] = token_value
            cases.append(attrs)
    rng = random.Random(8)
    for attrs in cases[::3]:
        attrs["llmtrace.prompt.template_fingerprint"] = rng.choice(["ab", 5, ""])
        attrs["llmtrace.prompt.input_fingerprint"] = rng.choice(["cd", "", 0, None])
    kinds = [_outcome(reference.content_fields, a) for a in cases]
    assert sum(isinstance(k, tuple) for k in kinds) > 100
    assert sum(isinstance(k, dict) and k["prefix_tokens"] is not None for k in kinds) > 20
    for attrs in cases:
        old = _outcome(reference.recorded_fingerprints, attrs)
        new = _outcome(fingerprint.recorded_fingerprints, attrs)
        assert repr(new) == repr(old), attrs
    _assert_same(cases)
