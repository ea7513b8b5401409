"""The batch step's shortcuts (issue 15) give exactly what the step gave before.

``otlp_merge`` now skips work whose answer is known: the key de-duplication when no key
repeats (in ``_merge_duplicates`` and the tree walks), the label joins when no call is one with
another, and the tool matching when the batch ran no tool. Each is compared here with the code
as it was (tests/otlp_merge_reference.py, frozen at 8d3ae20): whole imports of the corpus in
one batch and in small batches (late spans, handed-on twins, inherited actions), and the step's
functions on the corpus frames with repeated keys, twins and without tool spans.
"""

from __future__ import annotations

import random
from pathlib import Path

import otlp_merge_reference as reference
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from test_import_equivalence import OTLP_FIXTURES

from llmtrace.importers import otlp, otlp_merge
from llmtrace.importers.otlp_files import _read_file

STEPS = (
    "_inherited_actions",
    "_merge_duplicates",
    "_resolve_actions",
    "_resolve_agents",
    "_twin_candidates",
)


def _import(paths: list[Path], monkeypatch: pytest.MonkeyPatch, old: bool, **options):
    with monkeypatch.context() as patch:
        if old:
            for name in STEPS:
                patch.setattr(otlp, name, getattr(reference, name))
        return otlp.import_otlp(paths, accuracy_names=(), **options)


@pytest.mark.parametrize("batch_spans", [None, 5, 40])
def test_the_corpus_imports_the_same_records(monkeypatch, batch_spans) -> None:
    old = _import(OTLP_FIXTURES, monkeypatch, True, batch_spans=batch_spans)
    new = _import(OTLP_FIXTURES, monkeypatch, False, batch_spans=batch_spans)
    assert old.calls.height > 50 and old.merged > 0  # twins were merged: the labels ran
    assert old.calls.get_column("tool").drop_nulls().len() > 0  # tools were matched
    assert_frame_equal(new.calls, old.calls)
    assert_frame_equal(new.score_targets, old.score_targets)
    assert (new.merged, new.scores, new.spans) == (old.merged, old.scores, old.spans)


def _frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    sink = otlp._Collector(False)
    for path in OTLP_FIXTURES:
        _read_file(path, sink, None)
    raw, tree, roots, _ = sink.frames()
    return otlp._timed_calls(raw, "otlp"), tree, roots


def _assert_frames(new: tuple[pl.DataFrame, ...], old: tuple[pl.DataFrame, ...]) -> None:
    for got, expected in zip(new, old, strict=True):
        assert_frame_equal(got, expected)


def test_the_step_functions_match_on_odd_frames() -> None:
    """Repeated keys (a span exported twice, a tree row twice), no twins at all, no tool span,
    and calls handed on earlier: each function against its frozen copy."""
    calls, tree, roots = _frames()
    rng = random.Random(8)
    repeated = pl.concat([calls, calls.sample(20, seed=3)]).sample(fraction=1.0, seed=4)
    singles = calls.filter(pl.col("response_id").is_not_null()).unique(
        "response_id", keep="first", maintain_order=True
    )
    cases = [calls, repeated, singles, calls.head(0)]
    trees = [
        tree,
        pl.concat([tree, tree.sample(30, seed=5)]),  # repeated tree rows
        tree.with_columns(pl.lit(None, pl.String).alias("tool")),  # no tool was run
        tree.with_columns(pl.lit(None, pl.String).alias("agent")),
    ]
    assert tree.get_column("tool").drop_nulls().len() > 0
    for frame in cases:
        new = otlp_merge._merge_duplicates(frame)
        old = reference._merge_duplicates(frame)
        _assert_frames(new, old)
        handed = frame.sample(min(frame.height, 15), seed=rng.randrange(99)).select(
            list(otlp._TWIN_SCHEMA)
        )
        _assert_frames(
            otlp_merge._merge_duplicates(frame, handed), reference._merge_duplicates(frame, handed)
        )
        merged = old[0]
        for shape in trees:
            assert_frame_equal(
                otlp_merge._resolve_agents(merged, shape), reference._resolve_agents(merged, shape)
            )
            assert_frame_equal(
                otlp_merge._resolve_actions(merged, shape, roots),
                reference._resolve_actions(merged, shape, roots),
            )
            assert_frame_equal(
                otlp_merge._inherited_actions(shape, shape, roots),
                reference._inherited_actions(shape, shape, roots),
            )


def test_a_batch_collection_finds_no_decoded_line_left_to_traverse(monkeypatch, tmp_path) -> None:
    """The collection after each batch (``stream_otlp``'s ``gc.collect``) runs when the
    settled lines' decoded structs are freed (issue 15: it traversed their lists, ~25 ms a
    batch); the import's records do not depend on it (the tests above)."""
    import gc

    from llmtrace.importers.otlp_fast import _DECODER, _KeyValue

    line = (Path(__file__).parent / "fixtures" / "otlp" / "collector.jsonl").read_bytes()
    line = line.splitlines()[0]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join([line] * 40) + b"\n")

    def decoded_lists() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is list and o and type(o[0]) is _KeyValue)

    before = decoded_lists()
    request = _DECODER.decode(line)
    one_line = decoded_lists() - before  # the lists of one decoded line
    del request
    seen: list[int] = []
    collect = gc.collect

    def spy(*args: object) -> int:
        seen.append(decoded_lists())
        return collect(*args)

    monkeypatch.setattr(otlp, "SETTLE_SPANS", 1000)  # settled when a batch is taken
    monkeypatch.setattr(gc, "collect", spy)
    result = otlp.import_otlp([tmp_path / "in.jsonl"], accuracy_names=(), batch_spans=12)
    assert result.spans >= 40 and len(seen) > 3  # several batches, each collected
    # what is left is the line being read when the batch filled, held by the reader
    assert one_line > 0 and max(seen) <= one_line
