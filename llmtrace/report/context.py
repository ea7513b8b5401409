"""What a report says besides the findings: its footer, and each finding's key's spend.

The audit result holds findings; a reader also wants to know what produced the report (version,
when, which store, which window, which price data) and how big a finding is against what its
key spends (a $30 saving on a $40 prompt is not a $30 saving on a $40,000 one). Built once by
the CLI from the store, in one aggregation over the audit's baseline and current windows (a
day × key table, small whatever the store's size), and passed to the renderers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl

from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult

# Finding key fields that are call-record columns, so a key's spend can be read from the store.
KEY_COLUMNS: tuple[str, ...] = ("service", "environment", "provider", "model", "prompt", "action")


def finding_id(finding: Finding) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A finding's identity within one result: its rule and key."""
    return finding.rule, tuple(sorted((str(k), str(v)) for k, v in finding.key.items()))


@dataclass(frozen=True)
class KeySpend:
    """The spend of a finding's key: per day (baseline and current window), and per month."""

    days: tuple[tuple[date, float], ...]
    window_spend: float
    monthly_spend: float
    window_start: date

    def share(self, monthly_saving: float) -> float | None:
        """The saving as a share of the key's monthly spend (None when it spends nothing)."""
        return monthly_saving / self.monthly_spend if self.monthly_spend > 0 else None


@dataclass(frozen=True)
class ReportContext:
    """The footer's facts and the findings' key spend."""

    version: str
    generated_at: datetime
    store: str | None = None
    price_sources: tuple[str, ...] = ()
    filters: str = ""
    spend: dict[Any, KeySpend] = field(default_factory=dict)

    def key_spend(self, finding: Finding) -> KeySpend | None:
        return self.spend.get(finding_id(finding))


def build_context(
    calls: pl.LazyFrame | None,
    result: AuditResult,
    *,
    store: str | None = None,
    filters: str = "",
    now: datetime | None = None,
) -> ReportContext:
    """The context of ``result``; ``calls`` are the store's calls (any window: the audit's
    baseline and current windows are taken here), None for none."""
    from llmtrace import __version__

    generated = (now or _now()).replace(microsecond=0)
    if calls is None:
        return ReportContext(__version__, generated, store, (), filters)
    window = result.window
    scanned = calls.filter(
        (pl.col("start_time") >= window.baseline_since) & (pl.col("start_time") < window.until)
    )
    daily = (
        scanned.group_by("day", *KEY_COLUMNS)
        .agg(pl.col("total_cost").sum().alias("spend"))
        .collect()
    )
    current = (
        scanned.filter(pl.col("start_time") >= window.since)
        .select(pl.col("price_source").drop_nulls().unique().sort())
        .collect()
    )
    sources = tuple(current.get_column("price_source").to_list())
    spend = {finding_id(f): _key_spend(daily, f, result) for f in result.findings}
    return ReportContext(__version__, generated, store, sources, filters, spend)


def _now() -> datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) when set, so a
    rendered example report does not change on every run (docs/render_readme.py)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), UTC)
    return datetime.now(UTC)


def _key_spend(daily: pl.DataFrame, finding: Finding, result: AuditResult) -> KeySpend:
    window = result.window
    # a key without a prompt (an agent's calls) matches the calls without one
    match = [
        pl.col(k).is_null() if v is None else pl.col(k) == str(v)
        for k, v in finding.key.items()
        if k in KEY_COLUMNS
    ]
    rows = daily.filter(pl.all_horizontal(match)) if match else daily
    per_day = rows.group_by("day").agg(pl.col("spend").sum()).sort("day")
    first = window.baseline_since.astimezone(UTC).date()
    last = (window.until.astimezone(UTC) - timedelta(microseconds=1)).date()
    known = dict(per_day.iter_rows())
    days = []
    day = first
    while day <= last:
        days.append((day, float(known.get(day) or 0.0)))
        day += timedelta(days=1)
    start = window.since.astimezone(UTC).date()
    in_window = sum(v for d, v in days if d >= start)
    return KeySpend(tuple(days), in_window, _monthly_spend(days, finding, result), start)


def _monthly_spend(days: list[tuple[date, float]], finding: Finding, result: AuditResult) -> float:
    """The key's spend per month on the basis of the finding's saving.

    Why: savings are run-rates over the days that hold data for the key (``run_rate_basis``
    in the evidence, ``llmtrace.rules.runrate``); the spend they are a share of must be too, or
    a prompt that started two days into a 7-day window reads as saving 350% of its spend. A
    finding without a basis (a custom rule of an older shape) falls back to the window.
    """
    basis = finding.evidence.get("run_rate_basis")
    if isinstance(basis, dict) and basis.get("since") and basis.get("days_with_data"):
        first = datetime.fromisoformat(basis["since"]).astimezone(UTC).date()
        return sum(v for d, v in days if d >= first) * 30.0 / float(basis["days_with_data"])
    window = result.window
    window_days = (window.until - window.since).total_seconds() / 86400
    in_window = sum(v for d, v in days if d >= window.since.astimezone(UTC).date())
    return in_window * 30.0 / window_days if window_days > 0 else 0.0


def share_text(share: float | None) -> str:
    """``12.3% of its spend`` for a saving's share of the key's monthly spend."""
    if share is None:
        return ""
    if share >= 0.995:
        return f"{share:.0%} of its spend"
    return f"{share:.1%} of its spend" if share >= 0.001 else "<0.1% of its spend"


def sparkline_values(spend: KeySpend) -> Sequence[tuple[date, float]]:
    return spend.days
