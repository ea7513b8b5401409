"""A rule's ``derived_columns``: computed where the calls are read, in one pass and in spilled
parts alike (the spill writes the derived column, not the wide one it comes from)."""

from __future__ import annotations

from typing import Any, ClassVar

import polars as pl
import pytest
from audit_cells import END, demo_store

from llmtrace.config import Config
from llmtrace.rules import local_engine
from llmtrace.rules.engine import AggregateJob, aggregate_locally, audit_window, load_catalogue
from llmtrace.rules.engine import rule_contexts as contexts_of
from llmtrace.rules.loader import RuleEntry
from llmtrace.store import Store

FIRST = pl.col("prefix_tokens").list.first()


class FirstPrefixRule:
    """Per conversation: calls and the sum of the first prefix's tokens (read as ``_p0``)."""

    code: ClassVar[str] = "LT202"
    partition_family: ClassVar[str] = "session"
    partition_key: ClassVar[pl.Expr] = pl.col("conversation_id").hash(45)
    columns: ClassVar[tuple[str, ...]] = ("conversation_id", "_p0")
    derived_columns: ClassVar[dict[str, pl.Expr]] = {"_p0": FIRST}

    def aggregate(self, calls: pl.LazyFrame, ctx: Any) -> pl.LazyFrame:
        assert "prefix_tokens" not in calls.collect_schema()  # the narrow column only
        return calls.group_by("conversation_id").agg(
            pl.len().alias("calls"), pl.col("_p0").sum().alias("p0")
        )

    def merge(self, partials: list[pl.DataFrame], ctx: Any) -> pl.DataFrame:
        # calls outside conversations go to any part (by trace): their row is summed
        merged = pl.concat(partials).group_by("conversation_id").sum()
        return merged.sort("conversation_id", nulls_last=True)


class LineageRule(FirstPrefixRule):
    """The same figures by model, split by the lineage key: a grid with the session family."""

    code: ClassVar[str] = "LT203"
    partition_family: ClassVar[str] = "lineage"
    partition_key: ClassVar[pl.Expr] = pl.col("model").hash(1)
    columns: ClassVar[tuple[str, ...]] = ("model", "_p0")

    def aggregate(self, calls: pl.LazyFrame, ctx: Any) -> pl.LazyFrame:
        return calls.group_by("model").agg(pl.len().alias("calls"), pl.col("_p0").sum().alias("p0"))

    def merge(self, partials: list[pl.DataFrame], ctx: Any) -> pl.DataFrame:
        return pl.concat(partials).group_by("model").sum().sort("model", nulls_last=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return demo_store(tmp_path_factory.mktemp("derived") / "store")


def _merged(store: Store, rows_per_part: int) -> dict[str, pl.DataFrame]:
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, END, config)
    rules = {"LT202": FirstPrefixRule(), "LT203": LineageRule()}
    entries = {
        code: RuleEntry(spec=catalogue.specs[code], rule=rule, origin="custom", source="test")
        for code, rule in rules.items()
    }
    job = AggregateJob(
        source=store,
        window=window,
        entries=entries,
        contexts=contexts_of(catalogue, entries, window, config),
        rows_per_part=rows_per_part,
    )
    errors: list = []
    partials, _ = aggregate_locally(job, errors, lambda _: None)
    assert not errors, errors
    return {code: rules[code].merge(partials[code], None) for code in rules}


def test_derived_columns_in_one_pass_and_in_parts(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = store.scan(*_window()).with_columns(FIRST.alias("_p0")).collect()
    want = {
        "LT202": calls.group_by("conversation_id")
        .agg(pl.len().alias("calls"), pl.col("_p0").sum().alias("p0"))
        .sort("conversation_id", nulls_last=True),
        "LT203": calls.group_by("model")
        .agg(pl.len().alias("calls"), pl.col("_p0").sum().alias("p0"))
        .sort("model", nulls_last=True),
    }
    assert want["LT202"]["p0"].sum() > 0  # prefixes to sum: a real comparison
    written = _spilled_columns(monkeypatch)
    for rows_per_part in (10**12, 30_000):  # one pass; 2 parts: one grid of both families
        got = _merged(store, rows_per_part)
        for code in want:
            assert got[code].equals(want[code]), (code, rows_per_part)
    assert len(written) == 1
    assert "_p0" in written[0]
    assert "prefix_tokens" not in written[0]


def _window() -> tuple[Any, Any]:
    window = audit_window(None, END, Config(path=None, data={}))
    return window.since, window.until


def test_lt202_and_lt301_spill_the_conversation_hash_not_its_id(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session spill writes ``_c`` (8 bytes a call), not the near-unique id strings, for
    the two rules that read only the conversation's hash, and ``_hc``, the prefix hashes of
    conversation calls only (their cells against the frozen copy: tests/test_audit_cells.py)."""
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, END, config)
    codes = ["LT202", "LT301"]
    entries = {code: catalogue.entries[code] for code in codes}
    job = AggregateJob(
        source=store,
        window=window,
        entries=entries,
        contexts=contexts_of(catalogue, entries, window, config),
        rows_per_part=30_000,
    )
    written = _spilled_columns(monkeypatch)
    errors: list = []
    partials, _ = aggregate_locally(job, errors, lambda _: None)
    assert not errors, errors
    assert all(partials[code] for code in codes)
    assert len(written) == 1
    assert "_c" in written[0]
    assert "conversation_id" not in written[0]
    # and the conversation calls' prefix hashes, not every call's
    assert "_hc" in written[0]
    assert "prefix_hashes" not in written[0]
    in_conversations = sum(int(p["conversations"].sum()) for p in partials["LT202"])
    assert in_conversations > 0  # conversations found through the spilled hash


def _spilled_columns(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The columns each family spill of the engine writes (``keep``), as the audit runs."""
    written: list[list[str]] = []
    spilled = local_engine.aggregate_spilled_families

    def spy(calls: pl.LazyFrame, *args: Any, keep: list[str], **kwargs: Any) -> Any:
        written.append(keep)
        return spilled(calls, *args, keep=keep, **kwargs)

    monkeypatch.setattr(local_engine, "aggregate_spilled_families", spy)
    return written
