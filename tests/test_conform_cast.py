"""``conform``'s casts: a struct of another field set (scores before ``id``) matches its fields
by name on every Polars version (2.2 made strict struct casts positional and exact), while any
other column keeps the strict cast, so a bad value is an error, never a silent null."""

from __future__ import annotations

import polars as pl
import pytest

from llmtrace.record import SCORE_STRUCT, cast_by_name, conform, holds_struct

FOUR = pl.Struct({"name": pl.String, "value": pl.Float64, "label": pl.String, "source": pl.String})
SHUFFLED = pl.Struct(
    {"source": pl.String, "value": pl.Float64, "name": pl.String, "label": pl.String}
)


def test_holds_struct() -> None:
    assert holds_struct(SCORE_STRUCT)
    assert holds_struct(pl.List(SCORE_STRUCT))
    assert holds_struct(pl.List(pl.List(SCORE_STRUCT)))
    assert not holds_struct(pl.List(pl.UInt64))
    assert not holds_struct(pl.Float64)


@pytest.mark.parametrize("old", [FOUR, SHUFFLED])
def test_scores_of_an_older_shape_conform_by_field_name(old: pl.Struct) -> None:
    score = {"name": "accuracy", "value": 0.5, "label": "ok", "source": "t"}
    frame = pl.DataFrame({"scores": [[score], None]}, schema={"scores": pl.List(old)})
    out = conform(frame).collect()
    assert out.schema["scores"] == pl.List(SCORE_STRUCT)
    assert out["scores"].to_list() == [[{**score, "id": None}], None]


def test_other_columns_keep_the_strict_cast() -> None:
    frame = pl.DataFrame({"input_tokens": ["12", "many"]})
    with pytest.raises(pl.exceptions.InvalidOperationError):
        conform(frame).collect()
    with pytest.raises(pl.exceptions.InvalidOperationError):
        pl.select(cast_by_name(pl.lit("x"), pl.Int64))
