"""The one-pass rules computed together (``llmtrace.rules.cells``) give the same aggregates as
each rule alone: LT401, LT501 and the coverage census from one shared group-by of the current
window, every column compared (costs included: both ways read the same priced calls), on the
seeded demo store (issue 15)."""

from __future__ import annotations

import polars as pl
import pytest
from audit_cells import END, demo_store

from llmtrace.config import Config
from llmtrace.rules import local_engine
from llmtrace.rules.cells import Cells, shared_cells
from llmtrace.rules.engine import (
    CENSUS,
    AggregateJob,
    aggregate_locally,
    audit_window,
    census_aggregate,
    load_catalogue,
    rule_contexts,
)
from llmtrace.store import Store

SHARED = ("LT401", "LT501")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return demo_store(tmp_path_factory.mktemp("shared") / "store")


def _job(store: Store, codes: tuple[str, ...] | None = None) -> AggregateJob:
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, END, config)
    entries = {c: e for c, e in catalogue.entries.items() if codes is None or c in codes}
    return AggregateJob(
        source=store,
        window=window,
        entries=entries,
        contexts=rule_contexts(catalogue, entries, window, config),
    )


def _alone(job: AggregateJob) -> dict[str, pl.DataFrame]:
    """Each rule's aggregate by its own plan, and the census's (what the engine did before)."""
    current = job.source.scan(job.window.since, job.window.until)
    found = {
        code: job.aggregate(code, current.select(job.columns(code))).collect() for code in SHARED
    }
    found[CENSUS] = census_aggregate(current).collect()
    return found


def _differences(got: pl.DataFrame, want: pl.DataFrame) -> list[str]:
    """What differs: floats within 1e-9 relative (sums in another order), the rest exactly,
    rows matched by every non-float column."""
    if got.schema != want.schema:
        return [f"schema {got.schema} != {want.schema}"]
    order = [c for c in want.columns if not want[c].dtype.is_float()]
    got, want = got.sort(order, nulls_last=True), want.sort(order, nulls_last=True)
    if got.height != want.height:
        return [f"{got.height} rows != {want.height}"]
    out = []
    for name in want.columns:
        a, b = got[name], want[name]
        if a.dtype.is_float():
            close = ((a - b).abs() <= 1e-9 * (b.abs() + 1)) | (a.is_null() & b.is_null())
            if not close.fill_null(False).all():
                out.append(f"{name}: {(~close.fill_null(False)).sum()} values differ")
        elif not a.equals(b):
            out.append(f"{name}: {a.ne_missing(b).sum()} values differ")
    return out


def test_the_engine_shares_one_group_by_and_gets_each_rules_own_aggregate(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = _job(store)
    shared: list[set[str]] = []

    def spy(calls: pl.LazyFrame, rules: dict[str, Cells]) -> dict[str, pl.LazyFrame]:
        shared.append(set(rules))
        return shared_cells(calls, rules)

    monkeypatch.setattr(local_engine, "shared_cells", spy)
    errors: list = []
    partials, _ = aggregate_locally(job, errors, lambda _: None)
    assert not errors
    assert shared == [{*SHARED, CENSUS}]  # LT101 reads the baseline too: on its own
    want = _alone(job)
    for code, frame in want.items():
        assert frame.height > 5, code  # a real comparison
        assert len(partials[code]) == 1
        assert _differences(partials[code][0], frame) == [], code


def test_a_rule_whose_cells_fail_runs_on_its_own(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule whose ``cells`` raises is collected by its own plan; a shared pass that fails
    leaves every rule to its own plan: the same aggregates either way."""
    job = _job(store, ("LT401", "LT501"))
    want = _alone(job)
    rule = job.entries["LT501"].rule

    def broken(ctx: object) -> Cells:
        raise ValueError("no cells today")

    monkeypatch.setattr(rule, "cells", broken, raising=False)
    monkeypatch.setattr(rule, "aggregate", lambda calls, ctx: want["LT501"].lazy())
    partials, _ = aggregate_locally(job, [], lambda _: None)
    assert all(_differences(partials[c][0], want[c]) == [] for c in want)

    monkeypatch.undo()

    def failing(calls: pl.LazyFrame, rules: dict[str, Cells]) -> dict[str, pl.LazyFrame]:
        raise RuntimeError("shared pass failed")

    monkeypatch.setattr(local_engine, "shared_cells", failing)
    partials, _ = aggregate_locally(job, [], lambda _: None)
    assert all(_differences(partials[c][0], want[c]) == [] for c in want)


def test_a_changed_sum_is_caught(store: Store) -> None:
    """The comparison can fail: one key's cost off in LT501's aggregate is reported."""
    want = _alone(_job(store, SHARED))["LT501"]
    changed = want.with_columns(want["cost"].scatter(0, want["cost"][0] + 0.01))
    assert _differences(changed, want) == ["cost: 1 values differ"]
