"""Audit at scale (issue 7): key-hash parts, bounded compaction, bulk appends, pruning scans.

The 100M-call figures are measured by bench/ (see bench/README.md); these tests check, on the
demo workload, the properties those figures rely on: partitioned aggregation gives exactly the
findings of one pass, compaction bounds file sizes and keeps each file a sorted range, and a
filtered scan reads only the row groups it needs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from findings_compare import same_up_to_summation_order

from llmtrace import demo
from llmtrace.config import Config
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.rules import (
    lt101_reasoning,
    lt201_caching,
    lt202_history,
    lt203_unread_writes,
    lt301_context,
    lt502_duplicates,
    lt503_agent_loops,
)
from llmtrace.rules.engine import run_audit
from llmtrace.rules.partition import (
    SHARED_KEYS,
    aggregate_spilled,
    bounded_prefetch,
    filter_part,
    group_families,
    part_count,
    part_of,
    spill_dir,
    spill_grid,
)
from llmtrace.store import Store

END = datetime(2026, 11, 20, tzinfo=UTC)
SORT = ["prompt", "model", "start_time"]


def empty_config(tmp_path: Path) -> Config:
    return Config(path=tmp_path / "llmtrace.toml", data={})


@pytest.fixture(scope="module")
def priced() -> pl.DataFrame:
    """The 14-day demo workload (~90k calls, planted cases included), priced."""
    return price_calls(demo.generate(days=14, end=END, seed=7), PriceBook())


@pytest.fixture(scope="module")
def store(priced: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("scale") / "store")
    for part in priced.partition_by("day"):
        store.append(part)
    return store


def findings(result) -> list[dict]:
    return [f.to_dict() for f in result.findings]


# -- key-hash parts ------------------------------------------------------------------------------


def test_part_count() -> None:
    assert part_count(0, 10) == 1
    assert part_count(10, 10) == 1
    assert part_count(11, 10) == 2
    with pytest.raises(ValueError):
        part_count(5, 0)


def test_part_of_is_in_range_and_the_same_in_another_process() -> None:
    """Ray workers must put a key in the same part as the driver: the hash is seeded."""
    keys = pl.DataFrame({"k": [f"conv-{i}" for i in range(1000)]})
    here = keys.select(part_of(pl.col("k"), 7).alias("p"))["p"]
    assert here.min() >= 0 and here.max() <= 6 and here.n_unique() == 7
    code = (
        "import polars as pl; from llmtrace.rules.partition import part_of; "
        "keys = pl.DataFrame({'k': [f'conv-{i}' for i in range(1000)]}); "
        "print(keys.select(part_of(pl.col('k'), 7))['k'].to_list())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == here.to_list()


def test_filter_parts_cover_every_row_once(priced: pl.DataFrame) -> None:
    key = lt301_context.RULE.partition_key
    lazy = priced.lazy().select("span_id", "trace_id", "conversation_id", "start_time")
    parts = [filter_part(lazy, key, i, 5).collect() for i in range(5)]
    assert sum(p.height for p in parts) == priced.height
    conversations = [set(p["conversation_id"].drop_nulls()) for p in parts]
    for i, ids in enumerate(conversations):  # no conversation is split between parts
        assert all(not ids & other for other in conversations[i + 1 :])
    assert min(p.height for p in parts) > priced.height / 10  # single calls spread too


def test_a_grid_spill_gives_each_key_its_parts_whole(priced: pl.DataFrame, tmp_path: Path) -> None:
    """One spill split by two keys: for each key, its parts hold every row once, each part
    exactly the rows whose key hashes to it (so every group whole), read from the grid's cells."""
    keys = {"session": SHARED_KEYS["session"], "lineage": SHARED_KEYS["lineage"]}
    columns = ["span_id", "trace_id", "conversation_id", "provider", "model", "prompt"]
    lazy = priced.lazy().select(*columns, "prefix_hashes")
    with spill_dir(tmp_path) as directory:
        files = spill_grid(lazy, keys, 3, directory)
        assert len(list(directory.rglob("*.parquet"))) == 9  # 3 x 3 cells
        for name, key in keys.items():
            assert len(files[name]) == 3
            want = lazy.with_columns(part_of(key, 3).alias("_p")).collect()
            for part, paths in enumerate(files[name]):
                assert len(paths) == 3  # one cell per part of the other key
                got = pl.read_parquet(paths, hive_partitioning=False)
                expected = want.filter(pl.col("_p") == part).drop("_p")
                assert got.sort("span_id").equals(expected.sort("span_id")), (name, part)


def test_families_share_a_spill_only_while_the_grid_is_small() -> None:
    """Most shared columns first; 2 parts: three families in 8 cells; 3 parts: two in 9; more
    parts: each alone (a grid's sink buffers every cell)."""
    columns = {
        "session": ["a", "b", "c", "d"],
        "lineage": ["a", "b", "c"],
        "LT502": ["a", "e", "f"],
    }
    assert group_families(columns, 2) == [["session", "lineage", "LT502"]]
    assert group_families(columns, 3) == [["session", "lineage"], ["LT502"]]
    assert group_families(columns, 4) == [["session"], ["lineage"], ["LT502"]]
    assert group_families(columns, 1, cells=1) == [["session", "lineage", "LT502"]]


SPLIT_RULES = [
    lt201_caching.RULE,
    lt202_history.RULE,
    lt203_unread_writes.RULE,
    lt301_context.RULE,
    lt502_duplicates.RULE,
    lt503_agent_loops.RULE,
]


@pytest.mark.parametrize(
    ("family", "owner"),
    [
        ("lineage", lt203_unread_writes.RULE),
        ("session", lt503_agent_loops.RULE),
        ("conversation", lt301_context.RULE),
    ],
)
def test_shared_keys_split_by_the_keys_their_owners_split_by(
    family: str, owner: object, priced: pl.DataFrame
) -> None:
    """A family's key groups the calls exactly as the key of the rule it was made for (LT203's
    lineage, LT503's session): one family key per owner key and one owner key per family key
    over the demo's calls (the other members' groups are coarser-or-equal: tested below). The
    family key is cheaper to compute (xors of column hashes), not another grouping; LT301's
    conversation key places calls outside conversations by start time, never by trace."""
    shared, own = SHARED_KEYS[family], owner.partition_key  # type: ignore[attr-defined]
    assert set(shared.meta.root_names()) == set(own.meta.root_names())
    keys = priced.select(shared.alias("shared"), own.alias("own"))
    pairs = keys.n_unique()
    assert pairs == keys["shared"].n_unique() == keys["own"].n_unique() > 20


def test_shared_key_families_are_known() -> None:
    for rule in SPLIT_RULES:
        family = getattr(rule, "partition_family", None)
        assert family is None or family in SHARED_KEYS, rule.code


@pytest.mark.parametrize("shared", [False, True], ids=["own key", "family key"])
@pytest.mark.parametrize("rule", SPLIT_RULES, ids=lambda rule: rule.code)
def test_spilled_parts_merge_to_the_one_pass_aggregate(
    rule, shared: bool, store: Store, tmp_path: Path
) -> None:
    """Each rule's merged partials over 6 spilled parts, split by its own key or by its
    family's shared key, equal its aggregate over all calls."""
    key = rule.partition_key
    if shared:
        if getattr(rule, "partition_family", None) is None:
            pytest.skip(f"{rule.code} has no family")
        key = SHARED_KEYS[rule.partition_family]
    ctx, calls, whole = _rule_over_window(rule, key, store, tmp_path)
    with spill_dir(tmp_path) as directory:
        partials = aggregate_spilled(
            calls, lambda part: rule.aggregate(part.select(rule.columns), ctx), key, 6, directory
        )
        assert len(partials) == 6
    assert not directory.exists()  # the spill is removed
    _assert_same_cells(whole, rule.merge(partials, ctx))


def _rule_over_window(
    rule, key: pl.Expr, store: Store, tmp_path: Path
) -> tuple[Any, pl.LazyFrame, pl.DataFrame]:
    """The rule's context, the window's calls with its and the key's columns (a derived
    column computed where the calls are read, as the engine does), and its one-pass result."""
    from llmtrace.rules.engine import audit_window, column_exprs, derived_columns, resolve_params
    from llmtrace.rules.loader import builtin_specs

    config = empty_config(tmp_path)
    window = audit_window(None, END, config)
    ctx = _context(window, resolve_params(builtin_specs()[rule.code], config))
    columns = list(dict.fromkeys([*rule.columns, *key.meta.root_names()]))
    calls = store.scan(window.since, window.until).select(
        column_exprs(columns, derived_columns(rule))
    )
    whole = rule.merge([rule.aggregate(calls.select(rule.columns), ctx).collect()], ctx)
    return ctx, calls, whole


def _assert_same_cells(whole: pl.DataFrame, merged: pl.DataFrame) -> None:
    """The same cells with the same values (floats up to summation order)."""
    key = [c for c in whole.columns if whole[c].dtype in (pl.String, pl.Date, pl.Int32)]
    numbers = [c for c in whole.columns if c not in key]
    a = whole.sort(key, nulls_last=True)
    b = merged.select(whole.columns).sort(key, nulls_last=True)
    assert a.select(key).equals(b.select(key))
    for column in numbers:
        left, right = a[column], b[column]
        assert left.dtype == right.dtype, column
        if left.dtype.is_float():
            assert ((left - right).abs() <= 1e-9 * (left.abs() + 1)).all(), column
        else:
            assert left.equals(right), column


@pytest.mark.parametrize("rule", [lt202_history.RULE, lt301_context.RULE], ids=lambda r: r.code)
def test_calls_needing_no_part_merge_with_the_parts(rule, store: Store, tmp_path: Path) -> None:
    """A rule's ``aggregate_unparted`` of the calls its ``part_rows`` leaves out, merged with
    its aggregate of the others in 6 spilled parts, equals its aggregate of all calls: what
    lets the engine spill only the conversation family's conversation calls."""
    key = SHARED_KEYS[rule.partition_family]
    ctx, calls, whole = _rule_over_window(rule, key, store, tmp_path)
    rows = rule.part_rows
    single = calls.filter(~rows).select(rule.columns)
    assert 0 < single.select(pl.len()).collect().item() < calls.select(pl.len()).collect().item()
    with spill_dir(tmp_path) as directory:
        partials = aggregate_spilled(
            calls.filter(rows),
            lambda part: rule.aggregate(part.select(rule.columns), ctx),
            key,
            6,
            directory,
        )
    partials.append(rule.aggregate_unparted(single, ctx).collect())
    _assert_same_cells(whole, rule.merge(partials, ctx))


def test_a_family_spilling_alone_writes_only_the_calls_needing_a_part(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In many parts the conversation family spills alone, and only its conversation calls:
    the others go to LT202's and LT301's one-pass aggregates. Findings as in one pass."""
    from llmtrace.rules import partition
    from llmtrace.rules.engine import audit_window

    written: list[int] = []
    real = partition.spill

    def spy(calls: pl.LazyFrame, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        written.append(calls.select(pl.len()).collect().item())
        return real(calls, *args, **kwargs)

    monkeypatch.setattr(partition, "spill", spy)
    config = empty_config(tmp_path)
    codes = ["LT202", "LT301"]
    one = run_audit(store, until=END, config=config, select=codes)
    parts = run_audit(store, until=END, config=config, select=codes, rows_per_part=8_000)
    assert not one.errors and not parts.errors and parts.calls_scanned > 5 * 8_000
    window = audit_window(None, END, config)
    current = store.scan(window.since, window.until)
    talks = current.filter(pl.col("conversation_id").is_not_null()).select(pl.len()).collect()
    assert written == [talks.item()] and talks.item() < parts.calls_scanned
    assert same_up_to_summation_order(findings(parts), findings(one)), findings(parts)


def test_a_lone_lineage_spill_writes_its_names_as_categoricals(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In many parts the lineage family spills alone, and both its rules list their names in
    ``categorical_columns``: the spill writes them as categoricals, and LT201's and LT203's
    merged partials are their one-pass aggregates (names as strings, the same cells)."""
    from llmtrace.rules import partition
    from llmtrace.rules.engine import (
        AggregateJob,
        aggregate_locally,
        audit_window,
        load_catalogue,
        rule_contexts,
    )

    schemas: list[pl.Schema] = []
    real = partition.spill

    def spy(calls: pl.LazyFrame, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        schemas.append(calls.collect_schema())
        return real(calls, *args, **kwargs)

    monkeypatch.setattr(partition, "spill", spy)
    config = empty_config(tmp_path)
    catalogue, window, codes = (
        load_catalogue(config),
        audit_window(None, END, config),
        ["LT201", "LT203"],
    )

    def merged(rows_per_part: int) -> dict[str, pl.DataFrame]:
        job = AggregateJob(
            source=store,
            window=window,
            entries={code: catalogue.entries[code] for code in codes},
            contexts=rule_contexts(catalogue, codes, window, config),
            rows_per_part=rows_per_part,
        )
        errors: list = []
        partials, calls = aggregate_locally(job, errors, lambda _: None)
        assert not errors and calls > 5 * 8_000
        return {c: job.entries[c].rule.merge(partials[c], job.contexts[c]) for c in codes}

    whole = merged(10**9)
    assert schemas == []  # one pass: no spill
    parted = merged(8_000)
    assert len(schemas) == 1
    assert all(schemas[0][n] == pl.Categorical for n in ("provider", "model", "service", "prompt"))
    for code in codes:
        assert whole[code].height > 5, code
        assert parted[code].schema == whole[code].schema, code  # strings, not categoricals
        _assert_same_cells(whole[code], parted[code])


def _context(window, params):
    from llmtrace.rules.base import AuditContext

    return AuditContext(
        since=window.since,
        until=window.until,
        baseline_since=window.baseline_since,
        baseline_until=window.baseline_until,
        params=params,
        accuracy_scores=(),
        price=lambda calls: price_calls(calls, PriceBook()),
    )


def test_audit_in_parts_finds_exactly_what_one_pass_finds(store: Store, tmp_path: Path) -> None:
    config = empty_config(tmp_path)
    one = run_audit(store, until=END, config=config)
    parts = run_audit(store, until=END, config=config, rows_per_part=8_000)
    assert not one.errors and not parts.errors
    assert one.calls_scanned == parts.calls_scanned > 5 * 8_000  # really split
    assert same_up_to_summation_order(findings(parts), findings(one)), findings(parts)
    found = {(f.rule, f.prompt) for f in one.findings}
    planted = {(p.rule, p.prompt) for p in demo.PLANTED if p.expected == demo.FINDING}
    assert planted <= found
    assert not (store.path / "tmp").exists() or not any((store.path / "tmp").iterdir())


def test_the_audit_bounds_parquet_prefetch_and_gives_the_setting_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside, Polars' row-group prefetch is one per thread (what bounds the audit's peak on
    big row groups); outside, the environment is as it was; a user's own value stands."""
    name = "POLARS_ROW_GROUP_PREFETCH_SIZE"
    monkeypatch.delenv(name, raising=False)
    with bounded_prefetch():
        assert os.environ[name] == str(max(2, pl.thread_pool_size()))
    assert name not in os.environ
    monkeypatch.setenv(name, "16")
    with bounded_prefetch():
        assert os.environ[name] == "16"
    assert os.environ[name] == "16"


def test_token_sums_do_not_wrap(tmp_path: Path) -> None:
    """Polars wraps Int32 sums silently; partial aggregates must sum in Int64."""
    big = 2**31 - 1
    calls = pl.DataFrame(
        {
            "prompt": ["p"] * 3,
            "model": ["o3"] * 3,
            "service": ["s"] * 3,
            "reasoning_effort": ["high"] * 3,
            "start_time": [END - timedelta(hours=h) for h in (1, 2, 3)],
            "reasoning_tokens": [big] * 3,
        }
    )
    from llmtrace.record import conform
    from llmtrace.rules.engine import audit_window

    window = audit_window(None, END, empty_config(tmp_path))
    ctx = _context(window, {})
    lazy = conform(calls).select(lt101_reasoning.RULE.columns)
    agg = lt101_reasoning.RULE.aggregate(lazy, ctx).collect()
    assert agg["reasoning_tokens"].sum() == 3 * big


# -- the store at scale --------------------------------------------------------------------------


def test_bulk_append_skips_the_stored_key_lookup_but_not_in_frame_duplicates(
    priced: pl.DataFrame, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    part = priced.head(1000)
    assert store.append(pl.concat([part, part.head(10)]), check_stored=False).added == 1000
    # without the lookup a second append of the same rows is written again: callers promise
    # new keys (the demo generator's are new by construction)
    assert store.append(part.head(5), check_stored=False).added == 5
    assert store.append(part.head(5)).added == 0


def _keys(frame: pl.DataFrame) -> list[tuple]:
    return list(frame.select(SORT).iter_rows())


def test_compaction_splits_big_days_into_sorted_ranges(
    priced: pl.DataFrame, tmp_path: Path
) -> None:
    store = Store(tmp_path)
    for chunk in priced.head(40_000).iter_slices(5_000):
        store.append(chunk, check_stored=False)
    before = store.scan().collect()
    assert store.compact(max_rows_per_file=1_000) == len(store.days())
    assert store.compact(max_rows_per_file=1_000) == 0  # already compacted
    after = store.scan().collect()
    assert after.height == before.height
    assert after.select("trace_id", "span_id").n_unique() == before.height
    by_day: dict[str, list[Path]] = {}
    for path in store.files():
        by_day.setdefault(path.parent.name, []).append(path)
    files = max(by_day.values(), key=len)
    assert len(files) > 2
    frames = [pl.read_parquet(f) for f in files]
    for frame in frames:
        assert frame.height <= 1_250  # even sizes, cut at minute boundaries
        assert frame.equals(frame.sort(SORT, nulls_last=True))  # each file sorted
    for first, second in zip(frames, frames[1:], strict=False):
        assert _keys(first)[-1] <= _keys(second)[0]  # consecutive ranges of the sort order


def test_interrupted_split_compaction_reads_once(priced: pl.DataFrame, tmp_path: Path) -> None:
    """A crash after some of several new files were written: reads as before, then rolls back;
    with every new file in place: reads as after, then rolls forward."""
    store = Store(tmp_path)
    rows = priced.filter(pl.col("day") == pl.col("day").max()).head(300)
    store.append(rows.head(150))
    store.append(rows.tail(150))
    day_dir = store.files()[0].parent
    old = sorted(p.name for p in day_dir.glob("*.parquet"))
    merged = store.scan().collect().sort(SORT)
    halves = [merged.head(150), merged.tail(150)]
    names = ["compact-x-0000.parquet", "compact-x-0001.parquet"]
    journal = day_dir / "compaction.json"
    journal.write_text(json.dumps({"targets": names, "replaces": old}))
    halves[0].write_parquet(day_dir / names[0])  # only the first new file made it
    assert store.scan().collect().height == 300
    store.compact()  # a writer finishes (here: rolls back) the interrupted compaction first
    assert not (day_dir / names[0]).exists()
    assert store.scan().collect().height == 300

    old = sorted(p.name for p in day_dir.glob("*.parquet"))
    journal.write_text(json.dumps({"targets": names, "replaces": old}))
    for half, name in zip(halves, names, strict=True):
        half.write_parquet(day_dir / name)
    assert store.scan().collect().height == 300
    assert store.append(rows.head(1)).added == 0  # the keys in the new files are known
    fresh = rows.head(1).with_columns(pl.lit("f" * 16).alias("span_id"))
    assert store.append(fresh).added == 1  # a writer rolls the compaction forward first
    assert not journal.exists()
    assert set(names) <= {p.name for p in day_dir.glob("*.parquet")}
    assert not set(old) & {p.name for p in day_dir.glob("*.parquet")}
    assert store.scan().collect().height == 301


def test_filtered_scans_read_only_the_row_groups_they_need(
    priced: pl.DataFrame,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files sorted by prompt with small row groups: a prompt filter skips most row groups
    (Polars reports how many it read when verbose)."""
    import llmtrace.store as store_module

    # a demo day is ~6,500 calls; real days have 128k-row groups in files of up to 1M rows
    monkeypatch.setattr(store_module, "_ROW_GROUP_SIZE", 512)
    store = Store(tmp_path)
    store.append(priced)
    capfd.readouterr()
    with pl.Config(verbose=True):
        got = store.scan().filter(pl.col("prompt") == "troubleshooter@v3").collect()
    log = capfd.readouterr().err
    assert got.height == priced.filter(pl.col("prompt") == "troubleshooter@v3").height
    counts = [tuple(map(int, m)) for m in re.findall(r"reading (\d+) / (\d+) row groups", log)]
    assert counts, "Polars did not report row-group pruning"
    read, total = map(sum, zip(*counts, strict=True))
    assert read < total / 4


def test_generate_chunks_default_is_small(priced: pl.DataFrame) -> None:
    """The default chunk keeps the generator's memory bounded (~1 GB, bench/README.md)."""
    assert demo.DEFAULT_CHUNK <= 250_000
    chunk = next(demo.generate_chunks(30_000, chunk_size=30_000, end=END))
    assert chunk.height == 30_000 and chunk.schema == priced.drop([]).schema
