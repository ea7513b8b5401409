"""Importers: each turns one kind of source into call-record batches.

Shared here so every importer reports the same way: an ``ImportResult`` with the call records
(exactly ``CALL_SCHEMA``, not yet priced) and one ``ImportProblem`` per bad file, line or span,
so a command can print ``FILE:LINE: span SPANID: message`` and still store the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmtrace.safe_text import escape

if TYPE_CHECKING:
    import polars as pl


def _empty_calls() -> pl.DataFrame:
    """No calls yet; imported here, not at module level, so that the Polars-free per-span step
    (``otlp_rows``, used inside the app by the live store exporter) does not load Polars."""
    from llmtrace.record import empty_calls

    return empty_calls()


@dataclass(frozen=True)
class ImportProblem:
    """One thing that could not be imported: where it is and what is wrong with it."""

    file: str
    line: int | None
    span: str | None
    message: str

    def __str__(self) -> str:
        """One line whatever the data held: a newline in a span id cannot forge a second."""
        where = escape(self.file) if self.line is None else f"{escape(self.file)}:{self.line}"
        if self.span:
            return f"{where}: span {escape(self.span)}: {escape(self.message)}"
        return f"{where}: {escape(self.message)}"


@dataclass
class ImportResult:
    """What an import produced.

    ``calls`` holds one row per LLM call (duplicates already merged); ``rejected`` counts spans
    dropped because they were malformed, each with a problem in ``problems`` (problems also
    cover unreadable files and lines, which are not spans).
    """

    calls: pl.DataFrame = field(default_factory=_empty_calls)
    problems: list[ImportProblem] = field(default_factory=list)
    files: int = 0
    spans: int = 0
    llm_spans: int = 0
    merged: int = 0
    rejected: int = 0
    scores: int = 0
    unmatched_scores: int = 0
    bytes_read: int = 0


__all__ = ["ImportProblem", "ImportResult"]
