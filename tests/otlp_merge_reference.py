"""``llmtrace.importers.otlp_merge`` as it was at 8d3ae20, frozen: the reference its
shortcuts of issue 15 are compared with (tests/test_import_merge.py). Do not edit."""

from __future__ import annotations

import polars as pl

from llmtrace import twins
from llmtrace.record import KEY_FIELDS, TOKEN_FIELDS, TWIN_IDS

_MAX_DEPTH = 256  # ancestor hops and merge rounds; deeper chains are cycles or absurd


def _twin_candidates(closed: pl.DataFrame, calls: pl.DataFrame) -> pl.DataFrame:
    """The calls handed on earlier that may be twins of ``calls``: of the same traces, with
    one of their response ids, or starting or ending in the same second (or one either side)
    as one of them. Bounded by the retained table, and usually a small part of it."""
    if closed.is_empty() or calls.is_empty():
        return closed.clear()
    same_trace = closed.join(calls.select("trace_id").unique(), on="trace_id", how="semi")
    ids = calls.select("response_id").drop_nulls().unique()
    same_id = closed.join(ids, on="response_id", how="semi")
    second = pl.col("_t").dt.truncate("1s")
    times = (
        pl.concat(
            [
                calls.select(pl.col("start_time").alias("_t")),
                calls.select(pl.col("end_time").alias("_t")),
            ]
        )
        .drop_nulls()
        .select(second.alias("_s"))
        .unique()
    )
    near_seconds = pl.concat(
        [times.select(pl.col("_s") + pl.duration(seconds=shift)) for shift in (-1, 0, 1)]
    ).unique()
    near = pl.concat(
        [
            closed.join(
                near_seconds,
                left_on=pl.col("start_time").dt.truncate("1s"),
                right_on="_s",
                how="semi",
            ),
            closed.join(
                near_seconds,
                left_on=pl.col("end_time").dt.truncate("1s"),
                right_on="_s",
                how="semi",
            ),
        ]
    )
    return pl.concat([same_trace, same_id, near]).unique(
        subset=list(KEY_FIELDS), keep="first", maintain_order=True
    )


def _merge_labels(calls: pl.DataFrame) -> pl.DataFrame:
    """(_node, _label) for calls that are one call with others (connected components).

    Edges: the twin rules of ``llmtrace.twins`` (the same response id, or a one-to-one match
    by service, provider, model, time and usage when an id is missing), in any trace, and an
    LLM span whose parent LLM span reports the same input and output tokens."""
    by_response = twins.response_id_edges(calls)
    by_time = twins.time_edges(calls)
    parents = calls.select(
        "trace_id",
        pl.col("span_id").alias("parent_span_id"),
        pl.col("_node").alias("_peer"),
        pl.col("input_tokens").alias("_peer_in"),
        pl.col("output_tokens").alias("_peer_out"),
    )
    by_parent = (
        calls.select("_node", "trace_id", "parent_span_id", "input_tokens", "output_tokens")
        .join(parents, on=["trace_id", "parent_span_id"])
        .filter(
            pl.col("input_tokens").eq_missing(pl.col("_peer_in"))
            & pl.col("output_tokens").eq_missing(pl.col("_peer_out"))
            & (pl.col("input_tokens").is_not_null() | pl.col("output_tokens").is_not_null())
        )
        .select("_node", "_peer")
    )
    edges = pl.concat([by_response, by_time, by_parent]).filter(pl.col("_node") != pl.col("_peer"))
    if "_stored" in calls.columns:  # two calls handed on earlier are settled: never joined now
        flags = calls.select("_node", "_stored")
        edges = (
            edges.join(flags, on="_node")
            .join(flags.rename({"_node": "_peer", "_stored": "_peer_stored"}), on="_peer")
            .filter(~(pl.col("_stored") & pl.col("_peer_stored")))
            .select("_node", "_peer")
        )
    if edges.is_empty():
        return pl.DataFrame(schema={"_node": pl.UInt32, "_label": pl.UInt32})
    edges = pl.concat(
        [edges, edges.select(pl.col("_peer").alias("_node"), pl.col("_node").alias("_peer"))]
    )
    labels = edges.select(pl.col("_node").unique()).with_columns(pl.col("_node").alias("_label"))
    for _ in range(_MAX_DEPTH):
        lowest = (
            edges.join(labels.rename({"_node": "_peer"}), on="_peer")
            .group_by("_node")
            .agg(pl.col("_label").min().alias("_peer_label"))
        )
        updated = labels.join(lowest, on="_node", how="left").select(
            "_node", pl.min_horizontal("_label", "_peer_label").alias("_label")
        )
        changed = updated.join(labels, on="_node", suffix="_old").filter(
            pl.col("_label") != pl.col("_label_old")
        )
        labels = updated
        if changed.is_empty():
            break
    return labels


def _merge_duplicates(
    calls: pl.DataFrame, handed_on: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Collapse spans that describe one call; returns (calls, member key -> kept span id).

    ``handed_on``: calls of the same traces finished by earlier batches (``_TWIN_SCHEMA``), so
    already stored. A late span that is their twin is merged into them: it is dropped, and its
    evaluations go to the stored call through ``members``; a stored call is never emitted again.
    """
    calls = calls.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
    stored = pl.lit(False).alias("_stored")
    if handed_on is not None and handed_on.height:
        # a re-exported span (same key) is left to the store, which counts it as stored
        earlier = handed_on.join(calls, on=list(KEY_FIELDS), how="anti")
        calls = pl.concat(
            [calls.with_columns(stored), earlier.with_columns(pl.lit(True).alias("_stored"))],
            how="diagonal_relaxed",
        )
    else:
        calls = calls.with_columns(stored)
    calls = calls.with_row_index("_node")
    labels = _merge_labels(calls)
    detail = pl.sum_horizontal(pl.col(*TOKEN_FIELDS).is_not_null().cast(pl.Int32))
    grouped = calls.join(labels, on="_node", how="inner").with_columns(detail.alias("_detail"))
    singles = calls.join(labels, on="_node", how="anti").drop("_node")
    members = calls.filter(~pl.col("_stored")).select(
        "trace_id",
        pl.col("span_id").alias("_member"),
        "span_id",
        pl.col("trace_id").alias("_key_trace"),
    )
    if grouped.is_empty():
        return singles.filter(~pl.col("_stored")).drop("_stored"), members
    # Which member's key the record keeps: a stored call (it cannot be replaced), then a span
    # in the trace that carries the app's context (nested under a span that is not a twin),
    # then the most detailed span. Usage is the most detailed span's, each count it lacks
    # taken from the next; other fields come from the key's span first.
    twin_parent = grouped.select(
        "_label",
        "trace_id",
        pl.col("span_id").alias("parent_span_id"),
        pl.lit(1).alias("_twin_parent"),
    )
    nested = (pl.col("parent_span_id").is_not_null() & pl.col("_twin_parent").is_null()).cast(
        pl.Int8
    )
    grouped = (
        grouped.join(twin_parent, on=["_label", "trace_id", "parent_span_id"], how="left")
        .with_columns(nested.max().over("_label", "trace_id").alias("_context"))
        .sort(
            ["_label", "_stored", "_context", "_detail", "span_id"],
            descending=[False, True, True, True, False],
        )
    )
    by_usage = (["_stored", "_detail", "span_id"], [True, True, False])
    usage_columns = {*TOKEN_FIELDS, "dialect"}
    key_columns = {*KEY_FIELDS, "parent_span_id", "_stored"}

    def pick(column: str) -> pl.Expr:
        if column in key_columns:
            return pl.col(column).first()
        if column in usage_columns:
            ordered = pl.col(column).sort_by(by_usage[0], descending=by_usage[1])
            return ordered.drop_nulls().first()
        return pl.col(column).drop_nulls().first()

    merged = grouped.group_by("_label", maintain_order=True).agg(
        *[pick(c) for c in singles.columns if c != TWIN_IDS],
        pl.format("{}/{}", "trace_id", "span_id").slice(1).alias(TWIN_IDS),
    )
    winners = grouped.group_by("_label").agg(
        pl.col("span_id").first().alias("_winner"), pl.col("trace_id").first().alias("_wtrace")
    )
    remap = (
        grouped.filter(~pl.col("_stored"))
        .join(winners, on="_label")
        .select(
            "trace_id",
            pl.col("span_id").alias("_member"),
            pl.col("_winner").alias("span_id"),
            pl.col("_wtrace").alias("_key_trace"),
        )
    )
    members = pl.concat([members.join(remap, on=["trace_id", "_member"], how="anti"), remap])
    emitted = pl.concat([singles, merged.drop("_label")], how="diagonal_relaxed").filter(
        ~pl.col("_stored")
    )
    return emitted.drop("_stored"), members


def _walk_actions(walk: pl.DataFrame, tree: pl.DataFrame, column: str = "action") -> pl.DataFrame:
    """Climb ``walk`` (KEY_FIELDS, ``column``, ``_ancestor``) through ``tree`` until each row
    has the nearest ancestor's ``column`` or runs out of ancestors; returns KEY_FIELDS and
    ``column`` (``action``, or ``agent`` for the innermost agent)."""
    tree = tree.select("trace_id", "span_id", "parent_span_id", column)
    tree = tree.unique(subset=list(KEY_FIELDS), keep="first", maintain_order=True)
    ancestors = tree.rename({"span_id": "_ancestor", "parent_span_id": "_next", column: "_found"})
    for _ in range(_MAX_DEPTH):
        if walk.filter(pl.col("_ancestor").is_not_null()).is_empty():
            break
        walk = walk.join(ancestors, on=["trace_id", "_ancestor"], how="left").select(
            *KEY_FIELDS,
            pl.coalesce(column, "_found").alias(column),
            pl.when(pl.col("_found").is_null()).then(pl.col("_next")).alias("_ancestor"),
        )
    return walk.select(*KEY_FIELDS, column)


def _resolve_agents(calls: pl.DataFrame, tree: pl.DataFrame) -> pl.DataFrame:
    """Fill ``agent`` and ``tool`` from the span tree.

    ``agent``: the name on the innermost agent span (``invoke_agent``) above the call.
    ``tool``: the last ``execute_tool`` span of the same agent invocation (the whole trace
    without one) that ended before the call started and after the invocation's previous call
    started: the tool whose result the call consumed. Tool spans are matched within the
    invocation, not among siblings: openai-agents puts each model call and the tools it asks
    for under a turn span of their own, so the call that reads a result is the tool's cousin.
    """
    marked = tree.with_columns(
        pl.when(pl.col("agent").is_not_null()).then(pl.col("span_id")).alias("_agent_span")
    )

    def innermost(frame: pl.DataFrame, start: str) -> pl.DataFrame:
        walk = frame.select(
            *KEY_FIELDS,
            pl.lit(None, dtype=pl.String).alias("_agent_span"),
            pl.col(start).alias("_ancestor"),
        )
        found = _walk_actions(walk, marked, "_agent_span")
        names = marked.filter(pl.col("_agent_span").is_not_null()).select(
            "trace_id", pl.col("span_id").alias("_agent_span"), "agent"
        )
        names = names.unique(["trace_id", "_agent_span"], keep="first")
        return found.join(names, on=["trace_id", "_agent_span"], how="left")

    agents = innermost(calls, "span_id")
    tool_spans = marked.filter(pl.col("tool").is_not_null() & pl.col("tool_end").is_not_null())
    tools = (
        innermost(tool_spans, "parent_span_id")
        .join(tool_spans.select(*KEY_FIELDS, "tool", "tool_end", "tool_step"), on=list(KEY_FIELDS))
        .select(
            "trace_id",
            pl.col("_agent_span").fill_null("").alias("_run"),
            pl.from_epoch(pl.col("tool_end") // 1000, time_unit="us")
            .dt.replace_time_zone("UTC")
            .alias("_tool_end"),
            "tool",
            "tool_step",
        )
        .sort("_tool_end")
    )
    runs = (
        calls.select(*KEY_FIELDS, "start_time")
        .join(agents, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_agent_span").fill_null("").alias("_run"))
        .sort("start_time")
        .with_columns(pl.col("start_time").shift(1).over("trace_id", "_run").alias("_prev"))
    )
    consumed = (
        runs.join_asof(
            tools,
            left_on="start_time",
            right_on="_tool_end",
            by=["trace_id", "_run"],
            strategy="backward",
            check_sortedness=False,  # both sorted above
        )
        .filter(pl.col("_prev").is_null() | (pl.col("_tool_end") >= pl.col("_prev")))
        .select(*KEY_FIELDS, "tool", "tool_step")
    )
    tree_found = agents.select(*KEY_FIELDS, pl.col("agent").alias("_agent")).join(
        consumed.rename({"tool": "_tool", "tool_step": "step_fingerprint"}),
        on=list(KEY_FIELDS),
        how="left",
    )
    return (
        calls.drop("step_fingerprint", strict=False)
        .join(tree_found, on=list(KEY_FIELDS), how="left")
        .with_columns(  # what the live processor recorded on the span comes first
            pl.coalesce("agent", "_agent").alias("agent"),
            pl.coalesce("tool", "_tool").alias("tool"),
        )
        .drop("_agent", "_tool")
    )


def _resolve_actions(calls: pl.DataFrame, tree: pl.DataFrame, roots: pl.DataFrame) -> pl.DataFrame:
    """Fill ``action``: own attribute, nearest ancestor's, root span name, then service."""
    walk = calls.select(
        *KEY_FIELDS, pl.col("parent_span_id").alias("_ancestor"), "action"
    ).with_columns(pl.when(pl.col("action").is_null()).then(pl.col("_ancestor")).alias("_ancestor"))
    walk = _walk_actions(walk, tree)
    root_names = roots.unique(subset=["trace_id"], keep="first", maintain_order=True)
    resolved = walk.select(*KEY_FIELDS, pl.col("action").alias("_resolved")).join(
        calls.select(*KEY_FIELDS, "service"), on=list(KEY_FIELDS)
    )
    resolved = resolved.join(root_names, on="trace_id", how="left").select(
        *KEY_FIELDS, pl.coalesce("_resolved", "_root_name", "service").alias("_resolved")
    )
    return (
        calls.join(resolved, on=list(KEY_FIELDS), how="left")
        .with_columns(pl.col("_resolved").alias("action"))
        .drop("_resolved")
    )


def _inherited_actions(
    nodes: pl.DataFrame, tree: pl.DataFrame, roots: pl.DataFrame
) -> pl.DataFrame:
    """What each of ``nodes`` (spans of closed traces) passes to a descendant that arrives
    late: its own ``llmtrace.action``, else its nearest ancestor's in ``tree``, else the root's
    name. Shaped as tree rows without a parent, so a later walk stops there with this action."""
    walk = nodes.select(*KEY_FIELDS, pl.lit(None, dtype=pl.String).alias("action")).with_columns(
        pl.col("span_id").alias("_ancestor")
    )
    root_names = roots.unique(subset=["trace_id"], keep="first", maintain_order=True)
    return (
        _walk_actions(walk, tree)
        .join(root_names, on="trace_id", how="left")
        .select(
            *KEY_FIELDS,
            pl.lit(None, dtype=pl.String).alias("parent_span_id"),
            pl.coalesce("action", "_root_name").alias("action"),
            pl.lit(None, dtype=pl.String).alias("agent"),
            pl.lit(None, dtype=pl.String).alias("tool"),
            pl.lit(None, dtype=pl.Int64).alias("tool_end"),
            pl.lit(None, dtype=pl.String).alias("tool_step"),
        )
    )
