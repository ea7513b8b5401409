"""Langfuse scores (v3 and page-based) in one shape, as the record's score struct, and attached
to the calls of a page."""

from __future__ import annotations

from typing import Any

import polars as pl

from llmtrace.accuracy import AccuracyConfig
from llmtrace.importers.langfuse.mapping import _nonblank, _typed_frame
from llmtrace.record import SCORE_STRUCT

SCORE_TYPES = ("NUMERIC", "BOOLEAN", "CATEGORICAL")


_SCORE_COLUMNS = {
    "score_id": pl.String,
    "trace_id": pl.String,
    "observation_id": pl.String,
    "name": pl.String,
    "data_type": pl.String,
    "value_text": pl.String,
    "source": pl.String,
}


def _scores_v3(rows: list[dict[str, Any]], sdk_names: bool) -> pl.DataFrame:
    """v3 scores (``fields=subject``) in the common score shape; session/experiment scores,
    which belong to no call, are dropped."""
    subject = pl.Struct({"kind": pl.String, "id": pl.String, "traceId": pl.String})
    if sdk_names:
        subject = pl.Struct({"kind": pl.String, "id": pl.String, "trace_id": pl.String})
    schema = {
        "id": pl.String,
        "name": pl.String,
        "dataType": pl.String,
        "value": pl.String,
        "source": pl.String,
        "subject": subject,
    }
    raw = _typed_frame(rows, schema, sdk_names)
    trace_key = "trace_id" if sdk_names else "traceId"
    kind = pl.col("subject").struct.field("kind")
    sid, stid = pl.col("subject").struct.field("id"), pl.col("subject").struct.field(trace_key)
    return raw.select(
        pl.col("id").alias("score_id"),
        pl.when(kind == "trace").then(sid).when(kind == "observation").then(stid).alias("trace_id"),
        pl.when(kind == "observation").then(sid).alias("observation_id"),
        pl.col("name"),
        pl.col("dataType").alias("data_type"),
        pl.col("value").alias("value_text"),
        pl.col("source"),
    ).filter(pl.col("trace_id").is_not_null() | pl.col("observation_id").is_not_null())


def _scores_v1(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Scores from the page-based ``/api/public/v2/scores`` in the common shape (booleans and
    categories are in ``stringValue`` there)."""
    raw = pl.from_dicts(
        rows,
        schema={
            "id": pl.String,
            "traceId": pl.String,
            "observationId": pl.String,
            "name": pl.String,
            "dataType": pl.String,
            "value": pl.Float64,
            "stringValue": pl.String,
            "source": pl.String,
        },
        strict=False,
    )
    return raw.select(
        pl.col("id").alias("score_id"),
        pl.col("traceId").alias("trace_id"),
        _nonblank("observationId").alias("observation_id"),
        pl.col("name"),
        pl.col("dataType").alias("data_type"),
        pl.when(pl.col("dataType") == "NUMERIC")
        .then(pl.col("value").cast(pl.String))
        .otherwise(pl.col("stringValue"))
        .alias("value_text"),
        pl.col("source"),
    ).filter(pl.col("trace_id").is_not_null() | pl.col("observation_id").is_not_null())


def scores_frame(common: pl.DataFrame, accuracy: AccuracyConfig) -> pl.DataFrame:
    """Scores with the record's score struct; a categorical score's value is its category's.

    Columns: ``score_id`` (Langfuse's id; ``#<row>`` if a row has none), ``trace_id``,
    ``observation_id`` (null for trace scores), ``score`` (name, value, label, source, id: the
    Langfuse id, so ``Store.attach_scores`` replaces a stored version that was edited since). A
    score read twice (page-based reads shift when scores arrive meanwhile) is kept once, so a
    new call also holds one score per id.
    """
    text = pl.col("value_text").str.strip_chars()
    lowered = text.str.to_lowercase()
    kind = pl.col("data_type").str.to_uppercase()
    value = (
        pl.when(kind == "NUMERIC")
        .then(text.cast(pl.Float64, strict=False))
        .when(kind == "BOOLEAN")
        .then(
            pl.when(lowered.is_in(["true", "1", "1.0"]))
            .then(1.0)
            .when(lowered.is_in(["false", "0", "0.0"]))
            .then(0.0)
        )
        .when(kind == "CATEGORICAL")
        .then(
            lowered.replace_strict(dict(accuracy.categories), default=None, return_dtype=pl.Float64)
        )
    )
    label = (
        pl.when(kind == "CATEGORICAL")
        .then(text)
        .when(kind == "BOOLEAN")
        .then(pl.when(value == 1.0).then(pl.lit("true")).when(value == 0.0).then(pl.lit("false")))
    )
    row_id = pl.format("#{}", pl.int_range(pl.len()))
    return (
        common.filter(kind.is_in(SCORE_TYPES))
        .with_columns(value.alias("_value"), label.alias("_label"))
        .select(
            pl.coalesce(_nonblank("score_id"), row_id).alias("score_id"),
            "trace_id",
            "observation_id",
            pl.struct(
                pl.col("name"),
                pl.col("_value").alias("value"),
                pl.col("_label").alias("label"),
                pl.format("langfuse.{}", pl.col("source").str.to_lowercase()).alias("source"),
                _nonblank("score_id").alias("id"),  # an edit at Langfuse replaces, not adds
            )
            .cast(SCORE_STRUCT)
            .alias("score"),
        )
        .unique("score_id", keep="first", maintain_order=True)
    )


def _score_lists(scores: pl.DataFrame, key: str, level: pl.Expr) -> pl.DataFrame:
    return scores.filter(level).group_by(key).agg(pl.col("score").alias(f"_scores_{key}"))


def attach_scores(
    calls: pl.DataFrame, scores: pl.DataFrame, accuracy: AccuracyConfig
) -> pl.DataFrame:
    """``scores`` and ``accuracy`` on each call: its observation's scores plus its trace's.

    ``accuracy`` is ``AccuracyConfig.from_scores`` over both levels; null when none counts.
    """
    by_obs = _score_lists(scores, "observation_id", pl.col("observation_id").is_not_null())
    by_trace = _score_lists(scores, "trace_id", pl.col("observation_id").is_null())
    joined = calls.join(
        by_obs, left_on="span_id", right_on="observation_id", how="left", maintain_order="left"
    ).join(by_trace, on="trace_id", how="left", maintain_order="left")
    both = pl.concat_list(
        pl.col("_scores_observation_id").fill_null([]), pl.col("_scores_trace_id").fill_null([])
    )
    return (
        joined.with_columns(pl.when(both.list.len() > 0).then(both).alias("scores"))
        .drop("_scores_observation_id", "_scores_trace_id")
        .with_columns(accuracy.from_scores("scores").alias("accuracy"))
    )


def _empty_scores() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "score_id": pl.String,
            "trace_id": pl.String,
            "observation_id": pl.String,
            "score": SCORE_STRUCT,
        }
    )
