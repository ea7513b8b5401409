"""llmtrace: what each LLM call costs, and where the money is wasted."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "init"]


def init(**kwargs: Any) -> Any:
    """Price every LLM call of this process: ``import llmtrace; llmtrace.init()``.

    Imported lazily so ``import llmtrace`` stays cheap and does no network; see
    ``llmtrace.otel.setup.init`` for the keywords (the same as the ``LLMTRACE_*`` variables).
    """
    from llmtrace.otel.setup import init as _init

    return _init(**kwargs)
