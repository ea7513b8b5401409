"""The live worker's span -> call record: ``dialects.span_to_call``, remembered per span shape.

Why: the worker maps every LLM span with the importer's ``span_to_call`` (dialect detection,
each slot's best-ranked attribute, normalisations, the record dict), ~11 us a call and the
largest single step of the live path (issue 15, goal 3). An app's calls come from a handful
of instrumentations and models: span after span carries the same attribute names, and the
same values in all of them except a few that change per call. Those few are exactly the
slots ``map_span_row`` copies into the record without deriving anything else from them:

* the ids and times (from the span itself, not its attributes);
* the token counts and the reported cost (``tokens.*`` and ``cost`` slots; the counts go
  through the same ``_usage_values`` as in ``map_span_row``, with the provider it derived);
* the response, conversation and user ids (``_text`` of the slot's value).

So a record is made once per *static part*: the span's attribute names (in order), the values
of every attribute outside those slots (with their types: ``1`` and ``True`` are equal keys
but map to different text), its status code and scope, and its resource's attributes; later spans with
the same static part copy that record and set the per-call fields. The result is the same
dict, field for field and in the same order, as ``span_to_call`` gives
(tests/test_live_fast_paths.py replays every recorded library fixture both ways, and spans
that differ only in the per-call slots). Anything else takes ``span_to_call`` itself: error
spans (their events decide the error type), content kept on spans (``keep_content``: the
texts make every static part new), unhashable attribute values, a call that raised, a span
llmtrace priced already (its dialect depends on a value, ``dialects._priced_dialect``).
Bounded: at most ``max_shapes`` attribute-name sets and ``max_records`` static parts each
(a full table is emptied, not grown).
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from llmtrace import dialects, twins
from llmtrace.dialect_tables import (
    _INDEXES,
    _TOKEN_KEYS,
    _TOKEN_SLOT,
    LANGFUSE_COST_JSON,
    PRICE_STATUS,
    REPORTED_COST,
    REPORTED_COST_SOURCE,
    STATUS_ERROR,
)
from llmtrace.dialect_values import _reported_cost, _text, _usage_values
from llmtrace.limits import INT64_MAX
from llmtrace.otel.spans import _SDK_SPANS, _resource_attributes, span_mapping

# the slots whose values only reach their own record fields (see the module docstring)
_TEXT_SLOTS = ("response_id", "conversation_id", "user_id")
_TOKEN_SLOTS = tuple(_TOKEN_SLOT[key] for key in (*_TOKEN_KEYS, "total"))  # _usage_values' order
_VOLATILE_SLOTS = frozenset((*_TOKEN_SLOT.values(), "cost", *_TEXT_SLOTS))
_TOKEN_FIELDS = tuple(dialects.TOKEN_RECORD_FIELD.values())
# the record fields set per call, in the order ``_per_call`` gives their values
_PER_CALL_FIELDS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    *_TEXT_SLOTS,
    *_TOKEN_FIELDS,
    "reported_cost",
    "reported_cost_source",
    "start_time",
    "end_time",
    "duration_ms",
)
_EPOCH = dialects._EPOCH
_MICROSECOND = dialects._MICROSECOND
_MS_PER_NS = dialects.MS_PER_NS
_INELIGIBLE: Any = None  # a shape that always takes span_to_call


class _Shape:
    """What one attribute-name set decides: the dialect, the per-call slots' candidate
    attributes in rank order, a getter of the other attributes' values, and the records
    made so far per static part."""

    __slots__ = ("dialect", "candidates", "static", "records", "plain")

    def __init__(self, dialect: Any, candidates: tuple, static: Any, plain: Any) -> None:
        self.dialect = dialect
        self.candidates = candidates  # ((slot, ((name, rank, is_token), ...)), ...)
        self.static = static  # attrs -> tuple of the static attributes' values
        self.records: dict[Any, tuple[Mapping[str, Any], dict[str, Any]]] = {}
        # when the usage is the token slots' counts alone (no usage JSON, raw usage or
        # reported cost to read): (token slots, text slots), each ((position, candidate
        # names in rank order), ...), for ``_plain_per_call``; else None
        self.plain = plain


def _shape(names: tuple[str, ...], attrs: Mapping[str, Any], scope: Any) -> _Shape:
    dialect = dialects.detect_dialect(attrs, scope)  # decided by names and scope alone
    index = _INDEXES[dialect.name]
    by_slot: dict[str, list[tuple[int, int, str, bool]]] = {}
    volatile = set()
    for position, name in enumerate(names):
        hit = index.get(name)
        if hit is not None and hit[0] in _VOLATILE_SLOTS:
            slot, rank, is_token = hit
            by_slot.setdefault(slot, []).append((rank, position, name, is_token))
            volatile.add(name)
    # _collect keeps the lowest rank, the first in attribute order among equal ranks
    candidates = tuple(
        (slot, tuple((name, rank, is_token) for rank, _, name, is_token in sorted(found)))
        for slot, found in by_slot.items()
    )
    static_names = tuple(name for name in names if name not in volatile)
    if len(static_names) > 1:
        static = itemgetter(*static_names)
    elif static_names:
        only = static_names[0]

        def static(attrs: Mapping[str, Any]) -> tuple[Any, ...]:
            return (attrs[only],)
    else:

        def static(attrs: Mapping[str, Any]) -> tuple[Any, ...]:
            return ()

    plain = None
    if (
        dialect.usage_json is None
        and dialect.raw_usage is None
        and LANGFUSE_COST_JSON not in names
        and "cost" not in by_slot
    ):
        names_of = {slot: tuple(name for name, _, _ in found) for slot, found in candidates}
        plain = (
            tuple(
                (position, names_of[slot])
                for position, slot in enumerate(_TOKEN_SLOTS)
                if slot in names_of
            ),
            tuple(
                (position, names_of[slot])
                for position, slot in enumerate(_TEXT_SLOTS)
                if slot in names_of
            ),
        )
    return _Shape(dialect, candidates, static, plain)


class CallMapper:
    """``dialects.span_to_call`` for the live worker (one thread), with made records kept per
    span shape; see the module docstring."""

    def __init__(
        self, *, keep_content: bool = False, max_shapes: int = 256, max_records: int = 1024
    ) -> None:
        self._keep_content = keep_content
        self._max_shapes = max_shapes
        self._max_records = max_records
        self._shapes: dict[Any, _Shape | None] = {}
        self._last_scope: tuple[Any, str | None] = (_MISSING, None)
        self.hits = 0

    def __call__(self, span: Mapping[str, Any]) -> dict[str, Any]:
        """The call record of ``span`` (a ``span_mapping``); raises ``SpanError`` as
        ``span_to_call`` does."""
        if self._keep_content or span.get("status_code") == STATUS_ERROR:
            return dialects.span_to_call(span, keep_content=self._keep_content)
        attrs = span["attributes"]
        scope = span["scope"]
        names = tuple(attrs)
        shapes = self._shapes
        shape_key = (scope, names)
        shape = shapes.get(shape_key, _MISSING)
        if shape is _MISSING:
            if len(shapes) >= self._max_shapes:
                shapes.clear()
            try:  # a span llmtrace priced: its dialect depends on a value (``_priced_dialect``)
                shape = _INELIGIBLE if PRICE_STATUS in attrs else _shape(names, attrs, scope)
            except Exception:  # noqa: BLE001 - an odd scope: the general path decides
                shape = _INELIGIBLE
            shapes[shape_key] = shape
        if shape is _INELIGIBLE:
            return dialects.span_to_call(span)
        values = shape.static(attrs)
        key = (values, tuple(map(type, values)), span["status_code"])
        try:
            made = shape.records.get(key)
        except TypeError:  # an unhashable value (a list): this shape always has one
            shapes[shape_key] = _INELIGIBLE
            return dialects.span_to_call(span)
        resource = span["resource"]
        if made is None or (made[0] is not resource and made[0] != resource):
            record = dialects.span_to_call(span)
            if not record["is_error"]:
                records = shape.records
                if len(records) >= self._max_records:
                    records.clear()
                records[key] = (resource, record.copy())
            return record
        self.hits += 1
        record = made[1].copy()
        _per_call(
            record,
            shape,
            attrs,
            record["provider"],
            span.get("trace_id"),
            span.get("span_id"),
            span.get("parent_span_id") or None,
            span.get("start_ns"),
            span.get("end_ns"),
        )
        return record

    def from_span(self, span: Any, attrs: dict[str, Any]) -> dict[str, Any]:
        """``self(span_mapping(span, attrs))`` for an SDK span, without the mapping when its
        record is known (the common case): the shape and static part are read from the span's
        fields, the per-call fields from its ids and times. Anything else (a new shape or
        static part, an error status, another span class) takes the mapping and ``__call__``."""
        if type(span) not in _SDK_SPANS or self._keep_content:
            return self(span_mapping(span, attrs))
        code = span._status.status_code
        scope = span._instrumentation_scope
        last = self._last_scope  # (scope, its name): a provider's spans share a few scopes
        if last[0] is not scope:
            last = self._last_scope = (scope, scope.name if scope is not None else None)
        shape = self._shapes.get((last[1], tuple(attrs)))
        if shape is None or code is StatusCode.ERROR:  # new, ineligible (None) or an error
            return self(span_mapping(span, attrs))
        values = shape.static(attrs)
        try:  # the enum's value as its own field: ``.value`` is a Python-level property
            made = shape.records.get((values, tuple(map(type, values)), code._value_))
        except TypeError:  # unhashable: __call__ marks the shape
            made = None
        resource = _resource_attributes(span._resource)
        if made is None or (made[0] is not resource and made[0] != resource):
            return self(span_mapping(span, attrs))
        self.hits += 1
        record = made[1].copy()
        context, parent = span._context, span._parent
        _per_call(
            record,
            shape,
            attrs,
            record["provider"],
            f"{context.trace_id:032x}",
            f"{context.span_id:016x}",
            f"{parent.span_id:016x}" if parent is not None else None,
            span._start_time,
            span._end_time,
        )
        return record


def _per_call(
    record: dict[str, Any],
    shape: _Shape,
    attrs: Mapping[str, Any],
    provider: Any,
    trace_id: Any,
    span_id: Any,
    parent_span_id: Any,
    start: Any,
    end_ns: Any,
) -> None:
    """Set the per-call fields (``_PER_CALL_FIELDS``) of ``record``, a copy of a record made
    for the same static part, as ``map_span_row`` and ``span_to_call`` make them. Each is
    there already, so each keeps its place (written one by one: a tuple of them zipped into
    ``update`` cost ~0.4 us more)."""
    plain = shape.plain
    usage = None
    dialect = shape.dialect
    if plain is not None:  # the slots read straight into their places: no Found dict
        counts = [None, None, None, None, None, None, None]
        for position, names in plain[0]:
            for name in names:  # _collect's choice: the first present (None is absent)
                value = attrs[name]
                if value is not None:
                    counts[position] = value
                    break
        usage = _plain_usage(counts, dialect, provider)
    if usage is not None:
        reported = _NO_REPORTED_COST  # a plain shape has no cost slot nor Langfuse's cost JSON
        texts = [None, None, None]
        for position, names in plain[1]:  # type: ignore[index]
            for name in names:
                value = attrs[name]
                if value is not None and value != "":
                    texts[position] = value if type(value) is str else _text(value)
                    break
        response_id, conversation_id, user_id = texts
    else:
        found: dict[str, tuple[int, str, Any]] = {}
        for slot, candidates in shape.candidates:
            for name, rank, is_token in candidates:  # _collect's choice among those present
                value = attrs[name]
                if value is None or (value == "" and not is_token):
                    continue
                found[slot] = (rank, name, value)
                break
        usage = _usage_values(found, attrs, dialect, provider)
        reported = _reported_cost(found, attrs)
        hit = found.get("response_id")
        response_id = None if hit is None else _text(hit[2])
        hit = found.get("conversation_id")
        conversation_id = None if hit is None else _text(hit[2])
        hit = found.get("user_id")
        user_id = None if hit is None else _text(hit[2])
    # dialects._start_ns: a point-in-time span with an elapsed duration began that long before
    start_ns = start
    if dialect.elapsed is not None and start is not None and start == end_ns:
        start_ns = dialects._start_ns({"start_ns": start, "end_ns": end_ns}, attrs, dialect)
    record["trace_id"] = trace_id
    record["span_id"] = span_id
    record["parent_span_id"] = parent_span_id
    record["response_id"] = response_id
    record["conversation_id"] = conversation_id
    record["user_id"] = user_id
    (
        record["input_tokens"],
        record["output_tokens"],
        record["cache_read_tokens"],
        record["cache_write_tokens"],
        record["cache_write_1h_tokens"],
        record["reasoning_tokens"],
    ) = usage
    record["reported_cost"], record["reported_cost_source"] = reported
    record["start_time"] = None if start_ns is None else _EPOCH + _MICROSECOND * (start_ns // 1000)
    record["end_time"] = None if end_ns is None else _EPOCH + _MICROSECOND * (end_ns // 1000)
    record["duration_ms"] = (
        (end_ns - start_ns) * _MS_PER_NS if start_ns is not None and end_ns is not None else None
    )


_NO_REPORTED_COST = (None, None)


def _plain_usage(counts: list[Any], dialect: Any, provider: Any) -> tuple[Any, ...] | None:
    """``_usage_values`` for a plain shape (its usage is its token slots alone) from the
    counts found per slot (``_TOKEN_SLOTS`` order) when each is a plain int in range (what
    OTLP's intValue gives); None otherwise (the general function then decides, and raises
    what it raises). The same counting rules as ``_make_inclusive``, written out on locals
    instead of a dict per call."""
    for value in counts:
        if value is not None and (type(value) is not int or not 0 <= value <= INT64_MAX):
            return None
    inp, out, cache_read, cache_write, cache_write_1h, reasoning, total = counts
    cache = (cache_read or 0) + (cache_write or 0)
    input_tokens = inp
    if inp is not None and cache and (provider in dialect.exclusive_input_providers or cache > inp):
        input_tokens = inp + cache
        if input_tokens > INT64_MAX:
            return None
    output_tokens = out
    if out is not None and reasoning:
        exclusive = reasoning > out or (
            total is not None and inp is not None and total == inp + out + reasoning
        )
        if exclusive:
            output_tokens = out + reasoning
            if output_tokens > INT64_MAX:
                return None
    return input_tokens, output_tokens, cache_read, cache_write, cache_write_1h, reasoning


_MISSING: Any = object()


# -- the store exporter's row, handed over ------------------------------------------------------

CALL_ROW: tuple[str, ...] = (*dialects.CALL_FIELDS, twins.EMITTER)
"""``importers.otlp_rows.CALL_ROW``, without importing the importer at the app's start (a test
checks they agree)."""
ROW_ATTRIBUTE = "_llmtrace_row"
"""The private attribute of an exported span copy that holds its ``call_row``: not an OTel
attribute, so no exporter sends it."""
_START_AT = CALL_ROW.index("start_ns")
_before_times = itemgetter(*CALL_ROW[:_START_AT])
_after_times = itemgetter(*CALL_ROW[_START_AT + 2 :])  # start_ns and end_ns are neighbours
_DIALECT_AT = CALL_ROW.index("dialect")
_HANDED_OVER = frozenset((PRICE_STATUS, REPORTED_COST, REPORTED_COST_SOURCE))


def call_row(
    span: Any, call: Mapping[str, Any], attrs: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The row the store exporter makes of ``span``'s exported copy (``SpanRows.add``:
    ``map_span_row`` and the emitter), from the worker's record of it, or None when the two
    could differ; ``attrs``: the attributes the record was mapped from.

    Why: ``span_rows`` mapped every exported LLM span again (``map_span_row``, ~9 us of the
    exporter thread's ~16 per call, issue 15, goal 3) although the worker's record holds the
    same values: the exported copy is the span plus the attributes the worker added before
    mapping it (action, agent, tool, the hook's fingerprints, which the record holds as
    computed) and after (cost attributes, price status, the source's reported cost, which
    readers of a priced span take from those alone: ``dialect_values._priced_reported_cost``).
    The times are the span's (``dialects._start_ns`` for a point-in-time span). None, so the
    exporter maps the span itself, for: another span class, a span without a start, with
    events (exceptions, evaluations: ``_error`` and evaluations read them), an error, or one
    carrying attributes the worker writes over (a span priced upstream). The caller also
    leaves out records changed after mapping (usage adopted from a child or a held twin).
    ``hand_over`` checks the dialect of the copy (``dialects._priced_dialect``).
    """
    if type(span) not in _SDK_SPANS or span._events or call.get("is_error") is not False:
        return None
    start, end = span._start_time, span._end_time
    if start is None or not _HANDED_OVER.isdisjoint(attrs):
        return None
    if start == end:  # a point-in-time span: its dialect may date the call earlier
        dialect = dialects.DIALECTS_BY_NAME.get(call.get("dialect"))  # type: ignore[arg-type]
        if dialect is None:
            return None
        start = dialects._start_ns({"start_ns": start, "end_ns": end}, attrs, dialect)
    try:
        return (*_before_times(call), start, end, *_after_times(call))
    except KeyError:  # not a whole record (another mapper)
        return None


def hand_over(copy: Any, row: tuple[Any, ...], scope_name: str | None) -> None:
    """Give the exported ``copy`` its ``call_row`` (``ROW_ATTRIBUTE``) when the copy's dialect
    is the record's: a source marker that is also a cost attribute the worker writes
    (``PRICED_OVER``) counts on a priced span only when the source's cost came from it."""
    if type(copy) is not ReadableSpan:
        return
    attrs = copy._attributes
    if type(attrs) is not dict:
        return
    try:
        if dialects.detect_dialect(attrs, scope_name).name != row[_DIALECT_AT]:
            return
    except Exception:  # noqa: BLE001 - the exporter maps it and says why
        return
    setattr(copy, ROW_ATTRIBUTE, row)
