"""llmtrace: what each LLM call costs, and where the money is wasted."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
