"""The official OpenAI instrumentation's completion-hook arguments, made lean while llmtrace's
hook is their only reader.

Why: util-genai builds a chat call's input and output message objects only because a completion
hook is set (``TelemetryHandler.should_capture_content`` is true for a hook alone), on the app's
thread: ``_prepare_input_messages`` ~4 µs and ``_prepare_output_messages`` ~2 µs a call
(bench/README.md). With content capture off (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
unset or ``NO_CONTENT``: util-genai then puts no message on spans, events or the context) and no
other hook chained behind llmtrace's, llmtrace's hook is their only reader. It never reads the
output messages, and reads the input only as the texts ``hook.plain_texts`` takes from it. So,
while the openai instrumentation is instrumented by ``init()`` under those conditions:

* ``patch._prepare_output_messages`` (non-streaming chat) returns no messages: the finish
  reasons are set from the choices separately, and nothing else reads them;
* ``utils._prepare_input_messages`` returns ``TextsInput``: a list that carries the texts tuple
  ``hook.plain_texts`` would make of the real messages, built straight from the request's
  messages when each is a plain-text chat message (a dict with a str role other than ``tool``,
  an optional str name, and str content or text parts), and the real messages built on first
  use by anything else that reads it. Any other input gets the real function's messages.

This relies on those two names in the instrumentation's modules
(opentelemetry-instrumentation-genai-openai 1.3b0) and util-genai's text shapes; when any is
missing nothing is replaced, and the hook gets the objects as before.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from llmtrace.otel import _guard

PATCH = "opentelemetry.instrumentation.genai.openai.patch"
UTILS = "opentelemetry.instrumentation.genai.openai.utils"
OUTPUTS = "_prepare_output_messages"
INPUTS = "_prepare_input_messages"

_replaced: list[tuple[Any, str, Any]] = []  # (module, name, original) while installed


class TextsInput(list):  # type: ignore[type-arg]
    """A chat call's input as ``hook.plain_texts``' tuple (``texts``), for llmtrace's hook.

    A list, as util-genai expects the input messages to be: empty until something other than
    llmtrace's hook reads it (length, items, iteration), which gets the real messages, built
    then by the instrumentation's own converter from the request's messages."""

    __slots__ = ("texts", "_messages", "_build", "_built")

    def __init__(self, texts: tuple[Any, ...], messages: Any, build: Callable[[Any], Any]):
        super().__init__()
        self.texts = texts
        self._messages = messages
        self._build = build
        self._built = False

    def built(self) -> list[Any]:
        """The real messages (built once, then held as this list's items)."""
        if not self._built:
            self._built = True
            list.extend(self, self._build(self._messages))
        return self

    def __bool__(self) -> bool:
        return True  # made only for a request with at least one message

    def __len__(self) -> int:
        return list.__len__(self.built())

    def __iter__(self) -> Any:
        return list.__iter__(self.built())

    def __getitem__(self, index: Any) -> Any:
        return list.__getitem__(self.built(), index)


def plain_chat_texts(messages: Any) -> tuple[Any, ...] | None:
    """``hook.plain_texts(_prepare_input_messages(messages), [], None)`` for chat messages
    that are plain text, computed from the messages themselves; None for anything else."""
    from llmtrace.otel.hook import PLAIN_TEXTS

    if type(messages) is not list or not messages:
        return None
    out: list[Any] = [PLAIN_TEXTS, ()]
    for message in messages:
        if type(message) is not dict:
            return None
        role = name = content = None
        for key, value in message.items():
            if key == "role":
                role = value
            elif key == "content":
                content = value
            elif key == "name":
                name = value
            else:  # tool calls, refusal, tool call id, audio...: the real converter
                return None
        if type(role) is not str or role == "tool" or not (name is None or type(name) is str):
            return None
        if type(content) is str:
            out += (role, name, content)
            continue
        if type(content) is not list or not content:
            return None
        texts = []
        for part in content:
            if type(part) is not dict or part.get("type") != "text":
                return None
            text = part.get("text")
            if type(text) is not str:
                return None
            texts.append(text)
        out += (role, name, texts[0] if len(texts) == 1 else tuple(texts))
    return tuple(out)


def _no_outputs(choices: Any) -> list[Any]:
    """``_prepare_output_messages`` while llmtrace's hook is the only reader: nothing."""
    return []


def _lean_inputs(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def prepare_input_messages(messages: Any) -> Any:
        try:
            texts = plain_chat_texts(messages)
        except Exception as exc:  # noqa: BLE001 - never into the app
            _guard.swallow("lean.inputs", exc)
            texts = None
        if texts is None:
            return original(messages)
        return TextsInput(texts, messages, original)

    prepare_input_messages.__wrapped__ = original  # type: ignore[attr-defined]
    return prepare_input_messages


def applicable(hook: Any) -> bool:
    """Whether llmtrace's hook would be the only reader of the message objects: no hook
    chained behind it, and content capture off as util-genai reads it (``NO_CONTENT``)."""
    if getattr(hook, "then", None) is not None:
        return False
    try:
        from opentelemetry.util.genai.types import ContentCapturingMode
        from opentelemetry.util.genai.utils import get_content_capturing_mode
    except ImportError:
        return False
    return get_content_capturing_mode() == ContentCapturingMode.NO_CONTENT


def install(hook: Any) -> bool:
    """Replace the two converters (see the module docstring); False when not applicable or
    the instrumentation lacks them. Call after instrumenting openai; ``uninstall`` undoes."""
    if _replaced or not applicable(hook):
        return False
    patch, utils = sys.modules.get(PATCH), sys.modules.get(UTILS)
    if patch is None or utils is None:
        return False
    outputs, inputs = getattr(patch, OUTPUTS, None), getattr(utils, INPUTS, None)
    if not (callable(outputs) and callable(inputs)) or not _text_shapes():
        return False
    _replaced.append((patch, OUTPUTS, outputs))
    _replaced.append((utils, INPUTS, inputs))
    setattr(patch, OUTPUTS, _no_outputs)
    setattr(utils, INPUTS, _lean_inputs(inputs))
    return True


def uninstall() -> None:
    """Put the instrumentation's converters back."""
    while _replaced:
        module, name, original = _replaced.pop()
        setattr(module, name, original)


def _text_shapes() -> bool:
    from llmtrace.otel.hook import _text_types

    return len(_text_types()) == 2
