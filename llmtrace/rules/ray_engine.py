"""``llmtrace audit --engine ray``: the aggregate step as Ray tasks over parts of the store.

When one machine is not enough, the audit's expensive step, each rule's ``aggregate``, runs
as Ray tasks; the small partials come back to the driver, where each rule's ``merge`` and
``decide`` run once, exactly as in the local engine. Findings are therefore the same.

Parts:

* **by day** for rules whose partials merge under any split (LT101, custom SQL rules): one task
  per UTC day of the rule's window. The store is partitioned by day, so a task opens only
  that day's files. The same tasks count the calls of the current window.
* **by key hash** for rules that need each key's calls together (``partition_key``: LT201 by
  system prefix, LT301 by conversation): ``n`` tasks, each scanning the rule's window and keeping
  the calls whose key hashes to its part (``llmtrace.rules.partition.filter_part``). ``n`` is
  enough parts for ``rows_per_part`` calls each, and at least one per CPU of the cluster. There
  is no shuffle and no shared scratch disk; the price is that each of these tasks reads the
  rule's columns of the whole window (spread over the workers).

The store is a local path every worker can read at the same path (one machine, or a shared
file system), or an object-store URL (``s3://bucket/store``, ``gs://``, ``az://``) that Polars'
cloud reader scans on the workers, with credentials from the workers' environment.
Workers need llmtrace and the same Polars version installed (rule objects and Polars
expressions travel to them by pickle); see ``docs/ray.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules.base import AuditContext
from llmtrace.rules.catalogue import RuleError
from llmtrace.rules.job import AggregateJob, Progress, describe
from llmtrace.rules.partition import filter_part, part_count, scan_location
from llmtrace.store import Store

_COUNT = "__count__"
_DAY = timedelta(days=1)
INSTALL_HINT = "the ray engine needs Ray: pip install 'llmtrace[ray]'"


@dataclass(frozen=True)
class RuleTask:
    """One rule as a task needs it: its logic, context, columns and window."""

    code: str
    rule: Any  # None for the call count
    ctx: AuditContext | None
    columns: tuple[pl.Expr, ...]  # what it reads of call records (``AggregateJob.column_exprs``)
    since: datetime
    until: datetime


def _no_pricing(_calls: Any) -> pl.DataFrame:
    """Stands in for ``ctx.price`` on workers: pricing belongs to ``decide``, on the driver."""
    raise RuntimeError("aggregate must not price calls; decide does, on the driver")


def aggregate_part(
    location: str,
    tasks: list[RuleTask],
    since: datetime,
    until: datetime,
    key: pl.Expr | None = None,
    part: int = 0,
    parts: int = 1,
) -> dict[str, pl.DataFrame | str]:
    """The body of one Ray task: each rule's partial aggregate over one part of the store.

    The part is the calls with ``since <= start_time < until`` (a day, or the whole window) and,
    with ``key``, whose key hashes to ``part`` of ``parts``. The rules' plans are collected
    together (one scan of the part); if that fails they are collected one by one so a failing
    rule is named and the others still return. A failure is returned as its message.
    """
    plans: dict[str, pl.LazyFrame] = {}
    failed: dict[str, pl.DataFrame | str] = {}
    for task in tasks:
        lo, hi = max(since, task.since), min(until, task.until)
        if lo >= hi:  # this day is outside the rule's window
            continue
        try:
            calls = scan_location(location, lo, hi)
            if task.rule is None:
                plans[task.code] = calls.select(pl.len().cast(pl.Int64))
                continue
            if key is not None:  # before the select: a key may read a column the rule
                # reads only through a derived one (LT203's lineage: ``prefix_hashes``)
                calls = filter_part(calls, key, part, parts)
            calls = calls.select(task.columns)
            plans[task.code] = task.rule.aggregate(calls, task.ctx)
        except Exception as exc:
            failed[task.code] = describe(exc)
    try:
        frames = pl.collect_all(list(plans.values()))
        return {**failed, **dict(zip(plans, frames, strict=True))}
    except Exception:
        pass
    results: dict[str, pl.DataFrame | str] = dict(failed)
    for code, plan in plans.items():
        try:
            results[code] = plan.collect()
        except Exception as exc:
            results[code] = describe(exc)
    return results


def _location(source: Any) -> str:
    if isinstance(source, Store):
        return str(source.path.resolve())
    if isinstance(source, str):
        return source
    raise ConfigError("the ray engine reads a store (a directory or an object-store URL)")


def _days(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """UTC day ranges covering [since, until): the store's partitions."""
    first = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    ranges = []
    day = first
    while day < until:
        ranges.append((max(day, since), min(day + _DAY, until)))
        day += _DAY
    return ranges


def _connect(address: str | None) -> Any:
    """Ray, connected: to ``address`` (an existing cluster) or, by default, a local one.

    An already initialised Ray (a test's two-worker cluster, a notebook) is used as it is.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
        )
    return ray


def aggregate_on_ray(
    job: AggregateJob,
    errors: list[RuleError],
    report: Progress,
    *,
    address: str | None = None,
) -> tuple[dict[str, list[pl.DataFrame]], int]:
    """Each rule's partials, computed as Ray tasks, and the calls in the current window."""
    location = _location(job.source)
    ray = _connect(address)
    remote = ray.remote(num_cpus=1)(aggregate_part)
    window = job.window
    tasks: dict[str, RuleTask] = {}
    keyed: dict[str, pl.Expr] = {}
    for code, entry in job.entries.items():
        try:
            key = job.key(code)
            ctx = dataclasses.replace(job.contexts[code], price=_no_pricing)
            columns = tuple(job.column_exprs(code))
        except Exception as exc:
            errors.append(RuleError(code, f"aggregate failed: {describe(exc)}"))
            continue
        tasks[code] = RuleTask(code, entry.rule, ctx, columns, job.start(code), window.until)
        if key is not None:
            keyed[code] = key
    count = RuleTask(_COUNT, None, None, (), window.since, window.until)
    by_day = [count, *(t for code, t in tasks.items() if code not in keyed)]
    start = min(t.since for t in by_day)

    report(f"aggregating by day on Ray: {', '.join(t.code for t in by_day[1:]) or 'calls'}")
    day_refs = [remote.remote(location, by_day, lo, hi) for lo, hi in _days(start, window.until)]
    partials: dict[str, list[pl.DataFrame]] = {}
    failures: dict[str, str] = {}
    calls_scanned = 0
    for result in ray.get(day_refs):
        for code, value in result.items():
            if isinstance(value, str):
                failures.setdefault(code, value)
            elif code == _COUNT:
                calls_scanned += int(value.item())
            else:
                partials.setdefault(code, []).append(value)
    if _COUNT in failures:
        raise RuntimeError(f"counting calls failed: {failures.pop(_COUNT)}")

    cpus = int(ray.cluster_resources().get("CPU", 1))
    parts = max(part_count(calls_scanned, job.rows_per_part), cpus)
    for code, key in keyed.items():
        report(f"aggregating {code} on Ray in {parts} key parts")
        task = tasks[code]
        refs = [
            remote.remote(location, [task], task.since, task.until, key, i, parts)
            for i in range(parts)
        ]
        for result in ray.get(refs):
            value = result.get(code)
            if isinstance(value, str):
                failures.setdefault(code, value)
            elif value is not None:
                partials.setdefault(code, []).append(value)

    for code, message in failures.items():
        partials.pop(code, None)
        errors.append(RuleError(code, f"aggregate failed: {message}"))
    return partials, calls_scanned
