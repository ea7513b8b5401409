"""The audit engine: choose rules, set their parameters, scan the store once, collect findings.

``run_audit`` does, in order:

1. load the rules (built-in YAML + their Python logic, and the user's custom YAML rules);
2. apply ``select``/``ignore`` (codes or prefixes, like ruff: ``LT1`` selects LT101...);
3. give each rule its parameters: YAML defaults overlaid by ``[rules.<CODE>]`` of the config
   (an unknown name is a ``ConfigError`` naming the file and the key);
4. build each rule's lazy ``aggregate`` over the store scan, reading only the columns it needs,
   and collect them one after the other (memory: one rule's buffers at a time);
   a rule that needs each key's calls together (``partition_key``: LT201, LT202, LT203, LT301,
   LT502, LT503) runs in key-hash parts when the window holds more calls than one part should,
   so memory stays bounded on 100M calls (``llmtrace.rules.partition``; rules of one
   ``partition_family`` share the spill, and at few parts families share one); with
   ``engine="ray"`` the parts run as Ray tasks instead (``llmtrace.rules.ray_engine``);
5. ``merge`` the partials and ``decide`` once, on the small aggregate of each rule.

A rule that fails (its module is missing, its query or decision raises) is reported as an error
for that rule; the other rules still run. Rules see only calls of the current window unless they
declare ``needs_baseline = True`` (LT101), in which case the baseline window's calls come too.

Why it is split: this module is the entry point (rule choice, parameters, windows, the engine
to run); the job it hands to an engine is ``llmtrace.rules.job``, the local aggregate step
``llmtrace.rules.local_engine``, the census and coverage ``llmtrace.rules.coverage``, and
merge + decide + ranking ``llmtrace.rules.decide``. The names tests, reports and benches
import from here (``AuditResult``, ``AggregateJob``, ``aggregate_locally``...) stay here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config, ConfigError, load_config
from llmtrace.rules.base import AuditContext
from llmtrace.rules.catalogue import (
    Catalogue,
    RuleError,
    check_rules_section,
    codes_option,
    load_catalogue,
    resolve_params,
    select_codes,
)
from llmtrace.rules.coverage import CENSUS, Coverage, census_aggregate
from llmtrace.rules.decide import AuditResult, merge_and_decide
from llmtrace.rules.job import (
    AggregateJob,
    AuditWindow,
    Progress,
    column_exprs,
    derived_columns,
    scan_calls,
)
from llmtrace.rules.local_engine import aggregate_locally
from llmtrace.rules.partition import PARTITION_ROWS, bounded_prefetch, is_url
from llmtrace.store import Store

__all__ = [
    "CENSUS",
    "AggregateJob",
    "AuditResult",
    "AuditWindow",
    "Coverage",
    "NothingToAudit",
    "Progress",
    "RuleError",
    "aggregate_locally",
    "audit_window",
    "census_aggregate",
    "column_exprs",
    "derived_columns",
    "load_catalogue",
    "resolve_params",
    "rule_contexts",
    "run_audit",
    "select_codes",
]

DEFAULT_WINDOW = timedelta(days=7)


class NothingToAudit(ConfigError):
    """The audit would read no calls: a missing store, an empty one, or a window without calls.

    A ``ConfigError`` (exit 2 on the command line): an audit of nothing must never pass a
    nightly ``--fail-on-savings`` gate, and the message names the store and the dates it holds.
    """


# -- windows and pricing -------------------------------------------------------------------------


def audit_window(
    since: datetime | None, until: datetime | None, config: Config, *, now: datetime | None = None
) -> AuditWindow:
    """Current window (default: the 7 days up to now) and its baseline.

    The baseline is the preceding window of the same length, or the ``[rules] baseline_days``
    days before ``since``.
    """
    until = (until or now or datetime.now(UTC)).astimezone(UTC)
    since = (since or until - DEFAULT_WINDOW).astimezone(UTC)
    if since >= until:
        raise ConfigError(
            f"the window is empty: since {since.isoformat()} >= until {until.isoformat()}"
        )
    days = config.section("rules").get("baseline_days")
    if days is None:
        length = until - since
    elif isinstance(days, int | float) and not isinstance(days, bool) and days > 0:
        length = timedelta(days=days)
    else:
        raise ConfigError(f"{config.path}: [rules] baseline_days must be a positive number")
    return AuditWindow(since, until, since - length, since)


def _pricer(price_book: Any) -> Callable[[pl.DataFrame | pl.LazyFrame], pl.DataFrame]:
    """``price_calls`` bound to the run's book (loaded on first use: most audits never need it)."""
    state: dict[str, Any] = {"book": price_book}

    def price(calls: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
        from llmtrace.pricing import PriceBook, price_calls

        if state["book"] is None:
            state["book"] = PriceBook.load()
        return price_calls(calls, state["book"])

    return price


# -- running -------------------------------------------------------------------------------------
def run_audit(
    source: Store | pl.LazyFrame | str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    config: Config | None = None,
    select: Sequence[str] | str | None = None,
    ignore: Sequence[str] | str | None = None,
    price_book: Any = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    engine: str = "local",
    address: str | None = None,
    rows_per_part: int = PARTITION_ROWS,
) -> AuditResult:
    """Run the selected rules over the calls of ``source`` and return the findings.

    ``source`` is a ``Store``, a store's path or object-store URL (``s3://bucket/store``), or a
    LazyFrame of call records. ``select``/``ignore`` given here
    replace the config's ``[rules] select/ignore``. ``price_book`` (a ``PriceBook``) prices
    counterfactual calls; default: the book ``PriceBook.load()`` finds. Configuration problems
    raise ``ConfigError``; problems of single rules are returned in ``errors``.

    ``engine`` runs the aggregate step on this machine (``local``) or as Ray tasks over parts
    of the store (``ray``, a ``Store`` source only; ``address`` names an existing cluster, else
    a local one is started). Either way the partials are merged and each rule decides once
    here, so both give the same findings.
    """
    config = config if config is not None else load_config()
    report = progress or (lambda _message: None)
    report("loading rules")
    catalogue = load_catalogue(config)
    check_rules_section(config, catalogue)
    rules_cfg = config.section("rules")
    chosen_select = codes_option(select, "--select")
    if chosen_select is None:
        chosen_select = codes_option(rules_cfg.get("select"), f"{config.path}: [rules] select")
    chosen_ignore = codes_option(ignore, "--ignore")
    if chosen_ignore is None:
        chosen_ignore = codes_option(rules_cfg.get("ignore"), f"{config.path}: [rules] ignore")
    codes = select_codes(catalogue.specs, chosen_select, chosen_ignore)
    window = audit_window(since, until, config, now=now)
    _check_source(source)
    errors = [e for e in catalogue.errors if e.rule not in catalogue.specs or e.rule in codes]
    contexts = rule_contexts(catalogue, codes, window, config, price_book)
    runnable = [c for c in codes if c in catalogue.entries]
    job = AggregateJob(
        source=source,
        window=window,
        entries={code: catalogue.entries[code] for code in runnable},
        contexts=contexts,
        rows_per_part=rows_per_part,
    )
    if engine == "ray":
        from llmtrace.rules.ray_engine import aggregate_on_ray

        partials, calls_scanned = aggregate_on_ray(job, errors, report, address=address)
    elif engine == "local":
        with bounded_prefetch():
            partials, calls_scanned = aggregate_locally(job, errors, report)
    else:
        raise ConfigError(f"unknown engine {engine!r} (engines: local, ray)")
    if calls_scanned == 0:
        raise NothingToAudit(_empty_window_message(source, window))
    census = partials.pop(CENSUS, None)
    if census is None:
        census = [census_aggregate(scan_calls(source, window.since, window.until)).collect()]
    return merge_and_decide(job, partials, calls_scanned, errors, report, pl.concat(census))


def rule_contexts(
    catalogue: Catalogue,
    codes: Iterable[str],
    window: AuditWindow,
    config: Config,
    price_book: Any = None,
) -> dict[str, AuditContext]:
    """Each rule's ``AuditContext``: the window, its resolved parameters, the accuracy scores
    and the pricer for counterfactual calls (``price_book``; default: ``PriceBook.load()``)."""
    accuracy = AccuracyConfig.from_config(config)
    # Named scores only when the user named them; otherwise the importers' accuracy stands.
    scores = tuple(sorted(accuracy.names)) if accuracy.names_configured else ()
    return {
        code: AuditContext(
            since=window.since,
            until=window.until,
            baseline_since=window.baseline_since,
            baseline_until=window.baseline_until,
            params=resolve_params(catalogue.specs[code], config),
            accuracy_scores=scores,
            price=_pricer(price_book),
            accuracy_categories=accuracy.categories,
        )
        for code in codes
    }


def _check_source(source: Store | pl.LazyFrame | str) -> None:
    """A store that does not exist or holds no calls is an error, not an audit of nothing."""
    if isinstance(source, str) and not is_url(source):
        source = Store(source)
    if not isinstance(source, Store):
        return
    if not source.path.exists():
        raise NothingToAudit(f"no store at {source.path} (check --store or $LLMTRACE_STORE)")
    if not source.days():
        raise NothingToAudit(
            f"the store {source.path} holds no calls "
            "(import some with `llmtrace import`, or try `llmtrace demo`)"
        )


def _empty_window_message(source: Store | pl.LazyFrame | str, window: AuditWindow) -> str:
    """No calls in the window: say which dates the store does hold."""
    span = f"{window.since:%Y-%m-%d %H:%M} to {window.until:%Y-%m-%d %H:%M} UTC"
    if isinstance(source, str) and not is_url(source):
        source = Store(source)
    if isinstance(source, Store):
        days = source.days()
        held = f"{days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}" if days else "nothing"
        return (
            f"no calls in the window {span}; the store {source.path} holds calls from {held} "
            f"(choose the window with --since/--until)"
        )
    where = source if isinstance(source, str) else "the calls given"
    return f"no calls in the window {span} in {where}"
