"""A store written before scores had an ``id`` (files whose score struct has four fields) keeps
working with no migration step: scans, costs, audit, appends, late scores and compaction read
the old files beside new ones, and a score with an id read again takes over its old copy."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from llmtrace import demo
from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config
from llmtrace.costs import summarize
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import CALL_SCHEMA, KEY_FIELDS, SCORE_STRUCT, conform
from llmtrace.rules.engine import run_audit
from llmtrace.store import Store

END = datetime(2026, 11, 20, tzinfo=UTC)
OLD_STRUCT = pl.Struct(
    {"name": pl.String, "value": pl.Float64, "label": pl.String, "source": pl.String}
)
ACCURACY = AccuracyConfig(names=frozenset({"accuracy"}))
KEY = list(KEY_FIELDS)


@pytest.fixture(scope="module")
def calls() -> pl.DataFrame:
    """Two days of priced demo calls; some carry demo accuracy scores (without id)."""
    return conform(price_calls(demo.generate(days=2, end=END), PriceBook())).collect()


def _write_old_shape(store: Store, frame: pl.DataFrame) -> list[Path]:
    """Write ``frame`` as the store did before: a file per day, scores of four fields."""
    old = frame.with_columns(pl.col("scores").cast(pl.List(OLD_STRUCT), strict=False))  # by name
    paths = []
    for (day,), part in old.group_by("day"):
        day_dir = store.calls_dir / f"day={day.isoformat()}"
        day_dir.mkdir(parents=True, exist_ok=True)
        path = day_dir / "part-20260101T000000000000-oldshape.parquet"
        part.write_parquet(path)
        paths.append(path)
    return paths


def _mixed_store(path: Path, calls: pl.DataFrame) -> tuple[Store, pl.DataFrame]:
    """Half the calls in old-shape files, the other half appended now; returns the old half."""
    store = Store(path)
    old = calls.gather_every(2)
    for file in _write_old_shape(store, old):
        assert pl.read_parquet_schema(file)["scores"] == pl.List(OLD_STRUCT)
    assert store.append(calls.join(old, on=KEY, how="anti")).added == calls.height - old.height
    return store, old


def _findings(source: Store | pl.LazyFrame) -> list[dict]:
    result = run_audit(source, until=END, config=Config())
    assert not result.errors
    return sorted((f.to_dict() for f in result.findings), key=str)


def test_old_shape_files_read_beside_new_ones_in_scans_costs_and_audit(tmp_path, calls):
    store, old = _mixed_store(tmp_path / "store", calls)
    assert store.append(old).added == 0  # the stored keys of the old files are read too
    stored = store.scan().collect()
    assert stored.schema == CALL_SCHEMA
    assert_frame_equal(stored.sort(KEY), calls.sort(KEY))  # old scores read with a null id
    assert stored["scores"].drop_nulls().len() > 100
    by = ["service", "model"]
    assert_frame_equal(summarize(store.scan(), by), summarize(calls.lazy(), by))


def test_the_audit_reads_old_shape_files(tmp_path, calls):
    store, _ = _mixed_store(tmp_path / "store", calls)
    assert _findings(store) == _findings(calls.lazy())


def test_a_store_url_reads_old_shape_files(tmp_path, calls):
    """``audit --engine ray`` and object stores read by URL, not through ``Store``."""
    from llmtrace.rules.partition import scan_location

    _mixed_store(tmp_path / "store", calls)
    since, until = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    stored = scan_location((tmp_path / "store").as_uri(), since, until).collect()
    assert_frame_equal(stored.sort(KEY), calls.sort(KEY))


def test_late_scores_and_compaction_rewrite_old_shape_files(tmp_path, calls):
    store, old = _mixed_store(tmp_path / "store", calls)
    scored = old.filter(pl.col("scores").list.len() == 1).row(0, named=True)
    bare = old.filter(pl.col("scores").is_null()).row(0, named=True)
    held = scored["scores"][0]
    assert held["id"] is None and held["source"] == "demo"

    def attach(call: dict, **score: object) -> object:
        row = {"trace_id": call["trace_id"], "span_id": call["span_id"], "score_id": "L1"}
        frame = pl.DataFrame(
            [{**row, "score": {**held, **score}}], schema_overrides={"score": SCORE_STRUCT}
        )
        return store.attach_scores(frame, ACCURACY)

    # the same verdict again, now with its source id: it takes over the old copy, no second one
    adopted = attach(scored, id="L1")
    assert (adopted.attached, adopted.replaced, adopted.present, adopted.calls) == (0, 0, 1, 1)
    flipped = 1.0 - held["value"]
    edited = attach(scored, id="L1", value=flipped, label="edited")
    assert (edited.attached, edited.replaced) == (0, 1)
    assert attach(bare).attached == 1  # no id: a copy, as before
    store.compact()
    for file in store.files():
        assert pl.read_parquet_schema(file)["scores"] == pl.List(SCORE_STRUCT)
    stored = store.scan().collect()
    assert stored.height == calls.height and stored.select(KEY).n_unique() == calls.height
    by_span = {r["span_id"]: r for r in stored.iter_rows(named=True)}
    mine = by_span[scored["span_id"]]
    assert mine["scores"] == [{**held, "id": "L1", "value": flipped, "label": "edited"}]
    assert mine["accuracy"] == flipped
    assert by_span[bare["span_id"]]["scores"] == [{**held, "id": None}]
    untouched = stored.join(pl.DataFrame([scored, bare]).select(KEY), on=KEY, how="anti")
    assert_frame_equal(
        untouched.sort(KEY), calls.join(untouched.select(KEY), on=KEY, how="semi").sort(KEY)
    )
