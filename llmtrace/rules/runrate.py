"""Monthly savings as run-rates: the rate over the days that hold data, times 30.

Why: a saving observed in a window is money per *time the key was running*, not per nominal
window. Spreading one day of calls over a 7-day default window divides the saving by seven, and a
change in the last week of a 30-day window is diluted four times. Every rule therefore turns an
amount observed between a key's first and last call into a monthly figure with ``monthly``, over
``basis_days``:

* the span from the key's first call (for a change: the first call after the change) to the end
  of the data the audit read (``AuditContext.data_until``: the window's last call of any key),
  rounded up to whole days with a small tolerance, because traffic is diurnal: calls between
  06:00 and 22:00 UTC for 7 days span 6.7 days but run at a rate of 7 days' worth. Measuring to
  the end of the data, not to the key's own last call, keeps a one-off burst (one agent session
  three days ago) from being projected as a daily rate, while a prompt that started two days
  ago and runs on is measured over those two days;
* at least one day (a key seen for 3 hours runs at a daily rate, not an hourly one), unless the
  window itself is shorter than a day;
* at most the window.

``basis_evidence`` is what each finding states so a reader can check the arithmetic: days with
data, since and until when, and calls per day.

This is the one place the run-rate is computed. New rules (LT202, LT203, LT401, LT501-LT503) call
``basis_days`` / ``monthly`` (Polars expressions, for whole tables at once) or
``basis_days_value`` / ``monthly_value`` (plain numbers), never ``amount * 30 / window_days``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from llmtrace.rules.base import AuditContext

DAYS_PER_MONTH = 30.0
# A span this far past a whole number of days still counts as that number (clock jitter, a
# window that ends a few minutes after the last generated hour).
_TOLERANCE_DAYS = 0.05
_US_PER_DAY = 86_400_000_000.0


def basis_days(first: pl.Expr | str, last: pl.Expr | str, ctx: AuditContext) -> pl.Expr:
    """Days of data from ``first`` to the end of the audit's data (at least ``last``): whole
    days, >= 1, <= the window (``first``/``last``: datetime columns or expressions)."""
    first = pl.col(first) if isinstance(first, str) else first
    last = pl.col(last) if isinstance(last, str) else last
    end = last if ctx.data_until is None else pl.max_horizontal(last, pl.lit(ctx.data_until))
    span = (end - first).dt.total_microseconds().cast(pl.Float64) / _US_PER_DAY
    whole = (span - _TOLERANCE_DAYS).ceil().clip(lower_bound=1.0)
    return pl.min_horizontal(whole.fill_null(1.0), pl.lit(float(ctx.window_days)))


def monthly(amount: pl.Expr | str, days: pl.Expr | str) -> pl.Expr:
    """``amount`` observed over ``days`` of data, as USD (or calls) per 30 days."""
    amount = pl.col(amount) if isinstance(amount, str) else amount
    days = pl.col(days) if isinstance(days, str) else days
    return pl.when(days > 0).then(amount * DAYS_PER_MONTH / days).otherwise(0.0)


def basis_days_value(
    first: datetime | None,
    last: datetime | None,
    window_days: float,
    data_until: datetime | None = None,
) -> float:
    """``basis_days`` for one key, from plain datetimes (None: one day, capped by the window)."""
    if first is None or last is None:
        return min(1.0, window_days)
    end = max(last, data_until) if data_until is not None else last
    span = (end - first).total_seconds() / 86_400.0
    return min(float(window_days), max(1.0, float(math.ceil(span - _TOLERANCE_DAYS))))


def monthly_value(amount: float | None, days: float) -> float:
    """``monthly`` for one number."""
    if amount is None or days <= 0:
        return 0.0
    return amount * DAYS_PER_MONTH / days


def basis_evidence(
    first: datetime | None, last: datetime | None, days: float, calls: int | float
) -> dict[str, Any]:
    """The basis of a run-rate, as a finding's evidence states it."""
    return {
        "days_with_data": round(days, 2),
        "since": first.isoformat() if first is not None else None,
        "until": last.isoformat() if last is not None else None,
        "calls_per_day": round(calls / days, 1) if days > 0 else None,
    }
