"""Reconcile the store with what the provider billed ("fix measurement first").

``reconcile(store, provider, ...)`` reads the provider's organization usage and cost reports
(``providers``), sums the store's calls over the same UTC days (``compare.store_side``) and
compares them per day and model with a likely cause for every gap (``compare``).

The window is whole UTC days, because both providers report daily buckets: ``since`` is rounded
down to midnight and ``until`` up (an ``until`` in the future is sent as now: OpenAI rejected a
future ``end_time`` for one client).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import polars as pl

from llmtrace.errors import UsageError
from llmtrace.reconcile.compare import Reconciliation, compare, provider_side, store_side
from llmtrace.reconcile.providers import (
    BASE_URL_VARIABLES,
    DEFAULT_BASE_URLS,
    KEY_VARIABLES,
    PROVIDERS,
    BillingReport,
    ProviderError,
    fetch,
)
from llmtrace.store import Store

if TYPE_CHECKING:
    from llmtrace.pricing import PriceBook

__all__ = [
    "PROVIDERS",
    "MissingKeyError",
    "ProviderError",
    "Reconciliation",
    "base_url_for",
    "day_window",
    "key_for",
    "reconcile",
    "reconcile_report",
]

DEFAULT_DAYS = 7


class MissingKeyError(UsageError):
    """No admin key in the environment: a configuration error (exit 2)."""


def key_for(provider: str, environ: dict[str, str] | None = None) -> str:
    """The provider's admin key from ``OPENAI_ADMIN_KEY`` / ``ANTHROPIC_ADMIN_KEY``."""
    env = os.environ if environ is None else environ
    variable = KEY_VARIABLES[provider]
    key = (env.get(variable) or "").strip()
    if not key:
        where = {
            "openai": "https://platform.openai.com/settings/organization/admin-keys",
            "anthropic": "https://console.anthropic.com/settings/admin-keys",
        }[provider]
        raise MissingKeyError(
            f"{variable} is not set: reconcile reads the organization's usage and cost reports, "
            f"which need an admin key (create one at {where})"
        )
    return key


def base_url_for(provider: str, override: str | None = None) -> str:
    """``--base-url``, else the official SDK's variable, else the provider's API."""
    return (
        override or os.environ.get(BASE_URL_VARIABLES[provider]) or DEFAULT_BASE_URLS[provider]
    ).rstrip("/")


def day_window(
    since: datetime | None, until: datetime | None, *, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """Whole UTC days covering ``[since, until)``: default the last 7 days up to today's end."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    end = (until or now).astimezone(UTC)
    midnight = end.replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight if end == midnight else midnight + timedelta(days=1)
    start = (since or end - timedelta(days=DEFAULT_DAYS)).astimezone(UTC)
    start = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if start >= end:
        raise ValueError(f"the window is empty: since {start.date()} >= until {end.date()}")
    return start, end


def reconcile_report(
    calls: pl.LazyFrame,
    report: BillingReport,
    since: datetime,
    until: datetime,
    max_drift: float,
) -> Reconciliation:
    """Compare stored calls of ``[since, until)`` with a provider report already fetched."""
    window = calls.filter((pl.col("start_time") >= since) & (pl.col("start_time") < until))
    ours = store_side(window, report.provider)
    theirs = provider_side(report.usage, report.cost)
    rows = compare(ours, theirs, max_drift)
    notes = []
    if report.usage.height == 0 and report.cost.height == 0:
        notes.append(f"the provider reported no usage between {since.date()} and {until.date()}")
    if report.provider == "anthropic":
        notes.append(
            "Anthropic's usage report has no request count: calls are compared by tokens; "
            "Priority Tier costs are not in its cost report"
        )
    return Reconciliation(report.provider, since, until, max_drift, rows, report.base_url, notes)


def reconcile(
    store: Store,
    provider: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    max_drift: float = 0.02,
    base_url: str | None = None,
    book: PriceBook | None = None,
    now: datetime | None = None,
) -> Reconciliation:
    """Fetch the provider's reports for the window and compare them with the store.

    Raises ``MissingKeyError`` (no admin key), ``ProviderError`` (refused key, network, bad
    answer) or ``ValueError`` (empty window). ``book`` re-prices the stored calls first (a
    what-if with a price file: does the negotiated rate close the gap?).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r} (known: {', '.join(PROVIDERS)})")
    key = key_for(provider)
    start, end = day_window(since, until, now=now)
    now_utc = (now or datetime.now(UTC)).astimezone(UTC)
    request_end = min(end, now_utc) if provider == "openai" else end
    report = fetch(provider, key, base_url_for(provider, base_url), start, request_end)
    calls = store.scan(start, end)
    if book is not None:
        from llmtrace.pricing import price_calls

        calls = price_calls(calls.filter(pl.col("provider") == provider), book).lazy()
    return reconcile_report(calls, report, start, end, max_drift)
