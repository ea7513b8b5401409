"""Evaluation scores of an OTLP import: attaching ``gen_ai.evaluation.result`` events to the
calls of their batch, and the targets in the store for those that match none (late scores).

See ``llmtrace.importers.otlp``'s docstring for the matching rules; ``Store.attach_scores``
reads the targets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl

from llmtrace.importers.otlp_rows import EVALUATION_FIELDS
from llmtrace.record import KEY_FIELDS, SCORE_STRUCT

if TYPE_CHECKING:
    from llmtrace.accuracy import AccuracyConfig


# the Polars types of the per-span evaluation rows (``otlp_rows``), named as those are
_EVALUATION_SCHEMA = {
    name: pl.Float64 if name == "value" else pl.String for name in EVALUATION_FIELDS
}


_TARGET_SCHEMA = {
    "score_id": pl.String,
    "rank": pl.Int64,
    "trace_id": pl.String,
    "span_id": pl.String,
    "response_id": pl.String,
    "score": SCORE_STRUCT,
    "matched": pl.Boolean,
}


def empty_score_targets() -> pl.DataFrame:
    """No evaluations: ``OtlpImportResult.score_targets`` with its columns."""
    return pl.DataFrame(schema=_TARGET_SCHEMA)


def _score_targets(events: pl.DataFrame, matched: pl.DataFrame, first: int) -> pl.DataFrame:
    """Where each evaluation may belong in the store (see ``OtlpImportResult``); evaluations
    are numbered from ``first`` so ids stay unique across the batches of one import."""
    score = pl.struct(
        "name",
        "value",
        "label",
        pl.lit("otel").alias("source"),
        pl.lit(None, pl.String).alias("id"),
    ).cast(SCORE_STRUCT)  # no id: an OTel evaluation event is never edited, so copies add up
    score_id = pl.format("e{}", pl.col("_e") + first)
    here = matched.filter(pl.col("_span").is_not_null()).select(
        "_e",
        score_id.alias("score_id"),
        pl.lit(0, dtype=pl.Int64).alias("rank"),
        pl.col("_trace").alias("trace_id"),
        pl.col("_span").alias("span_id"),
        pl.lit(None, dtype=pl.String).alias("response_id"),
        score.alias("score"),
        pl.lit(True).alias("matched"),
    )
    lost = events.join(matched.filter(pl.col("_span").is_null()).select("_e"), on="_e")
    candidates = [
        (0, pl.col("trace_id"), pl.col("_holder"), pl.lit(None, dtype=pl.String)),
        (1, pl.lit(None, dtype=pl.String), pl.lit(None, dtype=pl.String), pl.col("response_id")),
        (2, pl.col("trace_id"), pl.col("_holder_parent"), pl.lit(None, dtype=pl.String)),
    ]
    elsewhere = [
        lost.select(
            "_e",
            score_id.alias("score_id"),
            pl.lit(rank, dtype=pl.Int64).alias("rank"),
            trace.alias("trace_id"),
            span.alias("span_id"),
            response.alias("response_id"),
            score.alias("score"),
            pl.lit(False).alias("matched"),
        ).filter(pl.col("span_id").is_not_null() | pl.col("response_id").is_not_null())
        for rank, trace, span, response in candidates
    ]
    # in event order: the store appends a call's new scores in the order of its input rows
    targets = pl.concat([here, *elsewhere]).sort("_e", "rank").drop("_e")
    return targets.cast(_TARGET_SCHEMA)


def _evaluations_frame(evaluations: list[tuple[Any, ...]]) -> pl.DataFrame:
    return pl.DataFrame(evaluations, schema=_EVALUATION_SCHEMA, orient="row")


def _attach_scores(
    calls: pl.DataFrame,
    members: pl.DataFrame,
    evaluations: pl.DataFrame,
    accuracy: AccuracyConfig,
    first: int = 0,
) -> tuple[pl.DataFrame, int, int, pl.DataFrame]:
    """Add ``scores`` and ``accuracy``; returns (calls, scores attached, scores unmatched,
    score targets for the store)."""
    if evaluations.is_empty():
        return calls, 0, 0, empty_score_targets()
    events = evaluations.with_row_index("_e")
    by_span = events.join(
        members.rename({"_member": "_holder", "span_id": "_by_span", "_key_trace": "_span_trace"}),
        on=["trace_id", "_holder"],
        how="left",
    )
    responses = (
        calls.filter(pl.col("response_id").is_not_null())
        .unique(subset=["response_id"], keep="first", maintain_order=True)
        .select(
            "response_id",
            pl.col("trace_id").alias("_resp_trace"),
            pl.col("span_id").alias("_by_resp"),
        )
    )
    by_parent = members.rename(
        {"_member": "_holder_parent", "span_id": "_by_parent", "_key_trace": "_parent_trace"}
    )
    matched = (
        by_span.join(responses, on="response_id", how="left")
        .join(by_parent, on=["trace_id", "_holder_parent"], how="left")
        .select(
            "_e",
            pl.when(pl.col("_by_span").is_not_null())
            .then(pl.col("_span_trace"))
            .when(pl.col("_by_resp").is_not_null())
            .then(pl.col("_resp_trace"))
            .when(pl.col("_by_parent").is_not_null())
            .then(pl.col("_parent_trace"))
            .alias("_trace"),
            pl.coalesce("_by_span", "_by_resp", "_by_parent").alias("_span"),
            "name",
            "value",
            "label",
        )
        .unique(subset=["_e"], keep="first")
    )
    found = matched.filter(pl.col("_span").is_not_null())
    per_call = (
        found.sort("_e")
        .group_by("_trace", "_span", maintain_order=True)
        .agg(
            pl.struct(
                "name",
                "value",
                "label",
                pl.lit("otel").alias("source"),
                pl.lit(None, pl.String).alias("id"),
            ).alias("_scores")
        )
        .rename({"_trace": "trace_id", "_span": "span_id"})
    )
    calls = (
        calls.join(per_call, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_scores").cast(pl.List(SCORE_STRUCT)).alias("scores"))
        .drop("_scores")
        .with_columns(accuracy.from_scores("scores").alias("accuracy"))
    )
    targets = _score_targets(events, matched, first)
    return calls, found.height, matched.height - found.height, targets
