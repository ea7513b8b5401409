"""OTLP JSON lines as columns: the import's columnar lane (issue 15, goal 1).

Why: after msgspec's typed decode (``otlp_fast``), building a span mapping per span and
mapping it in Python (``map_span_row``) cost ~70% of an import. Here one Python loop flattens
a batch of decoded lines into span columns and, for the attributes the dialects read
(``dialect_columns.KEYS``), one typed column per name, and the dialect mapping runs as Polars
expressions over them (``llmtrace.dialect_columns``). Per-span Python is left where it must
be: spans carrying content are fingerprinted by ``fingerprint.content_fields`` from their
whole attributes (the same function on the same mapping as before), and every span the
expressions are not sure of (``dialect_columns``' docstring: odd values, JSON usage, events,
tool steps, ...) goes through ``_Collector.add`` whole, which reports problems as before.

The guarantee: the same tree rows, roots, evaluations, call rows (in the same order) and
problems as the per-span path. Lines are accepted exactly where ``otlp_fast.decode_line``
accepts them (the same decoder and the same id and time checks, which run here while
flattening); a line either is flattened whole or declined whole (``add_line`` returns False)
and then read by the per-span path. tests/test_import_equivalence.py imports the corpus, its
hostile mutations and the edge lines through both lanes and compares.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

import msgspec
import polars as pl
from msgspec import UNSET

from llmtrace import dialect_columns as dc
from llmtrace import fingerprint
from llmtrace.dialect_tables import _TOKEN_KEYS, COMMON_FIELDS
from llmtrace.dialect_values import _first, _reported_cost, _text, _usage_from_json
from llmtrace.dialects import _scope_dialect
from llmtrace.importers import otlp_fast, otlp_spans
from llmtrace.importers.otlp_fast import _DECODER, _attributes, _scalar, _status
from llmtrace.importers.otlp_rows import TREE_FIELDS
from llmtrace.limits import EARLIEST_NS, LATEST_NS
from llmtrace.record import CALL_SCHEMA

_SERVICE_NAMES = COMMON_FIELDS["service"]
_ENVIRONMENT_NAMES = COMMON_FIELDS["environment"]
_CONTENT = object()  # the marker for a content attribute in ``Pending.wanted``


def decode(line: bytes) -> Any:
    """The decoded request, or None where ``otlp_fast.decode_line`` would decline the line
    before building spans (a surrogate escape, anything msgspec refuses)."""
    if otlp_spans._SURROGATE_ESCAPE.search(line) is not None:
        return None
    try:
        return _DECODER.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class _Store:
    """The values of one attribute name in a batch: (span index, value) per Python type.
    ``appends``: the lists' bound ``append`` methods, which the flatten loop calls."""

    __slots__ = ("s_at", "s", "i_at", "i", "d_at", "d", "appends")

    def __init__(self) -> None:
        self.s_at: list[int] = []
        self.s: list[str] = []
        self.i_at: list[int] = []
        self.i: list[int] = []
        self.d_at: list[int] = []
        self.d: list[float] = []
        self.appends = (
            self.s_at.append,
            self.s.append,
            self.i_at.append,
            self.i.append,
            self.d_at.append,
            self.d.append,
        )

    def truncate(self, spans: int) -> None:
        """Forget values of spans from ``spans`` on (a declined line's)."""
        for at, values in ((self.s_at, self.s), (self.i_at, self.i), (self.d_at, self.d)):
            while at and at[-1] >= spans:
                at.pop()
                values.pop()

    def repeated(self) -> list[int]:
        """Spans holding this name more than once (the per-span path keeps the last)."""
        at = self.s_at + self.i_at + self.d_at
        if len(set(at)) == len(at):
            return []
        seen: set[int] = set()
        return [i for i in at if i in seen or seen.add(i)]  # type: ignore[func-returns-value]


class Pending:
    """Decoded lines of one batch, flattened, waiting for ``settle``."""

    def __init__(self, keep_content: bool) -> None:
        self.keep_content = keep_content
        self.stores = {key: _Store() for key in dc.KEYS}
        self.wanted: dict[str, Any] = {key: store.appends for key, store in self.stores.items()}
        for key in dc.CONTENT_KEYS | (dc.OUTPUT_KEYS if keep_content else frozenset()):
            self.wanted[key] = _CONTENT
        self.lines: list[tuple[str, int]] = []
        self.resources: list[dict[str, Any]] = []
        self.line: list[int] = []
        self.trace: list[str] = []
        self.span: list[str] = []
        self.parent: list[str | None] = []
        self.name: list[str] = []
        self.scope: list[str | None] = []
        self.start: list[int | None] = []
        self.end: list[int | None] = []
        self.status: list[int] = []
        self.res: list[int] = []
        self.raw: list[Any] = []
        self.py: list[int] = []  # spans for the per-span path (may repeat)
        self.content: list[int] = []  # spans carrying content

    def __len__(self) -> int:
        return len(self.span)

    def add_line(self, request: Any, file: str, line_no: int) -> int | None:
        """Flatten one decoded request; the number of its spans, or None when the line is
        declined (as ``otlp_fast`` declines it: any exception while reading its spans)."""
        mark = (len(self.span), len(self.resources), len(self.py), len(self.content))
        try:
            self._flatten(request, len(self.lines))
        except Exception:  # noqa: BLE001 - any doubt declines the line; the per-span path reports it
            self._rollback(*mark)
            return None
        self.lines.append((file, line_no))
        return len(self.span) - mark[0]

    def _rollback(self, spans: int, resources: int, py: int, content: int) -> None:
        for column in (
            self.line,
            self.trace,
            self.span,
            self.parent,
            self.name,
            self.scope,
            self.start,
            self.end,
            self.status,
            self.res,
            self.raw,
        ):
            del column[spans:]
        del self.resources[resources:]
        del self.py[py:]
        del self.content[content:]
        for store in self.stores.values():
            store.truncate(spans)

    def _flatten(self, request: Any, line: int) -> None:
        """One request's spans into the lists; raises where the per-span lane would decline.

        The hot loop of the lane: ids, times and values are read as ``otlp_fast._span`` reads
        them, with the common case (a lowercase hex id, a time as decimal text, a text or
        integer value) inline and every other case through the same functions."""
        hex_id, nanos = otlp_spans._hex_id, otlp_spans._nanos
        span_hex = otlp_spans._LOWER_HEX[8].fullmatch
        earliest, latest = EARLIEST_NS, LATEST_NS
        wanted = self.wanted.get
        py, content = self.py.append, self.content
        content_append = content.append
        line_append, trace_append = self.line.append, self.trace.append
        span_append, parent_append = self.span.append, self.parent.append
        name_append, scope_append = self.name.append, self.scope.append
        start_append, end_append = self.start.append, self.end.append
        status_append, res_append = self.status.append, self.res.append
        raw_append = self.raw.append
        index = len(self.span)
        traces: dict[Any, str] = {}
        parents: dict[Any, str] = {}
        for resource_spans in request.resourceSpans or ():
            resource_struct = resource_spans.resource
            resource = _attributes(resource_struct.attributes if resource_struct else None)
            res = len(self.resources)
            self.resources.append(resource)
            for scope_spans in resource_spans.scopeSpans or ():
                scope_struct = scope_spans.scope
                scope = scope_struct.name if scope_struct is not None else None
                for raw in scope_spans.spans or ():
                    trace = raw.traceId
                    trace_id = traces.get(trace)
                    if trace_id is None:
                        trace_id = traces[trace] = hex_id(trace, 16, "traceId")
                    span_id = raw.spanId
                    if not (type(span_id) is str and span_hex(span_id) and span_id.strip("0")):
                        span_id = hex_id(span_id, 8, "spanId")
                    parent = raw.parentSpanId
                    if parent:
                        parent_id = parents.get(parent)
                        if parent_id is None:
                            parent_id = parents[parent] = hex_id(parent, 8, "parentSpanId")
                    else:
                        parent_id = None
                    start = raw.startTimeUnixNano
                    if type(start) is str and start.isdigit() and start.isascii() and start != "0":
                        start = int(start)
                        if not earliest <= start < latest:
                            start = nanos(raw.startTimeUnixNano, "startTimeUnixNano")
                    else:
                        start = nanos(start, "startTimeUnixNano")
                    end = raw.endTimeUnixNano
                    if type(end) is str and end.isdigit() and end.isascii() and end != "0":
                        end = int(end)
                        if not earliest <= end < latest:
                            end = nanos(raw.endTimeUnixNano, "endTimeUnixNano")
                    else:
                        end = nanos(end, "endTimeUnixNano")
                    status = raw.status
                    status = 0 if status is None else _status(status)
                    events = raw.events
                    if events:
                        py(index)
                        for event in events:  # read as the per-span path reads them
                            _attributes(event.attributes)
                    for kv in raw.attributes or ():
                        store = wanted(kv.key)
                        value = kv.value
                        if store is None or store is _CONTENT:
                            # not read here, but read as the per-span path would (which may
                            # raise: a double as bad text declines the line there too);
                            # text and integers never raise
                            if (
                                value is not None
                                and value.stringValue is UNSET
                                and value.intValue is UNSET
                            ):
                                _scalar(value)
                            if store is _CONTENT and (not content or content[-1] != index):
                                content_append(index)
                            continue
                        if value is None:
                            py(index)
                            continue
                        item = value.stringValue
                        if item is UNSET:
                            item = value.intValue
                            if type(item) is str:
                                try:
                                    item = int(item)
                                except ValueError:  # kept as text, as _scalar keeps it
                                    item = value.intValue
                            elif item is UNSET or item is None:
                                item = _scalar(value)
                        kind = type(item)
                        if kind is str:
                            store[0](index)
                            store[1](item)
                        elif kind is int:
                            store[2](index)
                            store[3](item)
                        elif kind is float:
                            store[4](index)
                            store[5](item)
                        else:  # None, a boolean, a list, a map: Python formats those
                            py(index)
                    line_append(line)
                    trace_append(trace_id)
                    span_append(span_id)
                    parent_append(parent_id)
                    name_append(raw.name or "")
                    scope_append(scope)
                    start_append(start)
                    end_append(end)
                    status_append(status)
                    res_append(res)
                    raw_append(raw)
                    index += 1

    def span_mapping(self, index: int) -> dict[str, Any]:
        """The span mapping ``otlp_fast`` builds, for the per-span path."""
        resource = self.resources[self.res[index]]
        return otlp_fast._span(self.raw[index], self.scope[index], resource, {}, {})

    def where(self, index: int) -> tuple[str, int, str | None]:
        """(file, line, raw span id) of a span, for its problems."""
        file, line_no = self.lines[self.line[index]]
        return file, line_no, self.raw[index].spanId or None


def _column(name: str, size: int, at: list[int], values: list[Any], dtype: pl.DataType):
    series = pl.Series(name, dtype=dtype).extend_constant(None, size)
    return series.scatter(at, pl.Series(name, values, dtype=dtype))


def _attribute_columns(pending: Pending, size: int, py: list[int]) -> list[pl.Series]:
    columns = []
    for key, store in pending.stores.items():
        py.extend(store.repeated())  # a repeated name: values of both are in the lists
        if store.s_at:
            columns.append(_column(f"{key}|s", size, store.s_at, store.s, pl.String()))
        if store.i_at:
            values = store.i
            if max(values) >= 2**63 or min(values) < -(2**63):  # beyond Int64: Python reads it
                keep = [n for n, v in enumerate(values) if -(2**63) <= v < 2**63]
                py.extend(
                    at for n, at in enumerate(store.i_at) if not -(2**63) <= values[n] < 2**63
                )
                at = [store.i_at[n] for n in keep]
                values = [values[n] for n in keep]
            else:
                at = store.i_at
            if at:
                columns.append(_column(f"{key}|i", size, at, values, pl.Int64()))
        if store.d_at:
            columns.append(_column(f"{key}|d", size, store.d_at, store.d, pl.Float64()))
    return columns


def _resource_text(resource: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The resource's own value as ``map_span_row`` takes it (a truthy one wins), as text."""
    value = _first(resource, names)
    return _text(value) if value else None


# the tree's columns this lane fills from attributes (tool steps come from the per-span path)
_TREE_COLUMNS = tuple(name for name in TREE_FIELDS if name != "tool_step")


class Settled:
    """One batch of lines mapped: frames in span order (``_i``), and the spans left for the
    per-span path (``python``), in order."""

    def __init__(
        self,
        tree: pl.DataFrame,
        roots: pl.DataFrame,
        calls: pl.DataFrame,
        python: list[int],
    ) -> None:
        self.tree, self.roots, self.calls, self.python = tree, roots, calls, python


def settle(pending: Pending, raw_names: list[str]) -> Settled:
    """Map the flattened spans: tree rows, roots and call rows (``raw_names`` columns plus
    ``_i``) of every span the expressions are sure of."""
    size = len(pending)
    py = list(pending.py)
    columns = _attribute_columns(pending, size, py)
    resources = pending.resources
    frame = pl.DataFrame(
        [
            pl.Series("_i", range(size), dtype=pl.Int64),
            pl.Series("trace_id", pending.trace, dtype=pl.String),
            pl.Series("span_id", pending.span, dtype=pl.String),
            pl.Series("parent_span_id", pending.parent, dtype=pl.String),
            pl.Series("name", pending.name, dtype=pl.String),
            pl.Series("scope", pending.scope, dtype=pl.String),
            pl.Series("start_ns", pending.start, dtype=pl.Int64),
            pl.Series("end_ns", pending.end, dtype=pl.Int64),
            pl.Series("status_code", pending.status, dtype=pl.Int64),
            pl.Series("_res", pending.res, dtype=pl.UInt32),
            *columns,
        ]
    )
    a = dc.attrs_for(c.name for c in columns)
    services = pl.Series([_resource_text(r, _SERVICE_NAMES) for r in resources], dtype=pl.String)
    environments = pl.Series(
        [_resource_text(r, _ENVIRONMENT_NAMES) for r in resources], dtype=pl.String
    )
    scopes = {s: _scope_name(s) for s in set(pending.scope) if s is not None}
    flagged = pl.Series(py, dtype=pl.Int64)
    frame = frame.with_columns(
        *dc.tree_columns(a),
        pl.col("_i").is_in(flagged.implode()).alias("_py"),
    )
    frame = frame.with_columns((pl.col("_py") | pl.col("_tree_py")).alias("_py"))
    calls = frame.filter(pl.col("_llm") & ~pl.col("_py"))
    calls = calls.with_columns(
        services.gather(calls.get_column("_res")).alias("_res_service"),
        environments.gather(calls.get_column("_res")).alias("_res_environment"),
        dc.dialect_column(a, scopes),
    )
    json, json_failed = _json_columns(calls, a)
    calls = calls.join(json, on="_i", how="left", maintain_order="left")
    calls = calls.with_columns(dc.slot_columns(a)).with_columns(dc.call_columns(a))
    call_py = calls.filter(pl.col("_call_py")).get_column("_i").to_list() + json_failed
    calls = calls.filter(~pl.col("_call_py"))
    if json_failed:
        calls = calls.filter(~pl.col("_i").is_in(pl.Series(json_failed, dtype=pl.Int64).implode()))
    content, failed = _content(pending, calls)
    tree_py = frame.filter(pl.col("_tree_py")).get_column("_i").to_list()
    python = sorted(set(py) | set(tree_py) | set(call_py) | set(failed))
    if failed:
        calls = calls.filter(~pl.col("_i").is_in(pl.Series(failed, dtype=pl.Int64).implode()))
    out = pl.Series(python, dtype=pl.Int64).implode()
    kept = frame.select("_i", *_TREE_COLUMNS, "name")  # not the wide attribute columns
    if python:
        kept = kept.filter(~pl.col("_i").is_in(out))
    tree = kept.select("_i", *_TREE_COLUMNS, pl.lit(None, pl.String).alias("tool_step"))
    roots = kept.filter(pl.col("parent_span_id").is_null()).select(
        "_i", "trace_id", pl.col("name").alias("_root_name")
    )
    calls = calls.join(content, on="_i", how="left", maintain_order="left").with_columns(
        dc.prompt_key(),
        pl.format("{}\x1f{}", pl.col("scope").fill_null(""), pl.col("name")).alias("_emitter"),
    )
    return Settled(tree, roots, calls.select("_i", *raw_names), python)


_JSON_SCHEMA = {
    "_i": pl.Int64,
    **{f"_ju_{key}": pl.Int64 for key in _TOKEN_KEYS},
    "_jc_cost": pl.Float64,
    "_jc_source": pl.String,
    "_jc_has": pl.Boolean,
}
_JSON_LIMIT = 2**60  # counts beyond this go to Python (sums in Polars must not overflow)


def _json_columns(calls: pl.DataFrame, a: Any) -> tuple[pl.DataFrame, list[int]]:
    """Langfuse's JSON usage (on spans of its dialect) and cost (on any call llmtrace did not
    price), read per span by ``dialect_values``' own functions; and the spans where they raise
    or are not text."""
    usage, cost = dc.JSON_USAGE, dc.JSON_COST
    usage_applies = pl.col("dialect").is_in(dc.JSON_DIALECTS) & a.present(usage)
    # not on a span llmtrace priced: those cost details are its own (``dc.priced``)
    cost_applies = a.present(cost) & ~dc.priced(a)
    rows = calls.filter(usage_applies | cost_applies).select(
        "_i",
        pl.when(usage_applies).then(a.s(usage)).alias("usage"),
        (usage_applies & a.s(usage).is_null()).alias("usage_odd"),
        pl.when(cost_applies).then(a.s(cost)).alias("cost"),
        (cost_applies & a.s(cost).is_null()).alias("cost_odd"),
    )
    out: dict[str, list[Any]] = {name: [] for name in _JSON_SCHEMA}
    failed: list[int] = []
    # the same text reads the same (a pure function of it): each distinct text once per batch
    usages: dict[str, Any] = {None: None}  # type: ignore[dict-item]
    costs: dict[str, Any] = {None: (None, None)}  # type: ignore[dict-item]
    for index, usage_text, usage_odd, cost_text, cost_odd in rows.iter_rows():
        if usage_odd or cost_odd:
            failed.append(index)
            continue
        tokens = usages.get(usage_text, _UNREAD)
        if tokens is _UNREAD:
            tokens = usages[usage_text] = _read_usage(usage_text)
        cost_read = costs.get(cost_text, _UNREAD)
        if cost_read is _UNREAD:
            cost_read = costs[cost_text] = _read_cost(cost_text)
        if tokens is _FAILED or cost_read is _FAILED:
            failed.append(index)
            continue
        amount, source = cost_read
        out["_i"].append(index)
        for key in _TOKEN_KEYS:
            out[f"_ju_{key}"].append(None if tokens is None else tokens[key])
        out["_jc_cost"].append(amount)
        out["_jc_source"].append(source)
        out["_jc_has"].append(source is not None)
    return pl.DataFrame(out, schema=_JSON_SCHEMA), failed


_UNREAD, _FAILED = object(), object()


def _as_object(text: str) -> Any:
    """The JSON object ``text`` holds, decoded by msgspec, or ``text`` itself where msgspec
    refuses it or it holds something else; ``dialect_values._json_object`` reads either (a
    mapping as a copy, text through ``json.loads``). Where msgspec accepts a text it gives what
    ``json.loads`` gives (``fingerprint.msgspec_decoder`` says why), at a quarter of the cost."""
    try:
        value = _JSON_DECODE(text)
    except Exception:  # noqa: BLE001 - json.loads decides, as it always did
        return text
    return value if type(value) is dict else text


_JSON_DECODE = msgspec.json.decode


def _read_usage(text: str) -> Any:
    """``_usage_from_json`` of one text, or ``_FAILED`` where it raises or a count is beyond
    what Polars can add up safely (the per-span path then reads the span)."""
    try:
        tokens = _usage_from_json({dc.JSON_USAGE: _as_object(text)}, dc.JSON_USAGE)
    except Exception:  # noqa: BLE001 - the per-span path raises and reports it again
        return _FAILED
    if tokens is None or any(v is not None and v >= _JSON_LIMIT for v in tokens.values()):
        return _FAILED
    return tokens


def _read_cost(text: str) -> Any:
    """``_reported_cost`` of the JSON alone: (cost, source), or (None, None) when the JSON
    holds none (an empty object), so the attributes' cost is read; ``_FAILED`` where it
    raises."""
    try:
        return _reported_cost({}, {dc.JSON_COST: _as_object(text)})
    except Exception:  # noqa: BLE001 - the per-span path raises and reports it again
        return _FAILED


def _scope_name(scope: str) -> str | None:
    dialect = _scope_dialect(scope) if scope else None
    return None if dialect is None else dialect.name


# the fingerprint fields (``fingerprint.EMPTY_FIELDS``) with the call schema's types
_CONTENT_SCHEMA = {"_i": pl.Int64, **{name: CALL_SCHEMA[name] for name in fingerprint.EMPTY_FIELDS}}


def _content(pending: Pending, calls: pl.DataFrame) -> tuple[pl.DataFrame, list[int]]:
    """Fingerprint fields of the calls that carry content (``content_fields`` of their whole
    attributes, as ``map_span_row`` reads them), and the spans whose content raised."""
    carrying = (
        calls.select("_i")
        .join(pl.DataFrame({"_i": pending.content}, schema={"_i": pl.Int64}), on="_i")
        .get_column("_i")
        .to_list()
    )
    rows: dict[str, list[Any]] = {name: [] for name in _CONTENT_SCHEMA}
    failed = []
    fields = fingerprint.content_fields
    keep = pending.keep_content
    raw = pending.raw
    names = list(fingerprint.EMPTY_FIELDS)
    for index in carrying:
        try:
            printed = fields(_attributes(raw[index].attributes), keep_content=keep)
        except Exception:  # noqa: BLE001 - the per-span path raises and reports it again
            failed.append(index)
            continue
        rows["_i"].append(index)
        for name in names:
            rows[name].append(printed[name])
    return _content_frame(rows), failed


def _content_frame(rows: dict[str, list[Any]]) -> pl.DataFrame:
    columns = {}
    for name, dtype in _CONTENT_SCHEMA.items():
        if isinstance(dtype, pl.List):
            columns[name] = list_column(name, rows[name], dtype)
        else:
            columns[name] = pl.Series(name, rows[name], dtype=dtype)
    return pl.DataFrame(columns)


def list_column(name: str, values: list[Any], dtype: pl.List) -> pl.Series:
    """A list column (the prefix hashes and tokens) from per-row lists or None, built from one
    flat series of the elements: Polars builds a series per row from a list of lists, ~half
    the cost of the whole call frame (issue 15). Same values, nulls and type."""
    present = [i for i, value in enumerate(values) if value is not None]
    lists = [values[i] for i in present]
    if not lists or not all(type(value) is list and value for value in lists):
        return pl.Series(name, values, dtype=dtype)  # nothing to gain, or empty lists
    flat = pl.Series(name, list(chain.from_iterable(lists)), dtype=dtype.inner)
    owner = pl.Series(range(len(lists)), dtype=pl.UInt32).repeat_by(
        pl.Series(list(map(len, lists)), dtype=pl.UInt32)
    )
    grouped = (
        pl.DataFrame({"_owner": owner.explode(), name: flat})
        .group_by("_owner", maintain_order=True)
        .agg(pl.col(name))
        .get_column(name)
    )
    where: list[int | None] = [None] * len(values)
    for number, row in enumerate(present):
        where[row] = number
    return grouped.gather(pl.Series(where, dtype=pl.UInt32)).alias(name)


def make_settle(raw_names: list[str]) -> Callable[[Pending], Settled]:
    return lambda pending: settle(pending, raw_names)
