"""SDK parts an official instrumentation wraps at once but an app may never use: wrapped when
the app first imports them.

Why: ``OpenAIInstrumentor().instrument()`` imports ``openai.resources.responses`` (the Responses
API) to wrap it. That import is most of what ``init()`` costs an app that uses ``openai``
(~0.2-0.3 s of CPU of ~0.4 s; bench/bench_startup.py), and an app calling only
``chat.completions`` never imports it (the ``openai`` client imports a resource's module on the
first use of ``client.responses``). So while the app has not imported it, the instrumentor runs
with its lookup of that module answering "not imported"; a post-import hook on the module runs
the instrumentor's wrapping again, keeping only the wraps of that module, when the app first
imports it - before the app can call anything in it. An SDK imported before ``init()`` is
instrumented at once as before; only the part it has not imported waits.

This relies on two names in the instrumentation's module (``_get_responses_module`` and the
``wrap_function_wrapper`` it imports from wrapt, opentelemetry-instrumentation-genai-openai
1.3b0). When either is missing (another version), nothing is deferred: the instrumentor runs
as is and wraps everything at once (a slower start, the same spans).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

WRAPPER = "wrap_function_wrapper"


@dataclass(frozen=True)
class Part:
    """One deferrable part of an SDK."""

    module: str  # the SDK module the part lives in (what the app imports on first use)
    instrumentation: str  # the instrumentation's module holding the two names below
    lookup: str  # its function importing ``module`` (returns None when it is not installed)


# INSTRUMENTORS key (llmtrace.otel.setup) -> its deferrable part
PARTS: dict[str, Part] = {
    "openai": Part(
        "openai.resources.responses.responses",
        "opentelemetry.instrumentation.genai.openai",
        "_get_responses_module",
    ),
}


def deferrable(name: str) -> Part | None:
    """The part of SDK ``name`` to defer: one the app has not imported yet, in an
    instrumentation (already imported) that has the names this relies on; else None."""
    part = PARTS.get(name)
    if part is None or part.module in sys.modules:
        return None
    module = sys.modules.get(part.instrumentation)
    if module is None or not callable(getattr(module, part.lookup, None)):
        return None
    if not callable(getattr(module, WRAPPER, None)):
        return None
    return part


@contextmanager
def unless_imported(part: Part | None) -> Iterator[list[Any]]:
    """While inside, the instrumentation sees ``part``'s module only if the app imported it:
    ``instrument()`` then leaves it alone, ``uninstrument()`` unwraps it only if it is there
    (instead of importing it at shutdown just to unwrap nothing). Yields a list that holds the
    module if the instrumentation was shown it (another thread imported it meanwhile): then
    it is wrapped already."""
    shown: list[Any] = []
    if part is None:
        yield shown
        return
    module = sys.modules[part.instrumentation]
    original = getattr(module, part.lookup)

    def imported_only() -> Any:
        found = sys.modules.get(part.module)
        if found is not None:
            shown.append(found)
        return found

    setattr(module, part.lookup, imported_only)
    try:
        yield shown
    finally:
        setattr(module, part.lookup, original)


def wrap_part(part: Part, instrumentor: Any, **kwargs: Any) -> None:
    """Run ``instrumentor``'s wrapping again (its ``_instrument``, with the keywords
    ``instrument()`` was given), keeping only the wraps of ``part``'s module: everything else
    is wrapped already and must not be wrapped twice (two spans per call)."""
    module = sys.modules[part.instrumentation]
    original = getattr(module, WRAPPER)

    def only_this_part(target: Any, name: str, wrapper: Any) -> Any:
        if getattr(target, "__name__", target) == part.module:
            return original(target, name, wrapper)
        return None

    setattr(module, WRAPPER, only_this_part)
    try:
        instrumentor._instrument(**kwargs)
    finally:
        setattr(module, WRAPPER, original)


def when_imported(part: Part, hook: Callable[[Any], None]) -> None:
    """Call ``hook(module)`` when the app imports ``part``'s module (wrapt's post-import hook,
    as OpenTelemetry's instrumentations use; wrapt is there: the instrumentation imports it).
    If the module is imported already, wrapt calls the hook at once."""
    from wrapt.importer import register_post_import_hook

    register_post_import_hook(hook, part.module)
