"""Prompt fingerprints: repeated prefixes and growing histories, without keeping what users wrote.

Content never leaves this module. Callers hand in a span's attributes and get back hashes and
token estimates (and, only when the user asked with ``--keep-content``, canonical JSON content).

Where content comes from (first source present wins, so one call is never read twice):

* OTel GenAI (v1.37+): ``gen_ai.system_instructions``, ``gen_ai.input.messages``,
  ``gen_ai.tool.definitions``, ``gen_ai.output.messages`` (JSON strings or structured values).
* OpenLLMetry: ``gen_ai.prompt.{i}.role`` / ``.content``, ``gen_ai.completion.{i}.*``, tools in
  ``llm.request.functions.{i}.name`` / ``.description`` / ``.parameters``.
* OpenInference: ``llm.input_messages.{i}.message.role`` / ``.content`` (or
  ``.contents.{j}.message_content.text``), ``llm.output_messages.{i}.*``,
  tools in ``llm.tools.{i}.tool.json_schema``.
* OTel GenAI v1.26: ``gen_ai.prompt`` / ``gen_ai.completion`` (a JSON message list or text).
* Langfuse: ``langfuse.observation.input`` / ``.output`` (a message list, ``{"messages": [...],
  "tools": [...]}``, or text).

What is hashed, exactly
-----------------------
Each message becomes ``{"role": ROLE, "content": CONTENT, ...other message keys}`` where ROLE is
lower-cased (``model``/``ai`` -> ``assistant``, ``human`` -> ``user``, ``developer`` ->
``system``) and CONTENT is the text when the message is one text part (OTel ``{"type": "text",
"content": ...}``, OpenAI ``{"type": "text", "text": ...}`` or a plain string), else the list of
parts with text parts reduced to their text. Leading system messages (or
``gen_ai.system_instructions``) and the tool definitions (each reduced to ``name``,
``description``, ``parameters``) form the *template* ``{"system": [texts], "tools": [tools]}``.
Everything is serialised as canonical JSON: ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in UTF-8 (the stdlib, so bytes are the same on every machine), which makes
whitespace and key order in the source JSON irrelevant.

* ``prefix_hashes[0]`` = blake2b-64(b"T" + template); ``prefix_hashes[i]`` =
  blake2b-64(prefix_hashes[i-1] as 8 big-endian bytes + b"M" + message[i-1]). So entry i
  identifies the template plus the first i messages, and two calls share entry i exactly when
  they share that prefix. Values are unsigned 64-bit integers (the record's UInt64 list).
* ``template_fingerprint`` = hex of ``prefix_hashes[0]``; null when there are neither system
  instructions nor tools (an empty template says nothing about which prompt it was).
* ``input_fingerprint`` = hex of the last prefix hash (the whole input).
* ``prefix_tokens[i]`` = estimated tokens of that prefix: ``ceil(chars / 4)`` of the system text
  and of the canonical tool JSON, then per message ``4 + ceil(chars / 4)`` where chars is the text
  length (or the canonical JSON length of non-text parts). Four characters per token is OpenAI's
  published rule of thumb for English; 4 tokens covers per-message framing. It is an estimate for
  sizing prefixes, not a bill.

Hashes of short, guessable messages can be confirmed by someone who guesses them; the hashes are
unsalted on purpose so the same prefix matches across services and machines.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

# Attributes whose presence means a span carries input content (checked before any parsing).
INPUT_MARKERS: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
    "gen_ai.prompt.0.role",
    "gen_ai.prompt.0.content",
    "llm.input_messages.0.message.role",
    "llm.input_messages.0.message.content",
    "gen_ai.prompt",
    "langfuse.observation.input",
)
OUTPUT_MARKERS: tuple[str, ...] = (
    "gen_ai.output.messages",
    "gen_ai.completion.0.role",
    "gen_ai.completion.0.content",
    "llm.output_messages.0.message.role",
    "llm.output_messages.0.message.content",
    "gen_ai.completion",
    "langfuse.observation.output",
)

# Fingerprints already computed where the call happened (llmtrace's completion hook writes them
# instead of content): hex strings, read back as they are.
PREFIX_HASHES_ATTRIBUTE = "llmtrace.prompt.prefix_hashes"
PREFIX_TOKENS_ATTRIBUTE = "llmtrace.prompt.prefix_tokens"
TEMPLATE_FINGERPRINT_ATTRIBUTE = "llmtrace.prompt.template_fingerprint"
INPUT_FINGERPRINT_ATTRIBUTE = "llmtrace.prompt.input_fingerprint"


class ContentError(ValueError):
    """A fingerprint attribute that cannot be read; the message names it."""


_INPUT_MARKER_SET = frozenset(INPUT_MARKERS)
_OUTPUT_MARKER_SET = frozenset(OUTPUT_MARKERS)
_ROLE_ALIASES = {"model": "assistant", "ai": "assistant", "human": "user", "developer": "system"}
_SYSTEM = "system"
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4

EMPTY_FIELDS: dict[str, Any] = {
    "prefix_hashes": None,
    "prefix_tokens": None,
    "template_fingerprint": None,
    "input_fingerprint": None,
    "input_content": None,
    "output_content": None,
}


@dataclass
class Prompt:
    """Normalised input: template parts and the conversation, in canonical shape."""

    system: list[Any]
    tools: list[Any]
    messages: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Canonical form
# --------------------------------------------------------------------------------------------


# One encoder for every call: json.dumps with options builds a new encoder each time.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# ... and JSONEncoder.encode builds its C encoder on every call: build it once (no circular
# check: values come from JSON text or span attributes, which cannot hold cycles)
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, True
    )
)


def canonical_json(value: Any) -> str:
    """The one serialisation everything is hashed in (stdlib json, sorted keys, no spaces);
    the same bytes as ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``."""
    if _C_ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def _maybe_json(value: Any) -> Any:
    """Parse a JSON-looking string attribute; a tuple becomes a list; anything else (or invalid
    JSON) is returned as is.

    The OpenTelemetry SDK stores sequence attributes as tuples where an OTLP decoder yields
    lists; both must read (and hash) alike, so the difference ends here.
    """
    if isinstance(value, str) and value[:1] in ("[", "{"):
        decode = _DECODE or msgspec_decoder()
        if decode is not None:
            try:
                return decode(value)
            except Exception:  # noqa: BLE001, S110 - json below decides, as it always did
                pass
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, tuple):
        return list(value)
    return value


def msgspec_decoder() -> Any:
    """msgspec's JSON decoder where msgspec is loaded (the importer loads it, and the live
    store exporter's spool; nothing loads it for this), else None. Also read by
    ``dialect_values._json_object`` (Langfuse's cost details on every priced span).

    Why: the content attributes of OTel GenAI are JSON text, and ``json.loads`` was a third
    of their fingerprint's cost; msgspec's decoder takes a quarter of its time. Where msgspec
    accepts a text it gives what ``json.loads`` gives (strict JSON, floats correctly rounded,
    integers of any size, the last of two equal keys); what it refuses (NaN, Infinity, numbers
    beyond a double, lone surrogate escapes, too deep nesting) goes to ``json.loads`` as before,
    which accepts it or raises as it did (tests/test_import_fingerprints.py)."""
    global _DECODE
    if _DECODE is None:
        module = sys.modules.get("msgspec")
        if module is not None:
            _DECODE = module.json.decode
    return _DECODE


_DECODE: Any = None


def _role(value: Any) -> str:
    if type(value) is str:  # a role seen before: its canonical form, kept (a few names)
        role = _ROLES.get(value)
        if role is not None:
            return role
    role = str(value or "user").strip().lower()
    role = _ROLE_ALIASES.get(role, role)
    if type(value) is str and len(_ROLES) < 256:
        _ROLES[value] = role
    return role


_ROLES: dict[str, str] = {}  # a role as a span gives it -> _role of it


canonical_role = _role  # for the live hook's direct path (llmtrace.otel.hook._direct_prompt)
SYSTEM_ROLE = _SYSTEM


def _part(part: Any) -> Any:
    """A text part becomes its text; other parts stay as they are (canonical JSON later)."""
    if isinstance(part, str):
        return part
    if isinstance(part, Mapping):
        kind = part.get("type", "text")
        if kind == "text":
            for key in ("content", "text"):
                if isinstance(part.get(key), str):
                    return part[key]
        return dict(part)
    return part


def _content(value: Any) -> Any:
    if isinstance(value, list):
        parts = [_part(p) for p in value]
        if len(parts) == 1 and isinstance(parts[0], str):
            return parts[0]
        return parts
    if value is None or isinstance(value, str):
        return value or ""
    return _part(value)


_NO_BODY: Any = object()


def _message(raw: Any) -> dict[str, Any]:
    """One message in canonical shape, from the OTel, OpenAI or Langfuse message forms."""
    if not isinstance(raw, Mapping):
        return {"role": "user", "content": _content(raw)}
    if type(raw) is dict and len(raw) == 2 and "role" in raw:  # the common shapes, no copy
        body = raw.get("parts", _NO_BODY)
        if body is _NO_BODY:
            body = raw.get("content", _NO_BODY)
        if body is not _NO_BODY:
            return {"role": _role(raw["role"]), "content": _content(body)}
    message = {k: v for k, v in raw.items() if k not in ("role", "content", "parts")}
    message["role"] = _role(raw.get("role"))
    body = raw.get("parts") if "parts" in raw else raw.get("content")
    message["content"] = _content(body)
    return message


def _tool(raw: Any) -> Any:
    raw = _maybe_json(raw)
    if isinstance(raw, Mapping):
        inner = raw.get("function") if isinstance(raw.get("function"), Mapping) else raw
        return {
            "name": inner.get("name"),
            "description": inner.get("description"),
            "parameters": _maybe_json(inner.get("parameters")),
        }
    return raw


def _text_length(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p) if isinstance(p, str) else len(canonical_json(p)) for p in content)
    return len(canonical_json(content))


def estimate_tokens(chars: int) -> int:
    """Estimated tokens for ``chars`` characters: ceil(chars / 4)."""
    return -(-chars // CHARS_PER_TOKEN)


# --------------------------------------------------------------------------------------------
# Reading messages from span attributes
# --------------------------------------------------------------------------------------------


def _openinference_content(attrs: Mapping[str, Any], base: str) -> Any:
    if f"{base}content" in attrs:
        return attrs[f"{base}content"]
    parts = []
    index = 0
    while f"{base}contents.{index}.message_content.text" in attrs:
        parts.append(
            {"type": "text", "text": attrs[f"{base}contents.{index}.message_content.text"]}
        )
        index += 1
    return parts


def _indexed_messages(attrs: Mapping[str, Any], prefix: str, suffix: str) -> list[dict[str, Any]]:
    """Messages at indices 0, 1, ... while ``{prefix}{i}{suffix}`` has a role, a content or
    OpenInference's first content part (no scan of all keys); each is what ``_message`` makes
    of ``{"role", "content"}``, without the dict it copies."""
    messages = []
    index = 0
    while True:
        base = f"{prefix}{index}{suffix}"
        role_key = base + "role"
        content_key = base + "content"
        if content_key in attrs:
            content = attrs[content_key]
        elif role_key in attrs or base + "contents.0.message_content.text" in attrs:
            content = _openinference_content(attrs, base)
        else:
            return messages
        messages.append({"role": _role(attrs.get(role_key)), "content": _content(content)})
        index += 1


def _indexed_tools(attrs: Mapping[str, Any]) -> list[Any]:
    tools = []
    index = 0
    while f"llm.request.functions.{index}.name" in attrs:  # OpenLLMetry
        base = f"llm.request.functions.{index}."
        tools.append(
            _tool(
                {
                    "name": attrs.get(f"{base}name"),
                    "description": attrs.get(f"{base}description"),
                    "parameters": attrs.get(f"{base}parameters"),
                }
            )
        )
        index += 1
    index = 0
    while f"llm.tools.{index}.tool.json_schema" in attrs:  # OpenInference
        tools.append(_tool(attrs[f"llm.tools.{index}.tool.json_schema"]))
        index += 1
    return tools


def _message_list(value: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages (and tools, for Langfuse's ``{"messages", "tools"}``) from a JSON attribute."""
    value = _maybe_json(value)
    if isinstance(value, Mapping) and isinstance(value.get("messages"), list):
        return [_message(m) for m in value["messages"]], [
            _tool(t) for t in value.get("tools") or []
        ]
    if isinstance(value, list):
        return [_message(m) for m in value], []
    return [_message(value)], []


def _system_parts(value: Any) -> list[Any]:
    value = _maybe_json(value)
    items = value if isinstance(value, list) else [value]
    return [_part(item) for item in items]


def read_prompt(attrs: Mapping[str, Any]) -> Prompt | None:
    """The span's input as a ``Prompt``, or None when it carries no input content."""
    system: list[Any] = []
    tools = [_tool(t) for t in _as_list(attrs.get("gen_ai.tool.definitions"))]
    if "gen_ai.input.messages" in attrs or "gen_ai.system_instructions" in attrs:
        messages, _ = _message_list(attrs.get("gen_ai.input.messages") or [])
        if attrs.get("gen_ai.system_instructions") is not None:
            system = _system_parts(attrs["gen_ai.system_instructions"])
    elif "gen_ai.prompt.0.role" in attrs or "gen_ai.prompt.0.content" in attrs:
        messages = _indexed_messages(attrs, "gen_ai.prompt.", ".")
    elif "llm.input_messages.0.message.role" in attrs or (
        "llm.input_messages.0.message.content" in attrs
    ):
        messages = _indexed_messages(attrs, "llm.input_messages.", ".message.")
    elif attrs.get("gen_ai.prompt") is not None:
        messages, _ = _message_list(attrs["gen_ai.prompt"])
    elif attrs.get("langfuse.observation.input") is not None:
        messages, more_tools = _message_list(attrs["langfuse.observation.input"])
        tools += more_tools
    elif tools:
        messages = []
    else:
        return None
    tools += _indexed_tools(attrs)
    while messages and messages[0]["role"] == _SYSTEM:
        system.append(messages.pop(0)["content"])
    return Prompt(system=system, tools=tools, messages=messages)


def read_output(attrs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The span's output messages in canonical shape, or None when it carries none."""
    if attrs.get("gen_ai.output.messages") is not None:
        return _message_list(attrs["gen_ai.output.messages"])[0]
    if "gen_ai.completion.0.role" in attrs or "gen_ai.completion.0.content" in attrs:
        return _indexed_messages(attrs, "gen_ai.completion.", ".")
    if "llm.output_messages.0.message.role" in attrs or (
        "llm.output_messages.0.message.content" in attrs
    ):
        return _indexed_messages(attrs, "llm.output_messages.", ".message.")
    for key in ("gen_ai.completion", "langfuse.observation.output"):
        if attrs.get(key) is not None:
            return _message_list(attrs[key])[0]
    return None


def _as_list(value: Any) -> list[Any]:
    value = _maybe_json(value)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def _template_step(system: list[Any], tools: list[Any]) -> tuple[bytes, int]:
    """(digest, token estimate) of the template: ``prefix_hashes[0]``'s bytes and
    ``prefix_tokens[0]``. Kept per system texts when there are no tools (an app sends the same
    system prompt on every call): the same bytes are hashed, so the same values."""
    global _TEMPLATE_CHARS
    key = None
    if not tools and all(type(part) is str for part in system):
        key = tuple(system)
        step = _TEMPLATES.get(key)
        if step is not None:
            return step
    template = {"system": system, "tools": tools}
    digest = _digest(b"T" + canonical_json(template).encode())
    tokens = estimate_tokens(_text_length(system)) + (
        estimate_tokens(len(canonical_json(tools))) if tools else 0
    )
    if key is not None:
        chars = sum(map(len, key))
        if chars <= _TEMPLATE_MAX_TEXT:
            if len(_TEMPLATES) >= _TEMPLATE_LIMIT or _TEMPLATE_CHARS + chars > _TEMPLATE_MAX_CHARS:
                _TEMPLATES.clear()
                _TEMPLATE_CHARS = 0
            _TEMPLATES[key] = (digest, tokens)
            _TEMPLATE_CHARS += chars
    return digest, tokens


# System texts -> template step, bounded by count and by the characters the keys hold.
_TEMPLATES: dict[tuple[str, ...], tuple[bytes, int]] = {}
_TEMPLATE_CHARS = 0
_TEMPLATE_LIMIT = 1024
_TEMPLATE_MAX_CHARS = 2_000_000
_TEMPLATE_MAX_TEXT = 200_000


def _message_step(digest: bytes, message: Any) -> tuple[bytes, int]:
    """(the next prefix hash's bytes, the message's token estimate with its framing).

    A message of a text role and a text content only (most) is written directly: keys in
    sorted order, each string as the encoder writes it (the same C ``encode_basestring`` it
    calls), so the same bytes; and its step is kept per (digest so far, role, text): a chat or
    an agent sends its history again with one message more, and the steps it shares were
    hashed before (the same bytes hashed, so the same values)."""
    if type(message) is dict and len(message) == 2:
        content = message.get("content")
        role = message.get("role")
        if type(content) is str and type(role) is str:
            key = (digest, role, content)
            step = _STEPS.get(key)
            if step is not None:
                return step
            text = '{"content":' + _STRING(content) + ',"role":' + _STRING(role) + "}"
            step = (
                _digest(digest + b"M" + text.encode()),
                MESSAGE_OVERHEAD_TOKENS + estimate_tokens(len(content)),
            )
            _keep_step(key, step, len(content))
            return step
    data = canonical_json(message).encode()
    chars = _text_length(message["content"])
    return _digest(digest + b"M" + data), MESSAGE_OVERHEAD_TOKENS + estimate_tokens(chars)


def _keep_step(key: tuple[bytes, str, str], step: tuple[bytes, int], chars: int) -> None:
    global _STEP_CHARS
    if chars > _STEP_MAX_TEXT:
        return
    if len(_STEPS) >= _STEP_LIMIT or _STEP_CHARS + chars > _STEP_MAX_CHARS:
        _STEPS.clear()
        _STEP_CHARS = 0
    _STEPS[key] = step
    _STEP_CHARS += chars


# (digest so far, role, text) -> message step; bounded by count and by the characters kept.
_STEPS: dict[tuple[bytes, str, str], tuple[bytes, int]] = {}
_STEP_CHARS = 0
_STEP_LIMIT = 16384
_STEP_MAX_CHARS = 4_000_000
_STEP_MAX_TEXT = 200_000
_STRING = encode_basestring  # what the canonical encoder writes a str as (ensure_ascii=False)


def fingerprint(prompt: Prompt) -> dict[str, Any]:
    """Prefix hashes, prefix token estimates, template and input fingerprints of ``prompt``."""
    digest, tokens = _template_step(prompt.system, prompt.tools)
    hashes = [int.from_bytes(digest, "big")]
    counts = [tokens]
    for message in prompt.messages:
        digest, added = _message_step(digest, message)
        tokens += added
        hashes.append(int.from_bytes(digest, "big"))
        counts.append(tokens)
    has_template = bool(prompt.system or prompt.tools)
    return {
        "prefix_hashes": hashes,
        "prefix_tokens": counts,
        "template_fingerprint": f"{hashes[0]:016x}" if has_template else None,
        "input_fingerprint": f"{hashes[-1]:016x}",
    }


def content_fields(attrs: Mapping[str, Any], *, keep_content: bool = False) -> dict[str, Any]:
    """Fingerprint fields for a span's attributes (all null when it carries no content).

    With ``keep_content`` also ``input_content`` (canonical JSON of ``{"system", "tools",
    "messages"}``) and ``output_content`` (canonical JSON of the output messages).
    """
    if _INPUT_MARKER_SET.isdisjoint(attrs) and (
        not keep_content or _OUTPUT_MARKER_SET.isdisjoint(attrs)
    ):
        if PREFIX_HASHES_ATTRIBUTE in attrs:
            return {**EMPTY_FIELDS, **recorded_fingerprints(attrs)}
        return dict(EMPTY_FIELDS)
    fields = dict(EMPTY_FIELDS)
    prompt = read_prompt(attrs)
    if prompt is not None:
        fields.update(fingerprint(prompt))
    if keep_content:
        if prompt is not None:
            fields["input_content"] = canonical_json(
                {"system": prompt.system, "tools": prompt.tools, "messages": prompt.messages}
            )
        output = read_output(attrs)
        if output is not None:
            fields["output_content"] = canonical_json(output)
    return fields


def recorded_fingerprints(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Fingerprint fields from the ``llmtrace.prompt.*`` attributes a live app recorded.

    Raises ``ContentError`` naming the attribute when a value is not what llmtrace writes
    (hex hashes, integer token counts of the same length).

    Read for every call the live store exporter spools (the hook wrote them as lists): a list
    or tuple is taken as ``_as_list`` takes it without the call, and the range checks are
    ``min``/``max`` over the ints rather than a generator each (0.3 us of 1.4 a call; the same
    errors: tests/test_import_fingerprints.py holds it to the frozen reference).
    """
    raw = attrs.get(PREFIX_HASHES_ATTRIBUTE)
    kind = type(raw)
    hashes = raw if kind is list else list(raw) if kind is tuple else _as_list(raw)
    try:
        values = [int(h, 16) for h in hashes]
    except (TypeError, ValueError):
        raise ContentError(f"{PREFIX_HASHES_ATTRIBUTE}: expected 16-digit hex strings") from None
    if not values or min(values) < 0 or max(values) >= _HASH_END:
        raise ContentError(f"{PREFIX_HASHES_ATTRIBUTE}: expected 16-digit hex strings")
    tokens = attrs.get(PREFIX_TOKENS_ATTRIBUTE)
    counts = None
    if tokens is not None:
        kind = type(tokens)
        items = tokens if kind is list else list(tokens) if kind is tuple else _as_list(tokens)
        try:
            counts = [int(t) for t in items]
        except (TypeError, ValueError):
            raise ContentError(f"{PREFIX_TOKENS_ATTRIBUTE}: expected integers") from None
        # as long as ``values`` (never empty here): min() has a count to look at
        if len(counts) != len(values) or min(counts) < 0:
            raise ContentError(
                f"{PREFIX_TOKENS_ATTRIBUTE}: expected one count >= 0 per prefix hash"
            )
    template = attrs.get(TEMPLATE_FINGERPRINT_ATTRIBUTE)
    return {
        "prefix_hashes": values,
        "prefix_tokens": counts,
        "template_fingerprint": None if template is None else str(template),
        "input_fingerprint": str(attrs.get(INPUT_FINGERPRINT_ATTRIBUTE) or f"{values[-1]:016x}"),
    }


_HASH_END = 1 << 64  # a prefix hash is a 64-bit digest


def step_fingerprint(*parts: Any) -> str:
    """Hex blake2b-64 of what one agent step consumed: a typed prompt, or a tool call with its
    arguments and result (canonical JSON of ``parts``, never kept). Equal values within one
    session mean the agent did the same thing and read the same answer again (LT503)."""
    data = canonical_json(list(parts)).encode("utf-8", "surrogatepass")
    return _digest(data).hex()
