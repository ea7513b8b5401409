"""The store: idempotent atomic appends, day partitions, windowed scans, crash-safe compaction,
and late scores merged into stored calls."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from llmtrace.accuracy import AccuracyConfig
from llmtrace.record import CALL_SCHEMA, SCORE_STRUCT
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


def test_a_key_repeated_within_a_batch_of_new_rows_is_written_once_the_first_kept(tmp_path):
    """The de-duplication runs only where a key repeats (issue 15): a batch of new keys, one
    of them twice with other values, stores the first of the two."""
    store = Store(tmp_path)
    calls = _calls(6, T0)
    twice = calls.slice(4, 1).with_columns(pl.lit(999, dtype=pl.Int64).alias("input_tokens"))
    result = store.append(pl.concat([calls, twice]))
    assert (result.added, result.duplicates) == (6, 1)
    assert result.keys is not None and result.keys.height == 6
    stored = store.scan().collect()
    assert sorted(stored["input_tokens"].to_list()) == list(range(6))


def test_a_batch_of_one_day_is_written_as_one_file_of_that_day(tmp_path):
    """A batch within one day skips the group-by by day (issue 15): every row lands in that
    day's single file, and a batch across days still lands day by day."""
    store = Store(tmp_path)
    one_day = _calls(3, T0)  # 03:00, 10:00, 17:00 of one day
    assert store.append(one_day).added == 3
    assert [d.isoformat() for d in store.days()] == [T0.date().isoformat()]
    assert len(store.files()) == 1
    assert sorted(store.scan().collect()["input_tokens"].to_list()) == [0, 1, 2]
    later = _calls(8, T0 + timedelta(days=3), prefix="u")
    assert store.append(later).added == 8
    days = {(T0 + timedelta(days=3, hours=7 * i)).date() for i in range(8)} | {T0.date()}
    assert set(store.days()) == days
    by_day = store.scan().group_by("day").len().collect()
    assert by_day.get_column("len").sum() == 11 and by_day.height == len(days)


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


# -- late scores: attach_scores ----------------------------------------------------------------


def _score(
    name: str,
    value: float | None,
    label: str | None = None,
    source: str = "judge",
    id: str | None = None,
):
    return {"name": name, "value": value, "label": label, "source": source, "id": id}


def _scores(rows: list[dict]) -> pl.DataFrame:
    """attach_scores input: trace_id, span_id, score, plus whatever optional columns rows set."""
    columns = {"trace_id", "span_id", "score", *(k for r in rows for k in r)}
    full = [{c: r.get(c) for c in sorted(columns)} for r in rows]
    schema = {c: pl.String for c in columns} | {"score": SCORE_STRUCT}
    if "rank" in columns:
        schema["rank"] = pl.Int64
    return pl.DataFrame(full, schema=schema)


def _stored_scores(store: Store) -> dict[str, tuple[list | None, float | None]]:
    rows = store.scan().collect().select("span_id", "scores", "accuracy").rows()
    return {span: (scores, accuracy) for span, scores, accuracy in rows}


ACCURACY = AccuracyConfig(names=frozenset({"accuracy", "correct"}))


def test_attach_scores_reaches_calls_by_span_trace_and_response(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(9, T0).with_columns(pl.format("r-{}", "span_id").alias("response_id")))
    result = store.attach_scores(
        _scores(
            [
                {"trace_id": "t0", "span_id": "s1", "score": _score("accuracy", 1.0)},
                {"trace_id": "t1", "score": _score("correct", None, "fail")},  # whole trace
                {"trace_id": None, "span_id": "s6", "score": _score("accuracy", 0.5)},
                {"trace_id": None, "response_id": "r-s7", "score": _score("tone", 4.0)},
                {"trace_id": "t9", "score": _score("accuracy", 1.0)},  # no such trace
                {
                    "trace_id": "t0",
                    "span_id": "s4",
                    "score": _score("accuracy", 1.0),
                },  # wrong trace
            ]
        ),
        ACCURACY,
    )
    assert (result.attached, result.present, result.unmatched) == (4, 0, 2)
    assert result.unmatched_ids == {"#4", "#5"}
    assert result.calls == 6  # s1, s3..s5, s6, s7
    got = _stored_scores(store)
    assert got["s1"] == ([_score("accuracy", 1.0)], 1.0)
    assert [got[s] for s in ("s3", "s4", "s5")] == [([_score("correct", None, "fail")], 0.0)] * 3
    assert got["s6"] == ([_score("accuracy", 0.5)], 0.5)
    assert got["s7"] == ([_score("tone", 4.0)], None)  # kept, but not accuracy
    assert got["s0"] == (None, None) and got["s8"] == (None, None)
    assert store.scan().collect().height == 9


def test_attach_scores_uses_the_best_ranked_target_of_a_score(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(6, T0))
    verdict = _score("accuracy", 0.0)
    alternatives = [  # e1: its own span is not stored, its parent s2 is; e2: s4 wins over s5
        {"score_id": "e1", "rank": 0, "trace_id": "t0", "span_id": "judge", "score": verdict},
        {"score_id": "e1", "rank": 2, "trace_id": "t0", "span_id": "s2", "score": verdict},
        {"score_id": "e2", "rank": 0, "trace_id": "t1", "span_id": "s4", "score": verdict},
        {"score_id": "e2", "rank": 2, "trace_id": "t1", "span_id": "s5", "score": verdict},
    ]
    result = store.attach_scores(_scores(alternatives), ACCURACY)
    assert (result.attached, result.unmatched, result.calls) == (2, 0, 2)
    got = _stored_scores(store)
    assert {s for s, (scores, _) in got.items() if scores} == {"s2", "s4"}


def test_attach_scores_is_idempotent_and_keeps_equal_scores_of_different_evaluators(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(3, T0))
    same = _score("accuracy", 1.0)
    two = _scores(
        [
            {"score_id": "judge-a", "trace_id": "t0", "span_id": "s0", "score": same},
            {"score_id": "judge-b", "trace_id": "t0", "span_id": "s0", "score": same},
            {"score_id": "judge-b", "trace_id": "t0", "span_id": "s0", "score": same},  # read twice
        ]
    )
    assert store.attach_scores(two, ACCURACY).attached == 2
    files = sorted(store.files())
    again = store.attach_scores(two, ACCURACY)
    assert (again.attached, again.present, again.calls, again.files) == (0, 2, 0, 0)
    assert sorted(store.files()) == files  # nothing was rewritten
    assert _stored_scores(store)["s0"] == ([same, same], 1.0)
    third = _scores([{"score_id": "judge-c", "trace_id": "t0", "span_id": "s0", "score": same}])
    assert store.attach_scores(pl.concat([two, third]), ACCURACY).attached == 1
    assert len(_stored_scores(store)["s0"][0]) == 3


def test_attach_scores_rewrites_only_the_files_of_scored_calls(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(12, T0))  # 4 days
    store.append(_calls(12, T0, prefix="u"))
    store.compact()
    before = {p.parent.name: p.name for p in store.files()}
    result = store.attach_scores(
        _scores([{"trace_id": "t0", "span_id": "s0", "score": _score("accuracy", 1.0)}]),
        ACCURACY,
    )
    assert (result.calls, result.files) == (1, 1)
    after = {p.parent.name: p.name for p in store.files()}
    changed = {day for day in before if before[day] != after[day]}
    assert changed == {f"day={T0.date().isoformat()}"}
    assert after[next(iter(changed))].startswith("compact-")  # still a compacted day
    stored = store.scan().collect()
    assert stored.height == 24 and stored.select("trace_id", "span_id").n_unique() == 24
    assert stored.filter(pl.col("scores").is_not_null())["span_id"].to_list() == ["s0"]


def _crash_after_new_file(store: Store, scores: pl.DataFrame) -> tuple[Path, list[str]]:
    """Run attach_scores, then put back the replaced file and the journal: the state a crash
    between renaming the new file in and removing the old one leaves behind."""
    day_dir = store.files()[0].parent
    saved = {p.name: p.read_bytes() for p in day_dir.glob("*.parquet")}
    store.attach_scores(scores, ACCURACY)
    new = sorted(p.name for p in day_dir.glob("*.parquet") if p.name not in saved)
    for name, data in saved.items():
        (day_dir / name).write_bytes(data)
    (day_dir / "compaction.json").write_text(
        json.dumps({"targets": new, "replaces": sorted(saved)})
    )
    return day_dir, new


def test_a_crash_while_rewriting_leaves_every_call_once(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(2, T0))  # one file
    verdict = _scores([{"trace_id": "t0", "span_id": "s0", "score": _score("accuracy", 1.0)}])
    day_dir, new = _crash_after_new_file(store, verdict)
    assert len(list(day_dir.glob("*.parquet"))) == 2  # old and new side by side
    stored = store.scan().collect()
    assert sorted(stored["span_id"]) == ["s0", "s1"]  # each once: the journal hides the old
    assert _stored_scores(store)["s0"] == ([_score("accuracy", 1.0)], 1.0)
    again = store.attach_scores(verdict, ACCURACY)  # the next writer rolls the rewrite forward
    assert (again.attached, again.present) == (0, 1)
    assert sorted(p.name for p in day_dir.glob("*.parquet")) == new
    assert not (day_dir / "compaction.json").exists()
    assert store.scan().collect().height == 2


def test_a_crash_before_the_new_file_is_in_place_rolls_back(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(2, T0))
    day_dir = store.files()[0].parent
    old = sorted(p.name for p in day_dir.glob("*.parquet"))
    (day_dir / ".part-new.parquet.tmp").write_bytes(b"half a file")
    (day_dir / "compaction.json").write_text(
        json.dumps({"targets": ["part-new.parquet"], "replaces": old})
    )
    assert sorted(store.scan().collect()["span_id"]) == ["s0", "s1"]
    verdict = _scores([{"trace_id": "t0", "span_id": "s0", "score": _score("accuracy", 1.0)}])
    assert store.attach_scores(verdict, ACCURACY).attached == 1
    assert not (day_dir / "compaction.json").exists()
    assert _stored_scores(store)["s0"] == ([_score("accuracy", 1.0)], 1.0)
    assert store.scan().collect().height == 2


def test_an_interrupted_rewrite_reads_as_before_and_the_next_writer_rolls_it_back(tmp_path):
    """Interrupt attach_scores for real, between the first and the second new file of a day:
    the accuracy config it is given raises while the second file is being built."""
    built: list[int] = []

    class Interrupting(AccuracyConfig):
        def from_scores(self, scores: str | pl.Expr = "scores") -> pl.Expr:
            built.append(1)
            if len(built) == 2:
                raise KeyboardInterrupt
            return super().from_scores(scores)

    store = Store(tmp_path)
    store.append(_calls(1, T0, prefix="a"))
    store.append(_calls(1, T0, prefix="b"))  # the same day, a second file
    day_dir = store.files()[0].parent
    old = sorted(p.name for p in day_dir.glob("*.parquet"))
    verdicts = _scores(
        [
            {"trace_id": "a0", "span_id": "s0", "score": _score("accuracy", 1.0)},
            {"trace_id": "b0", "span_id": "s0", "score": _score("accuracy", 0.0)},
        ]
    )
    with pytest.raises(KeyboardInterrupt):
        store.attach_scores(verdicts, Interrupting(names=frozenset({"accuracy"})))
    assert (day_dir / "compaction.json").exists()
    assert len(list(day_dir.glob("*.parquet"))) == 3  # both old files and one new one
    stored = store.scan().collect()
    assert stored.height == 2 and stored["scores"].null_count() == 2  # as before, once each
    result = store.attach_scores(verdicts, ACCURACY)
    assert (result.attached, result.files) == (2, 2)
    assert not set(old) & {p.name for p in day_dir.glob("*.parquet")}
    assert sorted(store.scan().collect()["accuracy"]) == [0.0, 1.0]


def test_attach_scores_names_missing_columns_and_tolerates_an_empty_store(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(ValueError, match=r"lack the column\(s\) \['score'\]"):
        store.attach_scores(pl.DataFrame({"trace_id": ["t0"]}), ACCURACY)
    verdict = _scores([{"trace_id": "t0", "span_id": "s0", "score": _score("accuracy", 1.0)}])
    assert store.attach_scores(verdict, ACCURACY).unmatched_ids == {"#0"}
    assert not store.calls_dir.exists()


def test_attach_scores_of_several_batches_act_as_one_after_another(tmp_path):
    """Rows of batches 1 and 2 in one call: equal scores within a batch stay two, but a later
    batch's copy of a score the call already gained from an earlier batch is present."""
    store = Store(tmp_path)
    store.append(_calls(2, T0))
    same = _score("accuracy", 1.0)
    rows = [
        {"score_id": "a", "trace_id": "t0", "span_id": "s0", "score": same, "batch": "1"},
        {"score_id": "b", "trace_id": "t0", "span_id": "s0", "score": same, "batch": "2"},
        {"score_id": "c", "trace_id": "t0", "span_id": "s1", "score": same, "batch": "3"},
        {"score_id": "d", "trace_id": "t0", "span_id": "s1", "score": same, "batch": "3"},
    ]
    result = store.attach_scores(_scores(rows), ACCURACY)
    assert (result.attached, result.present) == (3, 1)
    assert _stored_scores(store)["s0"][0] == [same]
    assert _stored_scores(store)["s1"][0] == [same, same]


# -- scores with a source id: an edit replaces the held version ----------------------------------

LF = "langfuse.annotation"


def test_an_edited_score_replaces_the_version_a_call_holds(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(3, T0))  # trace t0: s0, s1, s2
    copy = _score("accuracy", 1.0)  # no id: an OTel evaluation, counted as a copy
    first = _scores(
        [
            {"trace_id": "t0", "span_id": "s0", "score": copy},
            {"score_id": "L1", "trace_id": "t0", "span_id": "s0",
             "score": _score("accuracy", 1.0, source=LF, id="L1")},
            {"score_id": "L2", "trace_id": "t0",
             "score": _score("correct", 1.0, "true", source=LF, id="L2")},
        ]
    )  # fmt: skip
    assert store.attach_scores(first, ACCURACY).attached == 3
    assert _stored_scores(store)["s0"][1] == 1.0
    edited = _scores(
        [
            {"score_id": "L1", "trace_id": "t0", "span_id": "s0",
             "score": _score("accuracy", 0.0, source=LF, id="L1")},
            {"score_id": "L2", "trace_id": "t0",
             "score": _score("correct", 0.0, "false", source=LF, id="L2")},
        ]
    )  # fmt: skip
    result = store.attach_scores(edited, ACCURACY)
    assert (result.attached, result.replaced, result.present, result.calls) == (0, 2, 0, 3)
    got = _stored_scores(store)
    assert got["s0"] == (
        [
            copy,
            _score("accuracy", 0.0, source=LF, id="L1"),
            _score("correct", 0.0, "false", source=LF, id="L2"),
        ],
        pytest.approx(1 / 3),  # the copy's 1.0 and both edited verdicts' 0.0
    )
    assert got["s1"] == got["s2"] == ([_score("correct", 0.0, "false", source=LF, id="L2")], 0.0)
    files = sorted(store.files())
    again = store.attach_scores(edited, ACCURACY)
    assert (again.attached, again.replaced, again.present, again.files) == (0, 0, 2, 0)
    assert sorted(store.files()) == files  # nothing rewritten
    assert _stored_scores(store) == got


def test_the_latest_version_of_a_score_wins_and_ids_are_per_source(tmp_path):
    store = Store(tmp_path)
    store.append(_calls(2, T0))
    rows = [  # one import read the score, then its edit (batches 1 and 2); another source's id
        {"score_id": "L1", "trace_id": "t0", "span_id": "s0", "batch": "1",
         "score": _score("accuracy", 1.0, source=LF, id="L1")},
        {"score_id": "L1b", "trace_id": "t0", "span_id": "s0", "batch": "2",
         "score": _score("accuracy", 0.5, source=LF, id="L1")},
        {"score_id": "X1", "trace_id": "t0", "span_id": "s0", "batch": "1",
         "score": _score("accuracy", 1.0, source="other", id="L1")},
    ]  # fmt: skip
    result = store.attach_scores(_scores(rows), ACCURACY)
    assert (result.attached, result.replaced, result.present) == (2, 0, 1)
    assert _stored_scores(store)["s0"] == (
        [
            _score("accuracy", 0.5, source=LF, id="L1"),
            _score("accuracy", 1.0, source="other", id="L1"),
        ],
        0.75,
    )


def test_a_copy_without_id_is_never_replaced_by_an_unrelated_copy(tmp_path):
    """Scores without id keep the copy rule even when a held score with an id looks the same."""
    store = Store(tmp_path)
    store.append(_calls(1, T0))
    with_id = _score("accuracy", 1.0, source=LF, id="L1")
    store.attach_scores(_scores([{"trace_id": "t0", "span_id": "s0", "score": with_id}]), ACCURACY)
    plain = _score("accuracy", 1.0, source=LF)
    result = store.attach_scores(
        _scores([{"trace_id": "t0", "span_id": "s0", "score": plain}]), ACCURACY
    )
    assert (result.attached, result.replaced) == (1, 0)
    assert _stored_scores(store)["s0"][0] == [with_id, plain]
