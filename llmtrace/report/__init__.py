"""Renderers of an audit result: ``text`` (a rich table), ``json``, ``markdown`` and ``html``.

Each renderer is a function ``render(result) -> str`` so the CLI can print it or write it to a
file, and tests can read it; the text renderer also offers the rich table for a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmtrace.rules.engine import AuditResult

if TYPE_CHECKING:
    from llmtrace.report.context import ReportContext

FORMATS: tuple[str, ...] = ("text", "json", "markdown", "html")


def render(result: AuditResult, fmt: str, context: ReportContext | None = None) -> str:
    """The audit in one of ``FORMATS``; ``context`` (``llmtrace.report.context``) adds the
    footer and each finding's share of its key's spend where the format shows them."""
    if context is not None and fmt in ("markdown", "html"):
        return renderer(fmt)(result, context)  # type: ignore[call-arg]
    return renderer(fmt)(result)


def renderer(fmt: str) -> Callable[..., str]:
    """The render function of a format (ValueError for an unknown one)."""
    if fmt == "text":
        from llmtrace.report.text import render as text

        return text
    if fmt == "json":
        from llmtrace.report.json import render as as_json

        return as_json
    if fmt == "markdown":
        from llmtrace.report.markdown import render as markdown

        return markdown
    if fmt == "html":
        from llmtrace.report.html import render as as_html

        return as_html
    raise ValueError(f"unknown report format {fmt!r} (formats: {', '.join(FORMATS)})")
