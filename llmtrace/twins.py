"""Twins: two spans that describe one LLM call, wherever they sit.

Real apps run more than one emitter per call: the ``anthropic`` SDK's own span beside
OpenLLMetry's or OpenInference's, Logfire's request span beside its streaming log span. Such
spans are often in *different traces* (an instrumentation that starts its span without making
it current, or a log span written after the request's context was left), in different files
or batches, and some carry no response id. Counted as they are, one call costs twice, or once
priced and once "unpriced: no_usage". This module decides which spans are one call, for every
path: the OTLP importer (files, batches, late twins of calls already stored), the live store
exporter (through the importer's ``calls_from_spans``) and the live span processor.

Two spans are twins when

1. **they report the same response id** (``gen_ai.response.id``; a provider never reuses one)
   and their time spans overlap, within ``TOLERANCE``, or they sit in one trace (ids of a
   loopback server or a test fixture repeat across runs; real twins always overlap); or
2. **one of them has no response id** (if both have one and they differ, they are two calls)
   and nothing tells them apart:

   * the same ``service``, ``provider`` and model (response or request model of either);
   * different emitters (instrumentation scope and span name): one library writes one span of
     a given name per call, so two spans of one emitter are always two calls;
   * their times line up within ``TOLERANCE`` in one of two shapes: *the same interval*
     (starts and ends both within it: one emitter wraps the other's call, as OpenInference's
     ``messages.stream`` span and the SDK's own span do), or *a continuation*: the span
     without usage ends where the span with usage starts (Logfire's streaming request span
     ends when the stream is handed to the app, its log span covers the stream from there
     on; see ``llmtrace.dialects.Dialect.elapsed``);
   * their usage agrees: input and output tokens equal wherever both report them (a span
     without usage agrees with any usage);
   * and they are each other's nearest such candidate (by how far they are from their
     shape). Matching is one to one, so two genuinely different calls that look alike (same
     tokens, the same millisecond) stay two: each of their spans pairs with its own twin, or
     with nothing, never both with one.

The two spans of a parent and child that report equal usage are one call too (an
instrumentation span around the SDK's span); the importer adds those edges itself
(``_merge_labels``) because they need the span tree.

Which span's identity the record keeps is decided where the twins are merged
(``llmtrace.importers.otlp_merge._merge_duplicates``): the span in the trace that carries the app's
context; the other spans' ids are noted in the record's ``twin_ids``.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the batch functions import polars themselves: the live processor, which
    import polars as pl  # uses only the one-at-a-time rules, must not load it (test_startup)

TOLERANCE = timedelta(milliseconds=50)
"""How far apart the times of twins may be. Measured on recordings of the real libraries
(tests/fixtures/libraries): 0.4-1.2 ms between an instrumentation's span and the SDK span it
wraps, 0.9-2.4 ms between Logfire's request span end and its log span's start; the rest is
margin for a loaded machine (a GC pause between the two)."""
NEIGHBOURS = 8
"""Spans compared with each span, in start order per service and provider: bounds the work
to linear time however many calls run at once; twins start within milliseconds of each other."""

EMITTER = "_emitter"
"""Internal column (and call-dict key): instrumentation scope and span name of the span."""

TWIN_COLUMNS: tuple[str, ...] = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "response_id",
    "service",
    "provider",
    "model",
    "request_model",
    "start_time",
    "end_time",
    "input_tokens",
    "output_tokens",
    EMITTER,
)
"""What matching reads: the columns a frame handed to the edge functions must have."""


def emitter(scope: str | None, name: str | None) -> str:
    """The emitter key of a span: scope and span name."""
    return f"{scope or ''}\x1f{name or ''}"


# --------------------------------------------------------------------------------------------
# Batches (Polars): the importer and the live store exporter
# --------------------------------------------------------------------------------------------


def _end(side: str) -> pl.Expr:
    import polars as pl

    return pl.coalesce(pl.col(f"end_time{side}"), pl.col(f"start_time{side}"))


def _overlap(a: str, b: str) -> pl.Expr:
    """Time spans overlap within TOLERANCE (a missing end counts as the start)."""
    import polars as pl

    a_start, b_start = pl.col(f"start_time{a}"), pl.col(f"start_time{b}")
    return (a_start <= _end(b) + TOLERANCE) & (b_start <= _end(a) + TOLERANCE)


def _agree(column: str, a: str, b: str) -> pl.Expr:
    import polars as pl

    left, right = pl.col(f"{column}{a}"), pl.col(f"{column}{b}")
    return left.is_null() | right.is_null() | (left == right)


def _has_usage(side: str) -> pl.Expr:
    import polars as pl

    return (
        pl.col(f"input_tokens{side}").is_not_null() | pl.col(f"output_tokens{side}").is_not_null()
    )


def _same_model(a: str, b: str) -> pl.Expr:
    import polars as pl

    same = pl.lit(False)
    for left in ("model", "request_model"):
        for right in ("model", "request_model"):
            same = same | pl.col(f"{left}{a}").eq(pl.col(f"{right}{b}")).fill_null(False)
    return same


def _misalignment(a: str, b: str) -> pl.Expr:
    """How far two spans are from a twin shape (null: neither shape fits). The same
    interval: distance of the starts plus of the ends. A continuation: the gap between the end
    of the span without usage and the start of the span with usage."""
    import polars as pl

    a_start, b_start = pl.col(f"start_time{a}"), pl.col(f"start_time{b}")
    starts, ends = (a_start - b_start).abs(), (_end(a) - _end(b)).abs()
    a_then_b, b_then_a = (_end(a) - b_start).abs(), (_end(b) - a_start).abs()
    return (
        pl.when((starts <= TOLERANCE) & (ends <= TOLERANCE))
        .then(starts + ends)
        .when(~_has_usage(a) & _has_usage(b) & (a_then_b <= TOLERANCE) & (b_start >= a_start))
        .then(a_then_b)
        .when(~_has_usage(b) & _has_usage(a) & (b_then_a <= TOLERANCE) & (a_start >= b_start))
        .then(b_then_a)
    )


def response_id_edges(calls: pl.DataFrame) -> pl.DataFrame:
    """(_node, _peer) for spans with the same response id that overlap in time or share a
    trace (rule 1)."""
    import polars as pl

    columns = ["_node", "trace_id", "response_id", "start_time", "end_time"]
    with_id = calls.select(columns).filter(pl.col("response_id").is_not_null())
    pairs = with_id.join(with_id, on="response_id", suffix="_p").filter(
        (pl.col("_node") < pl.col("_node_p"))
        & ((pl.col("trace_id") == pl.col("trace_id_p")) | _overlap("", "_p"))
    )
    return pairs.select("_node", pl.col("_node_p").alias("_peer"))


def time_edges(calls: pl.DataFrame) -> pl.DataFrame:
    """(_node, _peer) for spans without a shared response id that are one call (rule 2).

    ``calls`` holds ``_node``, ``TWIN_COLUMNS`` and optionally ``_stored`` (calls handed on
    earlier: two of those are never paired again). Each span is compared with its
    ``NEIGHBOURS`` successors in start order within its service and provider; a batch whose
    spans all carry a response id is left to ``response_id_edges``."""
    import polars as pl

    stored = ["_stored"] if "_stored" in calls.columns else []
    frame = calls.select("_node", *TWIN_COLUMNS, *stored)
    if not stored:
        frame = frame.with_columns(pl.lit(False).alias("_stored"))
    frame = frame.filter(pl.col("start_time").is_not_null())
    if frame.filter(pl.col("response_id").is_null()).is_empty():
        return pl.DataFrame(schema={"_node": pl.UInt32, "_peer": pl.UInt32})  # ids decide
    frame = frame.sort("service", "provider", "start_time", "_node", nulls_last=True).lazy()
    # the k-th successor in this order, filtered lazily before the next copy is made
    following = [
        frame.with_columns(pl.all().shift(-k).name.suffix("_p")).filter(
            pl.col("_node_p").is_not_null()
            & (pl.col("response_id").is_null() | pl.col("response_id_p").is_null())
            & pl.col("service").eq_missing(pl.col("service_p"))
            & pl.col("provider").eq_missing(pl.col("provider_p"))
        )
        for k in range(1, NEIGHBOURS + 1)
    ]
    candidates = (
        pl.concat(following)
        .with_columns(_misalignment("", "_p").alias("_distance"))
        .filter(
            pl.col("_distance").is_not_null()
            & ~(pl.col("_stored") & pl.col("_stored_p"))
            & (pl.col(EMITTER) != pl.col(f"{EMITTER}_p")).fill_null(True)
            & _same_model("", "_p")
            & _agree("input_tokens", "", "_p")
            & _agree("output_tokens", "", "_p")
        )
        .select(
            "_node",
            pl.col("_node_p").alias("_peer"),
            "_distance",
            pl.when(
                (pl.col("parent_span_id") == pl.col("span_id_p"))
                | (pl.col("parent_span_id_p") == pl.col("span_id"))
            )
            .then(0)
            .when(pl.col("trace_id") == pl.col("trace_id_p"))
            .then(1)
            .otherwise(2)
            .alias("_kin"),
        )
        .collect()
    )
    return _one_to_one(candidates)


def _one_to_one(candidates: pl.DataFrame) -> pl.DataFrame:
    """Pair candidates one to one: repeatedly keep the pairs that are each other's nearest
    (ties: a parent and its child first, then a pair in one trace, then the lower node) and drop their nodes from the rest.
    Two look-alike calls with two spans each become two pairs, not one pair and two orphans."""
    import polars as pl

    both = pl.concat(
        [
            candidates,
            candidates.select(
                pl.col("_peer").alias("_node"),
                pl.col("_node").alias("_peer"),
                "_distance",
                "_kin",
            ),
        ]
    )
    matched: list[pl.DataFrame] = []
    for _ in range(NEIGHBOURS * 2):
        if both.is_empty():
            break
        nearest = (
            both.sort("_distance", "_kin", "_peer").group_by("_node").agg(pl.col("_peer").first())
        )
        mutual = nearest.join(
            nearest.rename({"_node": "_peer", "_peer": "_node"}), on=["_node", "_peer"]
        )
        if mutual.is_empty():
            break
        matched.append(mutual.filter(pl.col("_node") < pl.col("_peer")))
        taken = mutual.select("_node")
        both = both.join(taken, on="_node", how="anti").join(
            taken.rename({"_node": "_peer"}), on="_peer", how="anti"
        )
    if not matched:
        return candidates.select("_node", "_peer").clear()
    return pl.concat(matched).select("_node", "_peer")


# --------------------------------------------------------------------------------------------
# One call at a time: the live span processor
# --------------------------------------------------------------------------------------------


def _seconds(value: datetime | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return value / 1e9


def _usage(call: Mapping[str, Any]) -> bool:
    return call.get("input_tokens") is not None or call.get("output_tokens") is not None


def _agrees(a: Any, b: Any) -> bool:
    return a is None or b is None or a == b


def _times(call: Mapping[str, Any]) -> tuple[float, float] | None:
    start = _seconds(call.get("start_time"))
    if start is None:
        return None
    end = _seconds(call.get("end_time"))
    return start, start if end is None else end


def misalignment(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """Seconds from a twin shape (as ``_misalignment``), None when neither shape fits."""
    a_times, b_times = _times(a), _times(b)
    if a_times is None or b_times is None:
        return None
    (a_start, a_end), (b_start, b_end) = a_times, b_times
    tolerance = TOLERANCE.total_seconds()
    starts, ends = abs(a_start - b_start), abs(a_end - b_end)
    if starts <= tolerance and ends <= tolerance:
        return starts + ends
    if not _usage(a) and _usage(b) and abs(a_end - b_start) <= tolerance and b_start >= a_start:
        return abs(a_end - b_start)
    if not _usage(b) and _usage(a) and abs(b_end - a_start) <= tolerance and a_start >= b_start:
        return abs(b_end - a_start)
    return None


def distance(a: Mapping[str, Any], b: Mapping[str, Any]) -> float:
    """How far two twins are from their shape (the nearest is matched); inf if no shape fits."""
    gap = misalignment(a, b)
    return float("inf") if gap is None else gap


def are_twins(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two call mappings (``dialects.span_to_call`` output plus ``EMITTER``) are one
    call, by the rules above, for the live processor that sees one span at a time. The batch
    functions are the same rules as Polars expressions (tests check they agree); the
    nearest-candidate rule is the caller's (``RecentCalls.find``, the processor's held spans).
    """
    a_times, b_times = _times(a), _times(b)
    if a_times is None or b_times is None:
        return False
    tolerance = TOLERANCE.total_seconds()
    overlap = a_times[0] <= b_times[1] + tolerance and b_times[0] <= a_times[1] + tolerance
    a_id, b_id = a.get("response_id"), b.get("response_id")
    if a_id is not None and b_id is not None:
        return a_id == b_id and (overlap or a.get("trace_id") == b.get("trace_id"))
    if a.get(EMITTER) is not None and a.get(EMITTER) == b.get(EMITTER):
        return False
    if a.get("service") != b.get("service") or a.get("provider") != b.get("provider"):
        return False
    models = {a.get("model"), a.get("request_model")} - {None}
    if not models & ({b.get("model"), b.get("request_model")} - {None}):
        return False
    return (
        misalignment(a, b) is not None
        and _agrees(a.get("input_tokens"), b.get("input_tokens"))
        and _agrees(a.get("output_tokens"), b.get("output_tokens"))
    )


# What ``are_twins`` and ``distance`` read of a call, and what the processor reads of a twin
# ``RecentCalls.find`` returns (its span and trace id).
TWIN_FIELDS = (
    "span_id",
    "trace_id",
    "response_id",
    "service",
    "provider",
    "model",
    "request_model",
    "input_tokens",
    "output_tokens",
    "start_time",
    "end_time",
    EMITTER,
)

_twin_values = itemgetter(*TWIN_FIELDS)
_SPAN_ID = TWIN_FIELDS.index("span_id")
_RESPONSE_ID = TWIN_FIELDS.index("response_id")
_EMITTER = TWIN_FIELDS.index(EMITTER)


class RecentCalls:
    """The live processor's memory of calls it priced lately, to find the twin of a new span.

    Bounded (``size`` calls, oldest forgotten first); worker thread only. A call matched by the
    time rule (no shared response id) is matched once: matching stays one to one, as in
    ``time_edges``. ``find`` compares a new call with the ``scan`` most recent calls and
    returns the nearest twin."""

    def __init__(self, size: int = 4096, scan: int = 64) -> None:
        # a full queue makes the processor work inline on an app thread beside the worker
        self._lock = threading.Lock()
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=size)  # TWIN_FIELDS' values
        # the calls without a response id, numbered in the order remembered: a call with an id
        # can only be a time twin of one of them, and scanning the 64 most recent calls for
        # them cost 6-8 us a span when every call has an id (1-2 us now)
        self._without_id: deque[tuple[int, tuple[Any, ...]]] = deque(maxlen=size)
        self._count = 0
        self._by_id: dict[str, tuple[Any, ...]] = {}
        self._paired: set[str] = set()
        self._scan = scan

    def remember(self, call: Mapping[str, Any]) -> None:
        """Keep the fields the twin rules read (``TWIN_FIELDS``), not the whole call record:
        4,096 full records (~45 fields, fingerprint lists) were megabytes an app kept for
        nothing. Kept as the tuple of their values (one C call; made into a mapping only
        when a look-up compares it): a dict of them per call cost ~1 us more."""
        try:  # a call record has every field (one C call); a partial mapping takes .get
            kept = _twin_values(call)
        except KeyError:
            kept = tuple(call.get(field) for field in TWIN_FIELDS)
        with self._lock:
            self._remember(kept)

    def _remember(self, kept: tuple[Any, ...]) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            old = recent[0]
            if self._by_id.get(old[_RESPONSE_ID]) is old:
                del self._by_id[old[_RESPONSE_ID]]
            self._paired.discard(old[_SPAN_ID])
        recent.append(kept)
        response_id = kept[_RESPONSE_ID]
        if response_id is not None:
            self._by_id.setdefault(response_id, kept)
        else:
            self._without_id.append((self._count, kept))
        self._count += 1

    def find(self, call: Mapping[str, Any]) -> Mapping[str, Any] | None:
        with self._lock:
            return self._find(call)

    def _find(self, call: Mapping[str, Any]) -> Mapping[str, Any] | None:
        response_id = call.get("response_id")
        if response_id is not None:
            same = self._by_id.get(response_id)
            if same is not None:
                same_call = dict(zip(TWIN_FIELDS, same, strict=True))
                if are_twins(call, same_call):
                    return same_call
        if response_id is not None and not self._without_id:
            return None  # every call kept has an id: only the same id could be a twin
        best, best_distance = None, None
        # the ``scan`` most recent calls; with an id, only those without one (two ids that
        # differ, or were checked above, are never twins)
        oldest = self._count - min(self._scan, self._recent.maxlen or self._scan)
        candidates = (
            (
                other
                for _, other in itertools.takewhile(
                    lambda item: item[0] >= oldest, reversed(self._without_id)
                )
            )
            if response_id is not None
            else itertools.islice(reversed(self._recent), self._scan)
        )
        emitter = call.get(EMITTER)
        for kept in candidates:
            if kept[_SPAN_ID] in self._paired:
                continue
            # in a scan at most one of the two has a response id, so one emitter's two spans
            # are never twins (``are_twins``' rule): skipped before a mapping is made
            if emitter is not None and emitter == kept[_EMITTER]:
                continue
            other = dict(zip(TWIN_FIELDS, kept, strict=True))
            if are_twins(call, other):
                gap = distance(call, other)
                if best_distance is None or gap < best_distance:
                    best, best_distance = other, gap
        if best is not None:
            self._paired.add(best.get("span_id"))  # type: ignore[arg-type]
            self._paired.add(call.get("span_id"))  # type: ignore[arg-type]
        return best

    def clear(self) -> None:
        self._recent.clear()
        self._without_id.clear()
        self._by_id.clear()
        self._paired.clear()
