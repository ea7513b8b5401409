"""Late scores: which stored calls an evaluation score belongs to, and the calls' new score lists.

Why a module of its own: ``Store.attach_scores`` (the store's one update path for evaluations
that arrive after their call) holds the lock, reads the key columns and rewrites files through
the journal; the matching of scores to calls - by span, trace or response id, alternatives of
one score, copies without ids and editable versions with them - and the merge into each call's
list are pure Polars on small frames, kept here with their own rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from llmtrace.record import KEY_FIELDS, SCORE_STRUCT, cast_by_name

if TYPE_CHECKING:
    from llmtrace.accuracy import AccuracyConfig

SCORE_FIELDS = list(SCORE_STRUCT.to_schema())


def score_rows(scores: pl.DataFrame) -> pl.DataFrame:
    """``attach_scores``' input in one shape: ``_o`` (input order), ``_sid``, ``_rank``,
    ``_batch``, ``trace_id``, ``span_id``, ``response_id``, ``score``; rows without a score are dropped."""
    missing = {"score", "trace_id"} - set(scores.columns)
    if missing:
        raise ValueError(f"attach_scores: scores lack the column(s) {sorted(missing)}")

    def optional(name: str, dtype: pl.DataType) -> pl.Expr:
        if name in scores.columns:
            return pl.col(name).cast(dtype)
        return pl.lit(None, dtype=dtype)

    order = pl.col("_o")
    return (
        scores.with_row_index("_o")
        .select(
            order,
            pl.coalesce(optional("score_id", pl.String), pl.format("#{}", order)).alias("_sid"),
            optional("rank", pl.Int64).fill_null(0).alias("_rank"),
            optional("batch", pl.Int64).fill_null(0).alias("_batch"),
            pl.col("trace_id").cast(pl.String),
            optional("span_id", pl.String).alias("span_id"),
            optional("response_id", pl.String).alias("response_id"),
            cast_by_name(pl.col("score"), SCORE_STRUCT),  # a four-field score (before ids) too
        )
        .filter(pl.col("score").is_not_null())
    )


def score_targets(rows: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """(score, stored call) pairs: each score's matching rows of its lowest rank, deduplicated.

    Columns ``_sid``, ``_o``, ``_batch``, ``score``, ``trace_id``, ``span_id``, ``_file``.
    """
    head = ["_sid", "_rank", "_o", "_batch", "score"]
    by_span = (
        rows.filter(pl.col("span_id").is_not_null())
        .join(keys.drop("response_id"), on="span_id", suffix="_k")
        .filter(pl.col("trace_id").is_null() | (pl.col("trace_id") == pl.col("trace_id_k")))
        .select(*head, pl.col("trace_id_k").alias("trace_id"), "span_id", "_file")
    )
    by_response = (
        rows.filter(pl.col("span_id").is_null() & pl.col("response_id").is_not_null())
        .select(*head, "response_id")
        .join(keys, on="response_id")
        .select(*head, "trace_id", "span_id", "_file")
    )
    by_trace = (
        rows.filter(pl.col("span_id").is_null() & pl.col("response_id").is_null())
        .select(*head, "trace_id")
        .join(keys.select("trace_id", "span_id", "_file"), on="trace_id")
    )
    matches = pl.concat([by_span, by_response, by_trace])
    best = matches.filter(pl.col("_rank") == pl.col("_rank").min().over("_sid"))
    return best.unique(["_sid", *KEY_FIELDS], keep="first", maintain_order=True).drop("_rank")


NEW, REPLACE, ADOPT = "new", "replace", "adopt"
# a score's identity when its source gave it an id: one version per call
IDENTITY = [*KEY_FIELDS, "id", "source"]
VERSION = ["name", "value", "label"]


def sids(new: pl.DataFrame, kind: str) -> set[str]:
    return set(new.filter(pl.col("_kind") == kind).get_column("_sid").unique())


def held_scores(stored: pl.LazyFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """The scores the targeted calls hold, one row each with its position ``_pos`` in the
    call's list (what a replacement removes) and the score's fields."""
    return (
        stored.select(*KEY_FIELDS, "scores")
        .join(targets.lazy().select(*KEY_FIELDS).unique(), on=list(KEY_FIELDS), how="semi")
        .filter(pl.col("scores").list.len() > 0)
        .with_columns(pl.int_ranges(pl.col("scores").list.len()).alias("_pos"))
        .explode("scores", "_pos")
        .filter(pl.col("scores").is_not_null())
        .select(*KEY_FIELDS, "_pos", pl.col("scores").struct.unnest())
        .collect()
    )


def new_scores(targets: pl.DataFrame, stored: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What changes: (scores to add, held scores to remove).

    The first frame has the columns of ``targets``, the score's fields and ``_kind``: ``new``
    (added), ``replace`` (an edited version of a held score with the same id) or ``adopt`` (a
    held copy without id that equals it takes its id). The second names the removed held
    scores by key and ``_pos``. Scores without id follow the copy rule, scores with one the
    version rule (see ``Store.attach_scores``)."""
    held = held_scores(stored, targets)
    incoming = targets.sort("_o").with_columns(pl.col("score").struct.unnest())
    columns = [*incoming.columns, "_kind"]
    copies = new_copies(incoming.filter(pl.col("id").is_null()), held).select(columns)
    versions, drops = new_versions(incoming.filter(pl.col("id").is_not_null()), held)
    return pl.concat([copies, versions.select(columns)]), drops


def new_copies(incoming: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """Scores without id a call does not hold yet: the k-th equal score of a call in one batch
    is new when the call holds fewer than k of them and no earlier batch gave a k-th copy
    already (as if the batches were attached one after another)."""
    keys = [*KEY_FIELDS, *SCORE_FIELDS]
    counts = held.group_by(keys).agg(pl.len().alias("_held"))
    nth = (pl.int_range(pl.len()).over(*keys, "_batch") + 1).alias("_nth")
    return (
        incoming.with_columns(nth)
        .join(counts, on=keys, how="left", nulls_equal=True, maintain_order="left")
        .filter(pl.col("_nth") > pl.col("_held").fill_null(0))
        .unique([*keys, "_nth"], keep="first", maintain_order=True)
        .drop("_nth", "_held")
        .with_columns(pl.lit(NEW).alias("_kind"))
    )


def new_versions(incoming: pl.DataFrame, held: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Scores with an id: per call and (id, source) the latest incoming version (last batch,
    then last row) is present when the call holds exactly it, replaces whatever the call holds
    under that id otherwise, and else adopts an equal held copy without id or is new."""
    latest = incoming.sort("_batch", "_o").unique(IDENTITY, keep="last", maintain_order=True)
    pairs = latest.select(*IDENTITY, *VERSION).join(
        held.filter(pl.col("id").is_not_null()), on=IDENTITY, suffix="_h"
    )
    equal = pl.all_horizontal(pl.col(f).eq_missing(pl.col(f"{f}_h")) for f in VERSION)
    tally = pairs.group_by(IDENTITY).agg(pl.len().alias("_n"), equal.sum().alias("_eq"))
    rated = latest.join(tally, on=IDENTITY, how="left", maintain_order="left").with_columns(
        pl.col("_n", "_eq").fill_null(0)
    )
    present = (pl.col("_n") == 1) & (pl.col("_eq") == 1)
    replace = rated.filter((pl.col("_n") > 0) & ~present)
    removed = pairs.join(replace.select(IDENTITY), on=IDENTITY, how="semi")
    fresh, adopted = adopt(rated.filter(pl.col("_n") == 0), held)
    versions = pl.concat(
        [
            replace.with_columns(pl.lit(REPLACE).alias("_kind")),
            fresh.with_columns(
                pl.when(pl.col("_pos").is_null())
                .then(pl.lit(NEW))
                .otherwise(pl.lit(ADOPT))
                .alias("_kind")
            ),
        ],
        how="diagonal",
    ).sort("_o")
    drops = pl.concat([removed.select(*KEY_FIELDS, "_pos"), adopted])
    return versions, drops


def adopt(fresh: pl.DataFrame, held: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pair each score with an id that a call does not hold with an equal held copy without id
    (the k-th such score with the k-th copy), which it replaces: a store written before scores
    had ids then keeps one score, not the old copy and the new. Returns ``fresh`` with the
    paired copy's ``_pos`` (null: none) and the (key, ``_pos``) of the copies removed."""
    same = [*KEY_FIELDS, "source", *VERSION]
    kth = pl.int_range(pl.len()).over(same).alias("_k")
    copies = held.filter(pl.col("id").is_null()).sort("_pos").select(*same, "_pos", kth)
    paired = (
        fresh.sort("_o")
        .with_columns(kth)
        .join(copies, on=[*same, "_k"], how="left", nulls_equal=True, maintain_order="left")
    )
    drops = paired.filter(pl.col("_pos").is_not_null()).select(*KEY_FIELDS, "_pos")
    return paired.drop("_k"), drops


def with_added_scores(
    frame: pl.DataFrame, additions: pl.DataFrame, drops: pl.DataFrame, accuracy: AccuracyConfig
) -> pl.DataFrame:
    """``frame`` with the held scores at ``drops`` removed from its calls and ``additions._add``
    appended; accuracy recomputed for exactly those calls (the others keep theirs, whatever
    config computed it)."""
    key = list(KEY_FIELDS)
    order = [pl.col("_part").cast(pl.Int64), pl.col("_ord").cast(pl.Int64)]
    kept = (
        frame.select(*key, "scores")
        .join(additions.select(key), on=key, how="semi")
        .filter(pl.col("scores").list.len() > 0)
        .with_columns(pl.int_ranges(pl.col("scores").list.len()).alias("_pos"))
        .explode("scores", "_pos")
        .join(drops, on=[*key, "_pos"], how="anti")
        .select(*key, pl.lit(0).alias("_part"), pl.col("_pos").alias("_ord"), "scores")
    )
    added = (
        additions.select(*key, pl.col("_add").alias("scores"))
        .with_columns(pl.int_ranges(pl.col("scores").list.len()).alias("_ord"))
        .explode("scores", "_ord")
        .select(*key, pl.lit(1).alias("_part"), "_ord", "scores")
    )
    merged = (
        pl.concat([kept.with_columns(order), added.with_columns(order)])
        .group_by(key)
        .agg(pl.col("scores").sort_by("_part", "_ord").alias("_new"))
    )
    changed = pl.col("_new").is_not_null()
    return (
        frame.join(merged, on=key, how="left", maintain_order="left")
        .with_columns(
            pl.when(changed).then(pl.col("_new")).otherwise(pl.col("scores")).alias("scores")
        )
        .with_columns(
            pl.when(changed)
            .then(accuracy.from_scores("scores"))
            .otherwise(pl.col("accuracy"))
            .alias("accuracy")
        )
        .drop("_new")
    )
