"""The GenAI completion hook: prompt fingerprints on each LLM span, without the content.

With llmtrace's processor running, the hook only hands the input to it (a dict insert) and the
hashing happens on the processor's worker, which adds the attributes to the exported copy;
without it, the hook sets them on the span itself.

``opentelemetry-util-genai`` calls a completion hook after it has set a call's usage attributes
and before it ends the span, handing it the messages, system instructions and tool definitions
as objects. This hook reduces them to the fingerprints the caching and trimming rules need
(``llmtrace.fingerprint``: hashes of each message-boundary prefix, estimated tokens) and sets
those as span attributes. The content itself is not put on the span: util-genai puts messages on
spans only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it, which
llmtrace sets only when the user opts in (``LLMTRACE_CAPTURE_CONTENT`` / ``capture_content``).

Attributes (names defined in ``llmtrace.fingerprint``, which reads them back; hashes are unsigned
64-bit, so they travel as 16-hex-digit strings; OTel integers are signed):

* ``llmtrace.prompt.prefix_hashes`` - list of hex strings, entry i = template + first i messages
* ``llmtrace.prompt.prefix_tokens`` - list of ints, estimated tokens of each prefix
* ``llmtrace.prompt.template_fingerprint``, ``llmtrace.prompt.input_fingerprint`` - hex strings

Loaded either directly by ``llmtrace.init()`` (``instrument(completion_hook=...)``) or through
the entry point group ``opentelemetry_genai_completion_hook`` under the name ``llmtrace`` with
``OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK=llmtrace``. Only one hook can be configured there,
so when another one is named (e.g. ``upload``) ``init()`` chains it behind this one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from llmtrace import fingerprint
from llmtrace.fingerprint import (
    INPUT_FINGERPRINT_ATTRIBUTE,
    PREFIX_HASHES_ATTRIBUTE,
    PREFIX_TOKENS_ATTRIBUTE,
    TEMPLATE_FINGERPRINT_ATTRIBUTE,
)
from llmtrace.otel import _guard
from llmtrace.otel.lean import TextsInput

HOOK_NAME = "llmtrace"


def _plain(items: Sequence[Any] | None) -> list[Any]:
    """util-genai message objects as the JSON structure it would put on a span.

    The same keys and values ``dataclasses.asdict`` + util-genai's JSON encoder give, without
    asdict's deep copies (this runs for every call).
    """
    if not items:
        return []
    return [_to_plain(item) for item in items]


_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}  # dataclass -> its field names (fields() is slow)


def _to_plain(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _FIELD_NAMES.get(kind)
    if names is not None:
        return {name: _to_plain(getattr(value, name)) for name in names}
    if isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
        return {name: _to_plain(getattr(value, name)) for name in names}
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()  # as util-genai's span encoder does
    return json.loads(json.dumps(value, default=str))


_TEXT_TYPES: tuple[type, ...] = ()  # util-genai's InputMessage and TextPart, once imported
_INPUT_FIELDS = ("role", "parts", "name")


def _text_types() -> tuple[type, ...]:
    """(InputMessage, TextPart) when util-genai has the shapes ``_direct_prompt`` reads."""
    global _TEXT_TYPES
    if not _TEXT_TYPES:
        try:
            from opentelemetry.util.genai.types import InputMessage, TextPart

            shapes = tuple(f.name for f in fields(InputMessage)) == _INPUT_FIELDS and tuple(
                f.name for f in fields(TextPart)
            ) == ("content", "type")
            _TEXT_TYPES = (InputMessage, TextPart) if shapes else (type(None),)
        except Exception:  # noqa: BLE001 - no util-genai, or another shape: the general path
            _TEXT_TYPES = (type(None),)
    return _TEXT_TYPES


def _text_content(parts: Any, text_part: type) -> Any:
    """``fingerprint._content`` of text-only parts (the one text, else the list of texts);
    ``_MISS`` when a part is not plain text."""
    texts = []
    for part in parts:
        if type(part) is not text_part or type(part.content) is not str:
            return _MISS
        texts.append(part.content)
    return texts[0] if len(texts) == 1 else texts


_MISS: Any = object()


def _system_texts(system_instruction: Any, text_part: type) -> tuple[str, ...] | None:
    """The system instruction's texts when every part is util-genai's text part (empty when
    there is none); None for anything else, which takes the general path."""
    if not system_instruction:
        return ()
    if not isinstance(system_instruction, list | tuple):
        return None
    for part in system_instruction:
        if type(part) is not text_part or type(part.content) is not str:
            return None
    return tuple(part.content for part in system_instruction)


def _direct_prompt(
    inputs: Sequence[Any] | None, system_instruction: Sequence[Any] | None
) -> fingerprint.Prompt | None:
    """The ``Prompt`` ``fingerprint.read_prompt`` reads once ``_plain`` has shaped the hook's
    objects as util-genai would put them on a span, built straight from the objects when every
    message and system part is plain text (most calls). None for anything else, which takes
    the general path. Why: shaping every message as JSON structure and reading it back was a
    third of the fingerprint cost; tests/test_live_hook_fast.py checks both give the same."""
    types = _text_types()
    if len(types) != 2:
        return None
    input_message, text_part = types
    messages = []
    for message in inputs or ():
        name = message.name if type(message) is input_message else _MISS
        if name is _MISS or not (name is None or type(name) is str):
            return None
        if type(message.role) is not str or type(message.parts) is not list:
            return None
        content = _text_content(message.parts, text_part)
        if content is _MISS:
            return None
        messages.append(
            {"name": name, "role": fingerprint.canonical_role(message.role), "content": content}
        )
    texts = _system_texts(system_instruction, text_part)
    if texts is None:
        return None
    system: list[Any] = list(texts)
    while messages and messages[0]["role"] == fingerprint.SYSTEM_ROLE:
        system.append(messages.pop(0)["content"])
    return fingerprint.Prompt(system=system, tools=[], messages=messages)


def fingerprint_attributes(
    inputs: Sequence[Any] | None,
    system_instruction: Sequence[Any] | None,
    tool_definitions: Sequence[Any] | None,
) -> dict[str, Any]:
    """Span attributes holding the fingerprints of one call's input (empty when no input).

    The messages are shaped exactly as util-genai would write ``gen_ai.input.messages`` and
    friends, then handed to ``llmtrace.fingerprint``: so a span fingerprinted here and one
    whose content was captured give the same hashes.
    """
    if (inputs or system_instruction) and not tool_definitions:
        prompt = _direct_prompt(inputs, system_instruction)
        if prompt is not None:
            return prints_attributes(_CACHE.fingerprint(prompt))
    return shaped_fingerprint_attributes(inputs, system_instruction, tool_definitions)


def fingerprint_fields(
    inputs: Sequence[Any] | None,
    system_instruction: Sequence[Any] | None,
    tool_definitions: Sequence[Any] | None,
) -> dict[str, Any] | None:
    """``fingerprint.fingerprint`` of one call's input when it is plain text (most calls),
    else None: what the live processor puts in the call record as it is, instead of writing
    the attributes and reading them back (``fingerprint.recorded_fingerprints``)."""
    both = fingerprint_parts(inputs, system_instruction, tool_definitions)
    return None if both is None else both[0]


def fingerprint_parts(
    inputs: Sequence[Any] | None,
    system_instruction: Sequence[Any] | None,
    tool_definitions: Sequence[Any] | None,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(``fingerprint_fields``, ``prints_attributes`` of them) for a plain-text input, else
    None: the live worker's one step per call for both, read straight from util-genai's
    message objects into the hash chain's keys (``_direct_prompt``'s checks and values,
    without its message dicts) and the hex strings kept with each step."""
    if not (inputs or system_instruction):
        return None
    texts = plain_texts(inputs, system_instruction, tool_definitions)
    return None if texts is None else texts_parts(texts)


def plain_texts(
    inputs: Sequence[Any] | None,
    system_instruction: Sequence[Any] | None,
    tool_definitions: Sequence[Any] | None,
) -> tuple[Any, ...] | None:
    """A plain-text input (no tools, every part text) as one flat tuple of its texts:
    ``(PLAIN_TEXTS, system parts, role, name, content, role, name, content, ...)``, three
    items per message, content a str or a tuple of strs; None for any other input.

    Why: the hook hands the call's input to the live worker, which fingerprints it a batch
    later. Kept as util-genai's objects, every call left ~8 message, part and list objects
    alive until then, long enough for the collector to carry them into its older
    generations, whose collections then ran more often and cost more than the
    fingerprints (bench/README.md). A tuple holding only text is let go by the collector at
    its first look; and the texts cannot change after the call. One tuple, not one per
    message inside another: each container made counts towards the collector's next
    collection until it is freed, and these live until the worker's batch.
    """
    if tool_definitions:
        return None
    types = _text_types()
    if len(types) != 2:
        return None
    input_message, text_part = types
    system = _system_texts(system_instruction, text_part)
    if system is None:
        return None
    out: list[Any] = [PLAIN_TEXTS, system]
    for message in inputs or ():
        if type(message) is not input_message:
            return None
        name = message.name
        role = message.role
        if not (name is None or type(name) is str) or type(role) is not str:
            return None
        if type(message.parts) is not list:
            return None
        content = _text_content(message.parts, text_part)
        if content is _MISS:
            return None
        out += (role, name, content if type(content) is str else tuple(content))
    return tuple(out)


PLAIN_TEXTS = "llmtrace.plain-texts"
"""The first item of ``plain_texts``' tuple (a hook input's first item is a sequence)."""


def texts_parts(texts: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``fingerprint_parts`` of ``plain_texts``' tuple: roles made canonical, leading system
    messages moved to the template, as ``_direct_prompt`` does (``_PrefixCache.texts``)."""
    try:
        return _CACHE.texts(texts)
    except TypeError:  # a list where a text or a tuple of texts was meant: keyed item by item
        return _texts_parts(texts)


def _texts_parts(texts: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``texts_parts`` through a list of message tuples and ``_PrefixCache.parts`` (which
    makes each content its own key): any sequence of texts, not only tuples."""
    system_parts = texts[1]
    messages: list[tuple[str, Any, Any]] = []
    canonical_role = fingerprint.canonical_role  # keeps each role name's canonical form itself
    for index in range(2, len(texts), 3):
        messages.append((canonical_role(texts[index]), texts[index + 1], texts[index + 2]))
    system = list(system_parts)
    start = 0
    while start < len(messages) and messages[start][0] == fingerprint.SYSTEM_ROLE:
        system.append(messages[start][2])
        start += 1
    return _CACHE.parts(system, messages[start:] if start else messages)


def prompt_parts(prompt: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``fingerprint_parts`` of what the hook stashed: ``plain_texts``' tuple, or the hook's
    (inputs, system instruction, tool definitions) as util-genai gave them."""
    if prompt[0] is PLAIN_TEXTS:
        return texts_parts(prompt)
    return fingerprint_parts(*prompt)


def prompt_attributes(prompt: tuple[Any, ...]) -> dict[str, Any]:
    """``fingerprint_attributes`` of what the hook stashed (see ``prompt_parts``)."""
    if prompt[0] is PLAIN_TEXTS:
        return texts_parts(prompt)[1]
    return fingerprint_attributes(*prompt)


def _key(content: Any) -> Any:
    """A hashable stand-in for a text message's content (a str, or a list of strs), unlike
    for unlike: a list becomes a tuple, which no str equals."""
    return content if type(content) is str else tuple(content)


class _PrefixCache:
    """``fingerprint.fingerprint`` for plain-text prompts, with each step of its hash chain kept.

    Why: an app sends the same system prompt on every call and an agent or chat the same
    conversation again with one message more; each call re-serialised and re-hashed every
    message of it (canonical JSON and blake2b per prefix, ~2/3 of the fingerprint cost). The
    chain is keyed by what each step hashes: the template's system texts, then (the digest so
    far, the message's role, name and text). Same inputs, same digests and token estimates, so
    the fields are identical (tests/test_live_fast_paths.py). The keys hold the app's texts, so
    the cache is bounded by their length as well as by their number (emptied when either is
    full) and a text longer than ``max_text`` is hashed every time, never kept.
    """

    def __init__(
        self, limit: int = 8192, max_chars: int = 8_000_000, max_text: int = 1_000_000
    ) -> None:
        self._limit = limit
        self._max_chars = max_chars
        self._max_text = max_text
        self._chars = 0  # characters of text the keys hold
        self._steps: dict[Any, tuple[bytes, int, str, int]] = {}  # key -> _step

    def _keep(self, key: Any, step: tuple[bytes, int, str, int], chars: int) -> None:
        if chars > self._max_text:
            return
        if len(self._steps) >= self._limit or self._chars + chars > self._max_chars:
            self._steps.clear()
            self._chars = 0
        self._steps[key] = step
        self._chars += chars

    def fingerprint(self, prompt: fingerprint.Prompt) -> dict[str, Any]:
        if prompt.tools:
            return fingerprint.fingerprint(prompt)
        messages = [(m["role"], m["name"], m["content"]) for m in prompt.messages]
        return self.parts(prompt.system, messages)[0]

    def _template_step(self, key: Any, system: Any) -> tuple[Any, ...]:
        """The kept hash step of a prompt's template (its ``system`` texts, no tools), made
        and kept on first sight: ``parts`` and ``texts`` both start their chain here."""
        step = self._steps.get(key)
        if step is None:
            listed = [list(part) if type(part) is tuple else part for part in system]
            template = {"system": listed, "tools": []}
            digest = fingerprint._digest(b"T" + fingerprint.canonical_json(template).encode())
            chars = fingerprint._text_length(listed)
            step = _step(digest, fingerprint.estimate_tokens(chars))
            self._keep(key, step, chars)
        return step

    def parts(
        self, system: list[Any], messages: list[tuple[str, Any, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(fingerprint fields, their span attributes) of a prompt without tools: ``system``
        texts and (canonical role, name, content) per message, as ``fingerprint.fingerprint``
        and ``prints_attributes`` give them."""
        steps = self._steps
        step = self._template_step(("T", *(_key(part) for part in system)), system)
        digest, tokens, first, number = step
        hashes = [number]
        hexes = [first]
        counts = [tokens]
        for role, name, content in messages:
            key = (digest, role, name, _key(content))
            step = steps.get(key)
            if step is None:
                step = self._message_step(key, digest, role, name, content)
            digest = step[0]
            tokens += step[1]
            hashes.append(step[3])
            hexes.append(step[2])
            counts.append(tokens)
        return _fields_and_attributes(hashes, hexes, counts, first if system else None)

    def texts(self, texts: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``parts`` of ``plain_texts``' flat tuple, walked in place: roles made canonical and
        leading system messages moved to the template, as ``texts_parts`` did through a list
        of message tuples. Its items are texts or tuples of texts, so they are their own keys
        (``_key`` of each is equal to it)."""
        canonical_role = fingerprint.canonical_role
        end = len(texts)
        index = 2
        system: Any = texts[1]
        while index < end and canonical_role(texts[index]) == fingerprint.SYSTEM_ROLE:
            system = (*system, texts[index + 2])
            index += 3
        steps = self._steps
        step = self._template_step(("T", *system), system)
        digest, tokens, first, number = step
        hashes = [number]
        hexes = [first]
        counts = [tokens]
        for at in range(index, end, 3):
            role = canonical_role(texts[at])
            name = texts[at + 1]
            content = texts[at + 2]
            key = (digest, role, name, content)
            step = steps.get(key)
            if step is None:
                step = self._message_step(key, digest, role, name, content)
            digest = step[0]
            tokens += step[1]
            hashes.append(step[3])
            hexes.append(step[2])
            counts.append(tokens)
        return _fields_and_attributes(hashes, hexes, counts, first if system else None)

    def _message_step(
        self, key: Any, digest: bytes, role: str, name: Any, content: Any
    ) -> tuple[bytes, int, str, int]:
        """The hash-chain step of one message after ``digest``, made and kept under ``key``."""
        if type(content) is tuple:  # plain_texts' parts: measured and hashed as a list
            content = list(content)
        chars = fingerprint._text_length(content)
        message = {"name": name, "role": role, "content": content}
        digest = fingerprint._digest(digest + b"M" + fingerprint.canonical_json(message).encode())
        step = _step(
            digest, fingerprint.MESSAGE_OVERHEAD_TOKENS + fingerprint.estimate_tokens(chars)
        )
        self._keep(key, step, chars + len(name or ""))
        return step


def _step(digest: bytes, tokens: int) -> tuple[bytes, int, str, int]:
    """A kept hash-chain step: the digest, the prefix's token estimate, the digest's hex text
    and its number (what the fields and attributes take, made once per step)."""
    number = int.from_bytes(digest, "big")
    return digest, tokens, f"{number:016x}", number


def _fields_and_attributes(
    hashes: list[int], hexes: list[str], counts: list[int], template: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fingerprint fields and ``prints_attributes`` of one walked hash chain."""
    last = hexes[-1]
    fields = {
        "prefix_hashes": hashes,
        "prefix_tokens": counts,
        "template_fingerprint": template,
        "input_fingerprint": last,
    }
    attributes: dict[str, Any] = {
        PREFIX_HASHES_ATTRIBUTE: hexes,
        PREFIX_TOKENS_ATTRIBUTE: counts.copy(),
        INPUT_FINGERPRINT_ATTRIBUTE: last,
    }
    if template:
        attributes[TEMPLATE_FINGERPRINT_ATTRIBUTE] = template
    return fields, attributes


_CACHE = _PrefixCache()


def shaped_fingerprint_attributes(
    inputs: Sequence[Any] | None,
    system_instruction: Sequence[Any] | None,
    tool_definitions: Sequence[Any] | None,
) -> dict[str, Any]:
    """``fingerprint_attributes`` the general way: the input shaped as util-genai's span
    attributes, read back by ``llmtrace.fingerprint`` (any message or part type)."""
    attrs: dict[str, Any] = {}
    if inputs:
        attrs["gen_ai.input.messages"] = _plain(inputs)
    if system_instruction:
        attrs["gen_ai.system_instructions"] = _plain(system_instruction)
    if tool_definitions:
        attrs["gen_ai.tool.definitions"] = _plain(tool_definitions)
    if not attrs:
        return {}
    return prints_attributes(fingerprint.content_fields(attrs))


def prints_attributes(prints: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes for fingerprint fields (empty when there is no prefix hash)."""
    if prints.get("prefix_hashes") is None:
        return {}
    out: dict[str, Any] = {
        PREFIX_HASHES_ATTRIBUTE: [f"{h:016x}" for h in prints["prefix_hashes"]],
        PREFIX_TOKENS_ATTRIBUTE: [int(t) for t in prints["prefix_tokens"]],
        INPUT_FINGERPRINT_ATTRIBUTE: prints["input_fingerprint"],
    }
    if prints.get("template_fingerprint"):
        out[TEMPLATE_FINGERPRINT_ATTRIBUTE] = prints["template_fingerprint"]
    return out


class FingerprintHook:
    """A ``CompletionHook``: sets fingerprint attributes on the still-open span.

    ``then`` is another hook to call afterwards (the one ``OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK``
    names, when that is not llmtrace), since util-genai accepts only one.
    """

    def __init__(self, then: Any = None, sink: Any = None) -> None:
        self.then = then
        self.sink = sink  # CostSpanProcessor.stash_prompt: fingerprint off the app's thread
        self.calls = 0

    def on_completion(
        self,
        *,
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        system_instruction: Sequence[Any],
        tool_definitions: Sequence[Any] | None = None,
        span: Any = None,
        log_record: Any = None,
    ) -> None:
        try:
            self.calls += 1
            if span is not None and span.is_recording() and (inputs or system_instruction):
                sink = self.sink or _current_sink()
                texts = None
                if type(inputs) is TextsInput:  # lean.py: the texts, without the objects
                    if sink is not None and not system_instruction and not tool_definitions:
                        texts = inputs.texts
                    else:
                        inputs = inputs.built()
                prompt = (inputs, system_instruction, tool_definitions)
                span_id = span.get_span_context().span_id
                if texts is None and sink is not None:
                    texts = plain_texts(*prompt)
                if sink is None or not sink(span_id, texts or prompt):
                    if type(inputs) is TextsInput:
                        prompt = (inputs.built(), system_instruction, tool_definitions)
                    attrs = fingerprint_attributes(*prompt)
                    if attrs:
                        span.set_attributes(attrs)
        except Exception as exc:  # noqa: BLE001 - never into the app
            _guard.swallow("hook.on_completion", exc)
        if self.then is not None:
            try:
                self.then.on_completion(
                    inputs=inputs.built() if type(inputs) is TextsInput else inputs,
                    outputs=outputs,
                    system_instruction=system_instruction,
                    tool_definitions=tool_definitions,
                    span=span,
                    log_record=log_record,
                )
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("hook.chained", exc)


def _current_sink() -> Any:
    """The running ``init()``'s processor, for a hook loaded through the entry point."""
    from llmtrace.otel.setup import current

    handle = current()
    return handle.processor.stash_prompt if handle is not None else None


def completion_hook() -> FingerprintHook:
    """Entry point ``opentelemetry_genai_completion_hook: llmtrace`` (util-genai calls it)."""
    return FingerprintHook()


def load_other_hook(environ: Mapping[str, str]) -> Any:
    """The hook ``OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK`` names, unless that is llmtrace."""
    name = (environ.get("OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK") or "").strip()
    if not name or name == HOOK_NAME:
        return None
    try:
        from opentelemetry.util.genai.completion_hook import load_completion_hook

        hook = load_completion_hook()
        return None if type(hook).__name__ == "_NoOpCompletionHook" else hook
    except Exception as exc:  # noqa: BLE001
        _guard.swallow("hook.load_other", exc)
        return None
