"""Text report: a rich table of findings sorted by saving, with the total.

The table is what a person reads in the terminal after a nightly run: the biggest saving first,
one line per finding, and the message that says why. ``table(result)`` is the rich renderable
(the CLI prints it with colours); ``render(result)`` is the same as plain text for files.
"""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from llmtrace.report.evidence import first_sentence, plain
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult
from llmtrace.safe_text import escape

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def money(amount: float) -> str:
    """USD with cents, or a hint of size below a cent."""
    if 0 < abs(amount) < 0.01:
        return "<$0.01"
    return f"${amount:,.2f}"


# Below this width the messages go under the table instead of into a squeezed column.
WIDE = 140


def table(result: AuditResult, *, with_message: bool = True) -> Table:
    """Findings by saving (largest first), with the total in the footer."""
    window = result.window
    title = (
        f"llmtrace audit: {window.since:%Y-%m-%d %H:%M} to {window.until:%Y-%m-%d %H:%M} UTC, "
        f"{result.calls_scanned:,} calls, rules {', '.join(result.rules_run) or 'none'}"
    )
    grid = Table(
        title=title, show_footer=True, title_justify="left", box=box.SIMPLE_HEAD, expand=False
    )
    grid.add_column("#", justify="right")
    grid.add_column("Rule", footer="Total", no_wrap=True)
    if any(f.severity == "info" for f in result.findings):
        grid.caption = (
            "(in brackets: potential saving of an inconclusive finding, not in the total)"
        )
        grid.caption_justify = "left"
    grid.add_column("Severity", no_wrap=True)
    grid.add_column("Prompt", overflow="fold")
    grid.add_column("Model", overflow="fold")
    grid.add_column(
        "Saving/month",
        justify="right",
        no_wrap=True,
        footer=money(result.total_monthly_savings_usd),
    )
    if with_message:
        grid.add_column("Message", overflow="fold", ratio=1)
    for index, finding in enumerate(ordered(result), 1):
        cells = [
            Text(str(index)),
            Text(finding.rule),
            Text(finding.severity, style=SEVERITY_STYLE.get(finding.severity, "")),
            Text(escape(finding.prompt or "-")),
            Text(escape(finding.model or "-")),
            # an inconclusive finding's saving is potential, not counted in the total
            Text(
                f"({money(finding.monthly_savings_usd)})"
                if finding.severity == "info"
                else money(finding.monthly_savings_usd),
                style=SEVERITY_STYLE["info"] if finding.severity == "info" else "",
            ),
        ]
        grid.add_row(*cells, *([Text(advice(finding))] if with_message else []))
    return grid


def advice(finding: Finding) -> str:
    """The message, then what to do in one line and where the rule's page is."""
    fix = escape(plain(first_sentence(finding.fix))) if finding.fix else ""
    lines = [escape(finding.message)]  # data in it is escaped; the line breaks here are ours
    if fix:
        lines.append(f"Fix: {fix}")
    lines.append(f"More: llmtrace audit --explain {finding.rule}")
    return "\n".join(lines)


def ordered(result: AuditResult) -> list[Finding]:
    """Findings by monthly saving, largest first."""
    return sorted(result.findings, key=lambda f: -f.monthly_savings_usd)


def renderable(result: AuditResult, width: int = WIDE) -> Group:
    """The table (messages inside on wide consoles, numbered below it on narrow ones), or a line
    saying nothing was found, followed by any rule errors."""
    wide = width >= WIDE
    parts: list = []
    if result.findings:
        parts.append(table(result, with_message=wide))
        if not wide:
            for index, finding in enumerate(ordered(result), 1):
                body = advice(finding).replace("\n", "\n   ")
                parts.append(Text(f"{index}. {finding.rule} {body}"))
    else:
        parts.append(Text(_nothing(result)))
    parts.append(Text(coverage_line(result)))
    for error in result.errors:
        parts.append(Text(f"error: {error.rule}: {escape(error.message)}", style="red"))
    return Group(*parts)


def _nothing(result: AuditResult) -> str:
    return (
        f"No findings in {result.calls_scanned:,} calls "
        f"(rules: {', '.join(result.rules_run) or 'none'})."
    )


def coverage_line(result: AuditResult, listed: int = 4) -> str:
    """What the audit could and could not judge: "N prompts checked, no waste found; K prompts
    not judged (too few calls: a, b; no baseline: c)". The full list is in the JSON report."""
    cover = result.coverage
    line = f"{cover.no_waste:,} prompts checked, no waste found"
    if cover.flagged:
        line += f"; {cover.flagged:,} with findings"
    if not cover.not_judged:
        return line + "; every prompt could be judged."
    by_reason: dict[str, list[str]] = {}
    for entry in cover.not_judged:
        by_reason.setdefault(", ".join(entry["reasons"]), []).append(
            f"{entry['prompt'] or '-'} ({entry['model'] or '-'})"
        )
    details = "; ".join(
        f"{reason}: {', '.join(names[:listed])}"
        + (f" and {len(names) - listed:,} more" if len(names) > listed else "")
        for reason, names in sorted(by_reason.items())
    )
    return f"{line}; {len(cover.not_judged):,} prompts not judged ({details})."


def render(result: AuditResult, width: int = 160, context: object = None) -> str:
    """The report as plain text (no colour codes)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=False)
    console.print(renderable(result, width))
    return buffer.getvalue()
