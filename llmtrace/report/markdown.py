"""Markdown report: a summary table and one section per finding (evidence and fix).

Written for pull-request comments and wiki pages. Every value that comes from the data (prompt
names, models, messages) is escaped, so a ``|`` in a prompt name cannot break the table and a
``*`` or ``<`` cannot turn into markup.
"""

from __future__ import annotations

import re
from typing import Any

from llmtrace.report.text import money
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult

# Characters that are markup anywhere in a line (emphasis, code, links, HTML, table cells).
_SPECIAL = re.compile(r"([\\`*_\[\]<|~])")
# Characters that are markup only at the start of a paragraph (headings, lists, quotes).
_LEADING_MARK = re.compile(r"^(\s*)([#>+=-])")
_LEADING_NUMBER = re.compile(r"^(\s*\d+)([.)])")


def escape(value: Any) -> str:
    """Text safe inside a Markdown paragraph or table cell: one line, markup escaped."""
    if value is None:
        return "-"
    text = " ".join(str(value).replace("\r", " ").split("\n"))
    text = _SPECIAL.sub(r"\\\1", text)
    text = _LEADING_MARK.sub(r"\1\\\2", text)
    return _LEADING_NUMBER.sub(r"\1\\\2", text)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return escape(value)


def _table(result: AuditResult, ordered: list[Finding]) -> list[str]:
    lines = [
        "| # | Rule | Severity | Prompt | Model | Saving/month | Message |",
        "|---|------|----------|--------|-------|-------------:|---------|",
    ]
    for index, f in enumerate(ordered, 1):
        cells = [
            str(index),
            escape(f"{f.rule} {f.name}"),
            escape(f.severity),
            escape(f.prompt),
            escape(f.model),
            escape(
                f"({money(f.monthly_savings_usd)})"
                if f.severity == "info"
                else money(f.monthly_savings_usd)
            ),
            escape(f.message),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| | **Total** | | | | **{escape(money(result.total_monthly_savings_usd))}** | |")
    if any(f.severity == "info" for f in ordered):
        lines += [
            "",
            "In brackets: the potential saving of an inconclusive finding, not in the total.",
        ]
    return lines


def _section(index: int, finding: Finding) -> list[str]:
    lines = [
        f"## {index}. {escape(finding.rule)} {escape(finding.name)}: {escape(finding.prompt)}",
        "",
        f"- Severity: **{escape(finding.severity)}**",
        f"- Key: {escape(', '.join(f'{k}={v}' for k, v in finding.key.items()) or '-')}",
        f"- Service: {escape(finding.service)}; model: {escape(finding.model)}",
        f"- Window: {escape(finding.window_start.isoformat())} to "
        f"{escape(finding.window_end.isoformat())}",
        f"- Estimated saving: **{escape(money(finding.monthly_savings_usd))} per month**",
        "",
        escape(finding.message),
        "",
        "**Evidence**",
        "",
        "| Measure | Value |",
        "|---|---|",
    ]
    lines += [f"| {escape(k)} | {_value(v)} |" for k, v in finding.evidence.items()]
    lines += ["", "**Fix**", "", escape(finding.fix), ""]
    return lines


def render(result: AuditResult) -> str:
    """The whole report."""
    window = result.window
    lines = [
        "# llmtrace audit",
        "",
        f"Window {escape(window.since.isoformat())} to {escape(window.until.isoformat())} "
        f"(baseline from {escape(window.baseline_since.isoformat())}); "
        f"{result.calls_scanned:,} calls; rules: {escape(', '.join(result.rules_run) or 'none')}.",
        "",
    ]
    ordered = sorted(result.findings, key=lambda f: -f.monthly_savings_usd)
    if ordered:
        lines += [
            f"{len(ordered)} finding(s), estimated saving "
            f"**{escape(money(result.total_monthly_savings_usd))} per month**.",
            "",
        ]
        lines += _table(result, ordered)
        lines.append("")
        for index, finding in enumerate(ordered, 1):
            lines += _section(index, finding)
    else:
        lines += ["No findings.", ""]
    if result.errors:
        lines += ["## Errors", ""]
        lines += [f"- {escape(e.rule)}: {escape(e.message)}" for e in result.errors]
        lines.append("")
    return "\n".join(lines)
