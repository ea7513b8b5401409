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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config, ConfigError, load_config
from llmtrace.record import conform
from llmtrace.rules.base import AuditContext, Finding
from llmtrace.rules.catalogue import (
    Catalogue,
    RuleError,
    check_rules_section,
    codes_option,
    load_catalogue,
    resolve_params,
    select_codes,
)
from llmtrace.rules.cells import Cells, cells_aggregate, shared_cells
from llmtrace.rules.history_joint import JOINT, JointParts
from llmtrace.rules.history_joint import applies as joint_applies
from llmtrace.rules.loader import RuleEntry
from llmtrace.rules.partition import (
    PARTITION_ROWS,
    SHARED_KEYS,
    Aggregate,
    Unparted,
    aggregate_spilled_families,
    bounded_prefetch,
    group_families,
    is_url,
    part_count,
    partition_key,
    present_columns,
    scan_location,
    spill_dir,
)
from llmtrace.store import Store

DEFAULT_WINDOW = timedelta(days=7)
DAY = timedelta(days=1)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AuditWindow:
    """The current window and the baseline it was compared with (UTC, end exclusive)."""

    since: datetime
    until: datetime
    baseline_since: datetime
    baseline_until: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "baseline_since": self.baseline_since.isoformat(),
            "baseline_until": self.baseline_until.isoformat(),
        }


class NothingToAudit(ConfigError):
    """The audit would read no calls: a missing store, an empty one, or a window without calls.

    A ``ConfigError`` (exit 2 on the command line): an audit of nothing must never pass a
    nightly ``--fail-on-savings`` gate, and the message names the store and the dates it holds.
    """


@dataclass(frozen=True)
class Coverage:
    """What the audit could judge: per rule and over all rules, by (prompt, model, service).

    ``judged``: keys at least one rule could judge (enough calls, a baseline, labels where the
    verdict needs them); ``flagged``: those of them with a finding; ``not_judged``: keys no rule
    could judge, each with the reasons the rules gave (too few calls, no baseline, no labels,
    no fingerprints...). ``by_rule`` holds the same counts and lists for each rule.
    """

    judged: int = 0
    flagged: int = 0
    not_judged: list[dict[str, Any]] = field(default_factory=list)
    by_rule: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def no_waste(self) -> int:
        """Keys checked with no finding."""
        return self.judged - self.flagged

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts_judged": self.judged,
            "prompts_with_findings": self.flagged,
            "prompts_checked_no_waste": self.no_waste,
            "prompts_not_judged": len(self.not_judged),
            "not_judged": self.not_judged,
            "by_rule": self.by_rule,
        }


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


# -- rule catalogue ------------------------------------------------------------------------------


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


def _scan(source: Store | pl.LazyFrame | str, start: datetime, until: datetime) -> pl.LazyFrame:
    if isinstance(source, Store):
        return source.scan(start, until)
    if isinstance(source, str):  # a store's path or object-store URL
        return scan_location(source, start, until)
    lazy = conform(source)
    return lazy.filter((pl.col("start_time") >= start) & (pl.col("start_time") < until))


def _rule_columns(entry: RuleEntry, ctx: AuditContext) -> list[str]:
    columns_for = getattr(entry.rule, "columns_for", None)
    columns = columns_for(ctx) if callable(columns_for) else entry.rule.columns
    return list(dict.fromkeys([*columns, "start_time"]))


def derived_columns(rule: Any) -> dict[str, pl.Expr]:
    """The rule's ``derived_columns``: names it may list among its columns, each computed from
    store columns by an expression where the calls are read (none when it declares none).

    Why: a rule that needs a little of a wide column (LT202 and LT301 read the first element of
    ``prefix_tokens``) reads a narrow one instead; a spill writes it as a plain column, so the
    rule's reads of every part skip decoding the wide one.
    """
    return dict(getattr(rule, "derived_columns", None) or {})


def column_exprs(names: Sequence[str], derived: Mapping[str, pl.Expr]) -> list[pl.Expr]:
    """The expressions that read ``names`` from call records: a derived column by its
    expression, any other by name."""
    return [derived[name].alias(name) if name in derived else pl.col(name) for name in names]


def _merged_derived(rules: Iterable[Any]) -> dict[str, pl.Expr]:
    """The derived columns of several rules; one name must mean one expression."""
    merged: dict[str, pl.Expr] = {}
    for rule in rules:
        for name, expr in derived_columns(rule).items():
            if name in merged and not merged[name].meta.eq(expr):
                raise ValueError(f"derived column {name!r} is defined twice, differently")
            merged[name] = expr
    return merged


def _collect(plans: dict[str, pl.LazyFrame], errors: list[RuleError]) -> dict[str, pl.DataFrame]:
    """Collect the plans one after the other; a failing rule is named.

    Not ``collect_all``: the plans hardly share work (each reads its own columns), and side by
    side their buffers add up: LT101, LT401, LT501 and the census on 10M calls peaked at 1.7 GB
    together, 0.74 GB one after the other, and took less CPU (7.3 against 7.8 s).
    """
    results: dict[str, pl.DataFrame] = {}
    for code, plan in plans.items():
        try:
            results[code] = plan.collect()
        except Exception as exc:
            errors.append(RuleError(code, f"aggregate failed: {_describe(exc)}"))
    return results


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
        census = [census_aggregate(_scan(source, window.since, window.until)).collect()]
    return _decide(job, partials, calls_scanned, errors, report, pl.concat(census))


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


def _decide(
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
            errors.append(RuleError(code, f"decide failed: {_describe(exc)}"))
            continue
        ran.append(code)
        cover = getattr(rule, "coverage", None)
        if callable(cover) and census is not None:
            try:
                statuses[code] = cover(merged, ctx, census, found)
            except Exception as exc:
                errors.append(RuleError(code, f"coverage failed: {_describe(exc)}"))
    findings.sort(key=_finding_order)
    return AuditResult(
        findings=findings,
        rules_run=ran,
        calls_scanned=calls_scanned,
        window=job.window,
        errors=errors,
        coverage=_coverage(statuses, findings),
    )


# -- what the audit could judge ------------------------------------------------------------------

CENSUS = "__census__"
KEY = ["prompt", "model", "service"]
_CENSUS_COLUMNS = [
    *KEY,
    "provider",
    "start_time",
    "prefix_hashes",
    "conversation_id",
    "reasoning_tokens",
    "input_tokens",
]


def census_aggregate(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Per (prompt, model, service) of the current window: calls and what the rules need of
    them (fingerprints, conversations, reasoning counts), so each rule can say which keys it
    could not judge and why. Computed in the same scan as the rules' aggregates."""
    return cells_aggregate(calls.select(_CENSUS_COLUMNS), census_cells())


def census_cells() -> Cells:
    """The census as cells (``llmtrace.rules.cells``), of every call it is given."""
    return Cells(
        where=pl.lit(True),
        keys={name: pl.col(name) for name in KEY},
        aggs={
            "calls": (pl.len().cast(pl.Int64), "sum"),
            "provider": (pl.col("provider").max(), "max"),
            "fingerprinted": (
                (pl.col("prefix_hashes").list.len() > 0).sum().cast(pl.Int64),
                "sum",
            ),
            "in_conversations": (
                pl.col("conversation_id").is_not_null().sum().cast(pl.Int64),
                "sum",
            ),
            "with_reasoning": (
                (pl.col("reasoning_tokens").fill_null(0) > 0).sum().cast(pl.Int64),
                "sum",
            ),
            "with_input": ((pl.col("input_tokens").fill_null(0) > 0).sum().cast(pl.Int64), "sum"),
            "first_call": (pl.col("start_time").min(), "min"),
            "last_call": (pl.col("start_time").max(), "max"),
        },
    )


def _coverage(statuses: dict[str, pl.DataFrame], findings: list[Finding]) -> Coverage:
    """Per rule and overall: keys judged, flagged, and not judged with reasons.

    A rule's ``coverage(merged, ctx, census, findings)`` returns one row per key it applies to
    (``prompt``, ``model``, ``service``, ``reason``: null when judged). A key counts as judged
    overall when any rule judged it, as not judged only when none could.
    """
    flagged_keys = {(f.prompt, f.model, f.service) for f in findings}
    judged: set[tuple[Any, ...]] = set()
    reasons: dict[tuple[Any, ...], set[str]] = {}
    by_rule: dict[str, dict[str, Any]] = {}
    for code, table in statuses.items():
        rule_flagged = {(f.prompt, f.model, f.service) for f in findings if f.rule == code}
        ok = table.filter(pl.col("reason").is_null()).select(KEY).unique().rows()
        missing = table.filter(pl.col("reason").is_not_null()).sort(KEY, nulls_last=True)
        judged.update(ok)
        for *key, reason in missing.select(*KEY, "reason").iter_rows():
            reasons.setdefault(tuple(key), set()).add(reason)
        by_rule[code] = {
            "judged": len(ok),
            "with_findings": len(rule_flagged & set(ok)),
            "no_waste": len(set(ok) - rule_flagged),
            "not_judged": [
                {"prompt": p, "model": m, "service": s, "reason": r}
                for p, m, s, r in missing.select(*KEY, "reason").iter_rows()
            ],
        }
    not_judged = [
        {"prompt": k[0], "model": k[1], "service": k[2], "reasons": sorted(r)}
        for k, r in sorted(reasons.items(), key=lambda item: tuple(str(v) for v in item[0]))
        if k not in judged
    ]
    return Coverage(
        judged=len(judged),
        flagged=len(judged & flagged_keys),
        not_judged=not_judged,
        by_rule=by_rule,
    )


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


def _finding_order(finding: Finding) -> tuple[float, str, str, str, str]:
    """Biggest saving first, by the cent; ties broken by the finding's key.

    Cents, not the raw float: partitions (or Ray tasks) sum in another order, which moves a
    saving in its last bits, and two findings a hair apart must not swap places between runs.
    """
    key = json.dumps(finding.key, sort_keys=True, default=str)
    cents = -round(finding.monthly_savings_usd, 2)
    return (cents, finding.rule, finding.prompt or "", finding.model or "", key)


# -- the aggregate step --------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateJob:
    """What the aggregate step of one audit needs, whichever engine runs it.

    ``entries`` are the rules to run (in report order) and ``contexts`` their parameters and
    windows; ``rows_per_part`` is how many calls one part of a key-partitioned rule may hold.
    """

    source: Store | pl.LazyFrame | str
    window: AuditWindow
    entries: dict[str, RuleEntry]
    contexts: dict[str, AuditContext]
    rows_per_part: int = PARTITION_ROWS

    def needs_baseline(self, code: str) -> bool:
        return bool(getattr(self.entries[code].rule, "needs_baseline", False))

    def start(self, code: str) -> datetime:
        """Where the calls a rule reads begin: its baseline window, or the current one."""
        return self.window.baseline_since if self.needs_baseline(code) else self.window.since

    def columns(self, code: str) -> list[str]:
        return _rule_columns(self.entries[code], self.contexts[code])

    def column_exprs(self, code: str) -> list[pl.Expr]:
        """What the rule reads of call records: its columns, derived ones computed."""
        return column_exprs(self.columns(code), derived_columns(self.entries[code].rule))

    def rare(self, code: str) -> tuple[str, ...]:
        """Columns the rule reads only in rare cases (``rare_columns``): a spill does not
        write them, and a part that needs them is read again (``partition.ColumnsNotSpilled``)."""
        return tuple(getattr(self.entries[code].rule, "rare_columns", None) or ())

    def derived(self, codes: Iterable[str]) -> dict[str, pl.Expr]:
        """The derived columns the rules ``codes`` read (one name, one expression)."""
        return _merged_derived(self.entries[code].rule for code in codes)

    def key(self, code: str) -> pl.Expr | None:
        """The rule's partition key (None: any split of its calls merges exactly)."""
        return partition_key(self.entries[code].rule, self.contexts[code])

    def aggregate(self, code: str, calls: pl.LazyFrame) -> pl.LazyFrame:
        return self.entries[code].rule.aggregate(calls, self.contexts[code])

    def bounds_memory(self, code: str) -> bool:
        """The rule's aggregate keeps its own memory bounded (``bounded_memory``): the local
        engine runs it in one pass even with a partition key, which Ray's parts still use."""
        return bool(getattr(self.entries[code].rule, "bounded_memory", False))

    def family(self, code: str) -> str:
        """The shared key the rule can split by (``partition_family``), else its own code."""
        name = getattr(self.entries[code].rule, "partition_family", None)
        return name if name in SHARED_KEYS else code


def aggregate_locally(
    job: AggregateJob, errors: list[RuleError], report: Progress
) -> tuple[dict[str, list[pl.DataFrame]], int]:
    """Each rule's partial aggregates on this machine, and the calls in the current window.

    Rules whose partials merge under any split are collected in one pass each over the
    window. A rule with a partition key, when the window holds more calls than one part should
    (``rows_per_part``), runs in key-hash parts spilled to disk beside the store
    (``llmtrace.rules.partition``): memory stays bounded by one part and time linear. Rules of
    one ``partition_family`` share a spill (the union of their columns, written once), and at
    few parts several families share one (``partition.group_families``).
    """
    window = job.window
    start = min([window.since, *(job.start(code) for code in job.entries)])
    scan = _scan(job.source, start, window.until)
    current = scan.filter(pl.col("start_time") >= window.since)
    report("counting calls")
    calls_scanned = int(current.select(pl.len()).collect().item())
    parts = part_count(calls_scanned, job.rows_per_part)
    plans: dict[str, pl.LazyFrame] = {}
    families: dict[tuple[str, bool], list[str]] = {}
    for code in job.entries:
        base = scan if job.needs_baseline(code) else current
        try:
            calls = base.select(job.column_exprs(code))
            key = job.key(code) if parts > 1 and not job.bounds_memory(code) else None
            if key is not None:
                families.setdefault((job.family(code), job.needs_baseline(code)), []).append(code)
            else:
                plans[code] = job.aggregate(code, calls)
        except Exception as exc:
            errors.append(RuleError(code, f"aggregate failed: {_describe(exc)}"))
    report(f"scanning calls for {', '.join(plans) or 'no rules'}")
    plans[CENSUS] = census_aggregate(current)
    shared = _shared_cells(job, current, plans)
    plans = {code: plan for code, plan in plans.items() if code not in shared}
    partials = {code: [frame] for code, frame in _collect(plans, errors).items()}
    partials |= {code: [frame] for code, frame in shared.items()}
    for baseline in (False, True):
        chosen = {family: codes for (family, base), codes in families.items() if base == baseline}
        if not chosen:
            continue
        columns = {family: _family_columns(job, codes) for family, codes in chosen.items()}
        for group in group_families(columns, parts):
            codes = [code for family in group for code in chosen[family]]
            report(f"scanning calls for {', '.join(codes)} in {parts} parts")
            calls = scan if baseline else current
            results = _aggregate_families(job, {f: chosen[f] for f in group}, calls, parts)
            for code in codes:
                result = results[code]
                if isinstance(result, Exception):
                    errors.append(RuleError(code, f"aggregate failed: {_describe(result)}"))
                else:
                    partials[code] = result
    return partials, calls_scanned


def _shared_cells(
    job: AggregateJob, current: pl.LazyFrame, plans: dict[str, pl.LazyFrame]
) -> dict[str, pl.DataFrame]:
    """The aggregates of the one-pass rules over the current window that describe them as
    ``Cells`` (LT401, LT501) and the census's, from one group-by (``cells.shared_cells``).

    Why: each of them hashes the string keys of every call of the window in its own
    group-by, and that is most of their CPU: on the 10M store's 5.0M-call window LT401,
    LT501 and the census took 0.45 + 0.85-0.91 + 0.67-0.71 CPU-s one after the other and
    1.40-1.43 in one shared group-by (issue 15). Not LT101, which reads the baseline window
    too: with it, the shared group-by over both windows (LT101's effort and bin keys times
    LT501's hours) cost 4.2 against 3.0 CPU-s for the two. Nothing to share (fewer than
    two) or the shared pass failing: {}, and each plan is collected on its own as before (a
    failing rule is then named by its own collect).
    """
    chosen: dict[str, Cells] = {}
    for code in plans:
        if code == CENSUS:
            continue
        rule, ctx = job.entries[code].rule, job.contexts[code]
        if job.needs_baseline(code) or not callable(getattr(rule, "cells", None)):
            continue
        try:
            chosen[code] = rule.cells(ctx)
        except Exception:  # the rule's own plan names the problem
            continue
    if CENSUS in plans:
        chosen[CENSUS] = census_cells()
    if len(chosen) < 2:
        return {}
    codes = [code for code in chosen if code != CENSUS]
    columns = [c for code in codes for c in job.columns(code)]
    if CENSUS in chosen:
        columns += _CENSUS_COLUMNS
    try:
        calls = current.select(column_exprs(list(dict.fromkeys(columns)), job.derived(codes)))
        return {code: plan.collect() for code, plan in shared_cells(calls, chosen).items()}
    except Exception:  # each plan on its own reports what failed
        return {}


def _family_key(job: AggregateJob, family: str, codes: list[str]) -> pl.Expr:
    key = SHARED_KEYS[family] if family in SHARED_KEYS else job.key(codes[0])
    if key is None:
        raise ValueError(f"{codes[0]} has no partition key")
    return key


def _family_columns(job: AggregateJob, codes: list[str]) -> list[str]:
    """The columns one family's spill writes: what its rules read, but a rule's
    ``rare_columns`` only when another rule reads them too (the key's are added when it is
    spilled)."""
    return list(
        dict.fromkeys(c for code in codes for c in job.columns(code) if c not in job.rare(code))
    )


def _aggregate_families(
    job: AggregateJob, families: dict[str, list[str]], calls: pl.LazyFrame, parts: int
) -> dict[str, list[pl.DataFrame] | Exception]:
    """The partials of rules that split by a shared key, from one spill of the union of their
    families' columns, split by each family's key (``partition.spill_grid``); each rule reads
    back only its own columns of its family's parts. A column only a key reads (the session
    key's ``trace_id`` when no rule in parts reads it) is not written."""
    codes = [code for members in families.values() for code in members]
    try:
        keys = {family: _family_key(job, family, members) for family, members in families.items()}
        read = [c for members in families.values() for c in _family_columns(job, members)]
        read = list(dict.fromkeys(read))
        alone = {f: u for f, members in families.items() if (u := _unparted(job, members))}
        roots = [*keys.values(), *(u.rows for u in alone.values())]
        keyed = [c for key in roots for c in key.meta.root_names() if c not in read]
        rare = [c for code in codes for c in job.rare(code) if c not in read]
        # the rare columns are not written, but a part read again from ``spilled`` has them
        spilled = calls.select(
            column_exprs(list(dict.fromkeys([*read, *rare, *keyed])), job.derived(codes))
        )
        grid = {
            family: (keys[family], _part_aggregates(job, members))
            for family, members in families.items()
        }
        with spill_dir(_spill_base(job.source)) as directory:
            # only the columns the rules read are written: a key's other columns are hashed
            return aggregate_spilled_families(
                spilled, grid, parts, directory, keep=read, unparted=alone
            )
    except Exception as exc:
        return dict.fromkeys(codes, exc)


def _unparted(job: AggregateJob, codes: list[str]) -> Unparted | None:
    """The calls a family's rules all need in no part (``part_rows``, one expression for
    every rule), and each rule's one-pass aggregate of them (``aggregate_unparted``), one day
    of the window at a time: a day's store files, and memory bounded by a day's calls."""
    rules = [job.entries[code].rule for code in codes]
    rows = [getattr(rule, "part_rows", None) for rule in rules]
    if not all(isinstance(r, pl.Expr) and r.meta.eq(rows[0]) for r in rows) or not all(
        callable(getattr(rule, "aggregate_unparted", None)) for rule in rules
    ):
        return None

    def one_pass(code: str, calls: pl.LazyFrame) -> pl.LazyFrame:
        rule, columns = job.entries[code].rule, present_columns(calls, job.columns(code))
        return rule.aggregate_unparted(calls.select(columns), job.contexts[code])

    # UTC days, as the store's files hold them: each file is read by one slice
    start, end = min(job.start(code) for code in codes), job.window.until
    first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = [first + DAY * i for i in range(math.ceil((end - first) / DAY))]
    at = pl.col("start_time")
    slices = [(at >= max(day, start)) & (at < min(day + DAY, end)) for day in days]
    aggregates = {code: functools.partial(one_pass, code) for code in codes}
    return Unparted(rows[0], aggregates, slices)


def _part_aggregates(job: AggregateJob, codes: list[str]) -> dict[str, Aggregate]:
    """Each rule's aggregate over a part, reading its own columns of it; LT202's and LT301's
    from one read and one replay of the part (``history_joint``) when both run over it."""

    def own(code: str, part: pl.LazyFrame) -> pl.LazyFrame:
        return job.aggregate(code, part.select(present_columns(part, job.columns(code))))

    aggregates: dict[str, Aggregate] = {code: functools.partial(own, code) for code in codes}
    if all(code in codes for code in JOINT) and joint_applies(job.entries, job.contexts):
        columns = list(dict.fromkeys(c for code in JOINT for c in job.columns(code)))
        joint = JointParts(job.contexts, columns, own)
        aggregates |= {code: functools.partial(joint.aggregate, code) for code in JOINT}
    return aggregates


def _spill_base(source: Store | pl.LazyFrame | str) -> Path | None:
    """Spill beside the store (its disk has room for it); a frame's spill goes to the temp dir."""
    if isinstance(source, Store):
        return source.path / "tmp"
    if isinstance(source, str) and not is_url(source):
        return Path(source) / "tmp"
    return None
