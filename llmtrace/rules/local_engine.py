"""The aggregate step on this machine: one-pass rules, shared group-bys, and key-hash spills.

Why a module of its own: this is where the audit's time and memory go (reading the store,
the shared cells of LT401/LT501/the census, the spills of the key-partitioned families and
the per-day pass over the calls a family needs in no part), and it changes with every speed
round; ``run_audit`` (``engine``) only calls ``aggregate_locally``, and the Ray engine
replaces it with tasks (``ray_engine``).
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, timedelta
from pathlib import Path

import polars as pl

from llmtrace.rules.catalogue import RuleError
from llmtrace.rules.cells import Cells, shared_cells
from llmtrace.rules.coverage import CENSUS, CENSUS_COLUMNS, census_aggregate, census_cells
from llmtrace.rules.history_joint import JOINT, JointParts
from llmtrace.rules.history_joint import applies as joint_applies
from llmtrace.rules.job import AggregateJob, Progress, column_exprs, describe, scan_calls
from llmtrace.rules.partition import (
    SHARED_KEYS,
    Aggregate,
    Unparted,
    aggregate_spilled_families,
    group_families,
    is_url,
    part_count,
    present_columns,
    spill_dir,
)
from llmtrace.store import Store

DAY = timedelta(days=1)


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
            errors.append(RuleError(code, f"aggregate failed: {describe(exc)}"))
    return results


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
    scan = scan_calls(job.source, start, window.until)
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
            errors.append(RuleError(code, f"aggregate failed: {describe(exc)}"))
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
        columns = {family: family_columns(job, codes) for family, codes in chosen.items()}
        for group in group_families(columns, parts):
            codes = [code for family in group for code in chosen[family]]
            report(f"scanning calls for {', '.join(codes)} in {parts} parts")
            calls = scan if baseline else current
            results = _aggregate_families(job, {f: chosen[f] for f in group}, calls, parts)
            for code in codes:
                result = results[code]
                if isinstance(result, Exception):
                    errors.append(RuleError(code, f"aggregate failed: {describe(result)}"))
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
        columns += CENSUS_COLUMNS
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


def family_columns(job: AggregateJob, codes: list[str]) -> list[str]:
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
        read = [c for members in families.values() for c in family_columns(job, members)]
        read = list(dict.fromkeys(read))
        alone = {f: u for f, members in families.items() if (u := _unparted(job, members))}
        roots = [*keys.values(), *(u.rows for u in alone.values())]
        keyed = [c for key in roots for c in key.meta.root_names() if c not in read]
        rare = [c for code in codes for c in job.rare(code) if c not in read]
        # the rare columns are not written, but a part read again from ``spilled`` has them
        spilled = calls.select(
            column_exprs(list(dict.fromkeys([*read, *rare, *keyed])), job.derived(codes))
        ).with_columns(pl.col(_categorical(job, codes, read)).cast(pl.Categorical))
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


def _categorical(job: AggregateJob, codes: list[str], read: list[str]) -> list[str]:
    """The spilled string columns every rule of the spill lists in ``categorical_columns``:
    written as ``pl.Categorical``, which each of those rules turns back into strings in its
    result.

    Why: at many parts the lineage family (LT201, LT203) spills alone, every call of the
    window, and each part's Parquet dictionary of each of its four name columns (provider,
    model, service, prompt) is built from the strings. On one day of the 100M store in 21
    parts (``bench/profile_audit.py --days 1 --rows-per-part 340000``, 8.0M calls, load
    2.3-3.8) the spill took 5.03-5.07 CPU-s as categoricals against 5.43-5.53 as strings, the
    whole audit 22.8-22.9 against 23.6-23.9, the same findings (issue 15). Where another
    family shares the spill (the 10M store's grid) its rules list none, and nothing changes.
    """
    lists = [set(getattr(job.entries[code].rule, "categorical_columns", ())) for code in codes]
    common = set.intersection(*lists) if lists else set()
    return [c for c in read if c in common]


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
