"""The live side: cost on every LLM span, cost metrics, and exporters (see ARCHITECTURE.md).

Imports here are lazy: ``import llmtrace`` (and ``import llmtrace.otel``) must stay cheap and
must not import the OpenTelemetry SDK, genai-prices or any exporter until ``init()`` is called.
"""

from __future__ import annotations

from typing import Any

from llmtrace.otel._guard import error_counts, total_errors

__all__ = ["CostSpanProcessor", "current", "error_counts", "init", "total_errors"]


def init(**kwargs: Any) -> Any:
    """See ``llmtrace.otel.setup.init``."""
    from llmtrace.otel.setup import init as _init

    return _init(**kwargs)


def current() -> Any:
    """The handle of the ``init()`` in force, if any."""
    from llmtrace.otel.setup import current as _current

    return _current()


def __getattr__(name: str) -> Any:
    if name == "CostSpanProcessor":
        from llmtrace.otel.processor import CostSpanProcessor

        return CostSpanProcessor
    raise AttributeError(f"module 'llmtrace.otel' has no attribute {name!r}")
