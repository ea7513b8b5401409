"""The store: idempotent atomic appends, day partitions, windowed scans, crash-safe compaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from llmtrace.record import CALL_SCHEMA
from llmtrace.store import Store


def _calls(n: int, start: datetime, prefix: str = "t") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trace_id": [f"{prefix}{i // 3}" for i in range(n)],
            "span_id": [f"s{i}" for i in range(n)],
            "start_time": [start + timedelta(hours=7 * i) for i in range(n)],
            "input_tokens": list(range(n)),
            "model": ["gpt-4o"] * n,
        }
    )


T0 = datetime(2026, 11, 1, 3, tzinfo=UTC)


def test_append_is_idempotent_and_partitions_by_day(tmp_path):
    store = Store(tmp_path)
    calls = _calls(20, T0)
    first = store.append(calls)
    assert (first.added, first.duplicates) == (20, 0)
    again = store.append(calls)
    assert (again.added, again.duplicates) == (0, 20)
    stored = store.scan().collect()
    assert stored.schema == CALL_SCHEMA
    assert stored.height == 20
    assert sorted(stored["input_tokens"].to_list()) == list(range(20))
    assert [d.isoformat() for d in store.days()] == sorted(
        {(T0 + timedelta(hours=7 * i)).date().isoformat() for i in range(20)}
    )


def test_partial_overlap_adds_only_new_rows_and_dedupes_within_batch(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(10, T0))
    batch = pl.concat([_calls(15, T0), _calls(15, T0).head(2)])
    result = store.append(batch)
    assert (result.added, result.duplicates) == (5, 12)
    assert store.scan().collect().height == 15


def test_scan_window_filters_by_start_time(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(20, T0))
    since, until = T0 + timedelta(hours=14), T0 + timedelta(hours=49)
    got = store.scan(since, until).collect()
    expected = [i for i in range(20) if since <= T0 + timedelta(hours=7 * i) < until]
    assert sorted(got["input_tokens"].to_list()) == expected
    # only the files of days in range are opened
    assert len(store.files(since, until)) < len(store.files())


def test_empty_store_scans_to_empty_frame(tmp_path):
    frame = Store(tmp_path / "nothing").scan().collect()
    assert frame.height == 0 and frame.schema == CALL_SCHEMA


def test_rows_without_key_are_refused_and_nothing_written(tmp_path):
    store = Store(tmp_path)
    bad = _calls(3, T0).with_columns(pl.lit(None, dtype=pl.String).alias("span_id"))
    with pytest.raises(ValueError, match="lack trace_id, span_id or start_time"):
        store.append(bad)
    assert store.scan().collect().height == 0


def test_compaction_merges_days_and_keeps_every_row_once(tmp_path):
    store = Store(tmp_path)
    for k in range(4):
        store.append(_calls(6, T0, prefix=f"b{k}-"))
    assert len(store.files()) > len(store.days())
    assert store.compact() == len(store.days())
    assert len(store.files()) == len(store.days())
    assert store.scan().collect().height == 24
    assert store.append(_calls(6, T0, prefix="b0-")).added == 0


def test_interrupted_compaction_reads_once_and_rolls_forward(tmp_path):
    """Simulate a crash after the merged file was renamed in but before old files were removed."""
    store = Store(tmp_path)
    store.append(_calls(2, T0, prefix="a"))
    store.append(_calls(2, T0, prefix="b"))
    day_dir = store.files()[0].parent
    old = sorted(p.name for p in day_dir.glob("*.parquet"))
    merged = store.scan().collect()
    target = day_dir / "part-merged.parquet"
    merged.write_parquet(target)
    (day_dir / "compaction.json").write_text(json.dumps({"target": target.name, "replaces": old}))
    assert store.scan().collect().height == 4  # not 8: the journal hides replaced files
    store.append(_calls(1, T0, prefix="c"))  # a writer finishes the compaction first
    assert not (day_dir / "compaction.json").exists()
    assert store.scan().collect().height == 5


def test_state_roundtrip(tmp_path):
    store = Store(tmp_path)
    assert store.read_state("langfuse") == {}
    store.write_state("langfuse", {"cursor": "abc", "n": 3})
    assert store.read_state("langfuse") == {"cursor": "abc", "n": 3}
