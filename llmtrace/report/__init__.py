"""Renderers of an audit result: ``text`` (a rich table), ``json``, ``markdown`` and ``html``.

Each renderer is a function ``render(result) -> str`` so the CLI can print it or write it to a
file, and tests can read it; the text renderer also offers the rich table for a terminal.
"""

from __future__ import annotations

from collections.abc import Callable

from llmtrace.rules.engine import AuditResult

FORMATS: tuple[str, ...] = ("text", "json", "markdown", "html")


def render(result: AuditResult, fmt: str) -> str:
    """The audit in one of ``FORMATS``."""
    return renderer(fmt)(result)


def renderer(fmt: str) -> Callable[[AuditResult], str]:
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
