"""Merge each rule's partials, decide once, and rank the findings: the audit's last step.

Why a module of its own: whichever engine produced the partials (``local_engine`` on this
machine, ``ray_engine`` on a cluster), merging and deciding are the same, on the small
aggregate of each rule; ``run_audit`` (``engine``) only chooses the engine and calls this.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import polars as pl

from llmtrace.rules.base import Finding
from llmtrace.rules.catalogue import RuleError
from llmtrace.rules.coverage import Coverage, coverage_of
from llmtrace.rules.job import AggregateJob, AuditWindow, Progress, describe


@dataclass
class AuditResult:
    """What an audit found, which rules ran, over which calls, and what went wrong."""

    findings: list[Finding]
    rules_run: list[str]
    calls_scanned: int
    window: AuditWindow
    errors: list[RuleError] = field(default_factory=list)
    coverage: Coverage = field(default_factory=Coverage)

    @property
    def total_monthly_savings_usd(self) -> float:
        """The saving the findings claim: ``info`` findings (inconclusive: the data cannot tell
        yet) show their potential saving but do not count, so ``--fail-on-savings`` never fails
        a nightly job on a question that is still open."""
        return float(sum(f.monthly_savings_usd for f in self.findings if f.severity != "info"))


def merge_and_decide(
    job: AggregateJob,
    partials: dict[str, list[pl.DataFrame]],
    calls_scanned: int,
    errors: list[RuleError],
    report: Progress,
    census: pl.DataFrame | None = None,
) -> AuditResult:
    """Merge each rule's partials and decide once, whichever engine produced them."""
    findings: list[Finding] = []
    ran: list[str] = []
    statuses: dict[str, pl.DataFrame] = {}
    for code in job.entries:
        if code not in partials:
            continue
        report(f"deciding {code}")
        rule, ctx = job.entries[code].rule, job.contexts[code]
        if census is not None and census.height:
            ctx = dataclasses.replace(ctx, data_until=census["last_call"].max())
        try:
            merged = rule.merge(partials[code], ctx)
            found = rule.decide(merged, ctx)
            findings.extend(found)
        except Exception as exc:
            errors.append(RuleError(code, f"decide failed: {describe(exc)}"))
            continue
        ran.append(code)
        cover = getattr(rule, "coverage", None)
        if callable(cover) and census is not None:
            try:
                statuses[code] = cover(merged, ctx, census, found)
            except Exception as exc:
                errors.append(RuleError(code, f"coverage failed: {describe(exc)}"))
    findings.sort(key=finding_order)
    return AuditResult(
        findings=findings,
        rules_run=ran,
        calls_scanned=calls_scanned,
        window=job.window,
        errors=errors,
        coverage=coverage_of(statuses, findings),
    )


def finding_order(finding: Finding) -> tuple[float, str, str, str, str]:
    """Biggest saving first, by the cent; ties broken by the finding's key.

    Cents, not the raw float: partitions (or Ray tasks) sum in another order, which moves a
    saving in its last bits, and two findings a hair apart must not swap places between runs.
    """
    key = json.dumps(finding.key, sort_keys=True, default=str)
    cents = -round(finding.monthly_savings_usd, 2)
    return (cents, finding.rule, finding.prompt or "", finding.model or "", key)
