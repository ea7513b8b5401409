"""``llmtrace.dialects`` as Polars expressions: tree rows and call-record fields for a whole
batch of spans at once (the OTLP importer's columnar lane, issue 15).

Why: mapping one span at a time in Python (``map_span_row``, ``agent_and_tool``,
``is_llm_span``) cost ~60% of an import. Here the same decisions are expressions over one
row per span and a few typed columns per attribute the dialects read, built from the same
tables (``DIALECTS``, ``COMMON_FIELDS``, ``OPERATION_SOURCES``, ...), so the two cannot drift
apart in data, only in logic, which tests/test_import_equivalence.py compares on the corpus.

The columns (made by ``llmtrace.importers.otlp_columns``): for every attribute name in
``KEYS``, ``<name>|s`` (text), ``<name>|i`` (integer) and ``<name>|d`` (double), at most one
of them set per span; any other value (a boolean, a list, a map, a null) has already sent its
span to the per-span path. Expressions only cover the common case exactly; every row they are
not sure of is flagged (``_py``): a float or non-ASCII text where Python would format or
lower-case it, a token count that is not a plain integer, a cost given as text, and spans
whose usage or cost sits in a JSON attribute (Langfuse, Logfire raw usage), a Langfuse model
parameters tier, a Logfire point-in-time span with a duration, or a tool span with recorded
arguments. Flagged spans are mapped by ``map_span_row`` itself, which names any problem.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import polars as pl

from llmtrace import dialect_tables as t
from llmtrace import fingerprint

_OPERATION = "gen_ai.operation.name"
_OPENINFERENCE_KIND = "openinference.span.kind"
_OBSERVATION_TYPE = "langfuse.observation.type"
_LEVEL = "langfuse.observation.level"
_TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
_TOOL_RESULT = "gen_ai.tool.call.result"
_ENTITY_NAME = "traceloop.entity.name"
_ELAPSED = tuple(dict.fromkeys(x.elapsed for x in t.DIALECTS if x.elapsed))
# Present on an LLM span, these send it to ``map_span_row`` whole (JSON read in Python).
_WHOLE_CALL_KEYS = (t.LOGFIRE_RAW_USAGE, t.LANGFUSE_MODEL_PARAMETERS)
# Langfuse's JSON usage and cost are read in Python per span that has them (``json_columns``)
# and handed in as columns ``_ju_<token key>`` and ``_jc_cost`` / ``_jc_source`` / ``_jc_has``.
JSON_USAGE = t.LANGFUSE_USAGE_JSON
JSON_COST = t.LANGFUSE_COST_JSON
JSON_DIALECTS = tuple(x.name for x in t.DIALECTS if x.usage_json == JSON_USAGE)
assert all(x.usage_json in (None, JSON_USAGE) for x in t.DIALECTS)
_SLOTS = (*t._TOKEN_SLOT.values(), t._COST_SLOT, *t.COMMON_FIELDS)
_TOKEN_SLOTS = frozenset(t._TOKEN_SLOT.values())

KEYS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            *(key for index in t._INDEXES.values() for key in index),
            *(m for x in t.DIALECTS for m in x.markers),
            *t.USAGE_ATTRIBUTES,
            *t.AGGREGATE_MARKERS,
            "llm.request.type",
            *(name for name, _ in t.OPERATION_SOURCES),
            *t.AGENT_NAME_ATTRIBUTES,
            *t.TOOL_NAME_ATTRIBUTES,
            *(name for name, _ in t.TOOL_SPAN_MARKERS),
            _ENTITY_NAME,
            t.AGENT_ATTRIBUTE,
            t.TOOL_ATTRIBUTE,
            "error.type",
            _LEVEL,
            _TOOL_ARGUMENTS,
            _TOOL_RESULT,
            *_WHOLE_CALL_KEYS,
            JSON_USAGE,
            JSON_COST,
            *_ELAPSED,
            "llmtrace.action",
            t.PRICE_STATUS,
            t.REPORTED_COST,
            t.REPORTED_COST_SOURCE,
        ]
    )
)
"""Every span attribute the expressions read (values or presence)."""

CONTENT_KEYS: frozenset[str] = frozenset(
    (*fingerprint.INPUT_MARKERS, fingerprint.PREFIX_HASHES_ATTRIBUTE)
)
"""Attributes whose presence makes ``content_fields`` read a span (plus ``OUTPUT_MARKERS``
with ``keep_content``): such spans are fingerprinted in Python from their whole attributes."""
OUTPUT_KEYS: frozenset[str] = frozenset(fingerprint.OUTPUT_MARKERS)

_ASCII = r"^[\x20-\x7e]*$"


class _Attrs:
    """Expressions for the attribute columns a batch has (absent ones are null literals)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.slots: set[str] = set()  # slot columns made (``slot_columns``)

    def _col(self, key: str, kind: str, dtype: pl.DataType) -> pl.Expr:
        name = f"{key}|{kind}"
        return pl.col(name) if name in self.names else pl.lit(None, dtype)

    def s(self, key: str) -> pl.Expr:
        return self._col(key, "s", pl.String())

    def i(self, key: str) -> pl.Expr:
        return self._col(key, "i", pl.Int64())

    def d(self, key: str) -> pl.Expr:
        return self._col(key, "d", pl.Float64())

    def has(self, key: str) -> bool:
        return any(f"{key}|{k}" in self.names for k in "sid")

    def present(self, key: str) -> pl.Expr:
        """``key in attrs`` (other kinds of values never reach the expressions)."""
        parts = [pl.col(f"{key}|{k}").is_not_null() for k in "sid" if f"{key}|{k}" in self.names]
        return pl.any_horizontal(parts) if parts else pl.lit(False)

    def filled(self, key: str) -> pl.Expr:
        """``attrs.get(key)`` is not None and not ""."""
        parts = []
        if f"{key}|s" in self.names:
            parts.append(pl.col(f"{key}|s").is_not_null() & (pl.col(f"{key}|s") != ""))
        parts += [pl.col(f"{key}|{k}").is_not_null() for k in "id" if f"{key}|{k}" in self.names]
        return pl.any_horizontal(parts) if parts else pl.lit(False)

    def value(self, key: str) -> _Value:
        return _Value(self.s(key), self.i(key), self.d(key), pl.lit(key))

    def equals(self, key: str, text: str) -> pl.Expr:
        return (self.s(key) == text).fill_null(False)

    def is_in(self, key: str, texts: Iterable[str]) -> pl.Expr:
        return self.s(key).is_in(sorted(texts)).fill_null(False)

    def first(self, keys: Iterable[str], *, filled: bool = True) -> _Value:
        """The first key present (``filled``: and not ""), as ``_first`` / ``_collect`` pick."""
        keys = [k for k in keys if self.has(k)]
        if not keys:
            return _Value.null()
        chosen = [(self.filled(k) if filled else self.present(k), self.value(k)) for k in keys]
        return _Value.choose(chosen)


class _Value:
    """One attribute value as (text, integer, double, attribute name) expressions."""

    def __init__(self, s: pl.Expr, i: pl.Expr, d: pl.Expr, name: pl.Expr) -> None:
        self.s, self.i, self.d, self.name = s, i, d, name

    @staticmethod
    def null() -> _Value:
        return _Value(
            pl.lit(None, pl.String),
            pl.lit(None, pl.Int64),
            pl.lit(None, pl.Float64),
            pl.lit(None, pl.String),
        )

    @staticmethod
    def choose(options: list[tuple[pl.Expr, _Value]]) -> _Value:
        """The value of the first option whose condition holds (else null)."""
        parts = []
        for field in ("s", "i", "d", "name"):
            expr = None
            for condition, value in options:
                part = getattr(value, field)
                expr = (pl.when(condition) if expr is None else expr.when(condition)).then(part)
            parts.append(expr)
        return _Value(*parts)

    def present(self) -> pl.Expr:
        return self.s.is_not_null() | self.i.is_not_null() | self.d.is_not_null()

    def text(self) -> tuple[pl.Expr, pl.Expr]:
        """``dialect_values._text``: (text, whether Python must format it: a double)."""
        text = pl.when(self.s != "").then(self.s).otherwise(self.i.cast(pl.String))
        return text, self.d.is_not_null()

    def str(self) -> tuple[pl.Expr, pl.Expr]:
        """``str(value)`` of a present value ("" stays ""): (text, needs Python)."""
        return pl.coalesce(self.s, self.i.cast(pl.String)), self.d.is_not_null()

    def lowered(self, strip: bool) -> tuple[pl.Expr, pl.Expr]:
        """``str(value)[.strip()].lower()``; doubles and text beyond printable ASCII (whose
        white space and case Python and Polars may define differently) need Python."""
        text, bad = self.str()
        if strip:
            text = text.str.strip_chars(" ")
        non_ascii = ~self.s.str.contains(_ASCII)
        return text.str.to_lowercase(), bad | non_ascii.fill_null(False)

    def tokens(self) -> tuple[pl.Expr, pl.Expr]:
        """``token_count``: (count, needs Python: text, a double, a negative or huge count).
        Counts below 2**60 only, so sums of four never overflow Int64."""
        ok = (self.i >= 0) & (self.i < 2**60)
        bad = self.s.is_not_null() | self.d.is_not_null() | (self.i.is_not_null() & ~ok)
        return self.i, bad.fill_null(True)

    def cost(self) -> tuple[pl.Expr, pl.Expr]:
        """``cost_value``: (USD, needs Python: text, a negative or non-finite amount, an
        integer float() might round)."""
        amount = pl.coalesce(self.d, self.i.cast(pl.Float64))
        d_ok = self.d.is_finite() & (self.d >= 0)
        i_ok = (self.i >= 0) & (self.i < 2**53)
        bad = (
            self.s.is_not_null()
            | (self.d.is_not_null() & ~d_ok.fill_null(False))
            | (self.i.is_not_null() & ~i_ok.fill_null(False))
        )
        return amount, bad


def _slot_keys() -> dict[str, dict[tuple[str, ...], list[str]]]:
    """Per slot: the attribute names in rank order -> the dialects that rank them so."""
    by_slot: dict[str, dict[tuple[str, ...], list[str]]] = defaultdict(dict)
    for dialect in t.DIALECTS:
        ranked: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for key, (slot, rank, _) in t._INDEXES[dialect.name].items():
            ranked[slot].append((rank, key))
        for slot in _SLOTS:
            keys = tuple(key for _, key in sorted(ranked.get(slot, [])))
            by_slot[slot].setdefault(keys, []).append(dialect.name)
    return by_slot


_SLOT_KEYS = _slot_keys()


def slot_columns(a: _Attrs) -> list[pl.Expr]:
    """Every slot's value (``_collect``) as columns ``@<slot>|s/i/d`` (and ``|name`` for the
    cost): computed once, then read by ``call_columns`` (expressions referring to the choice
    would repeat it). Fields no attribute of the batch can fill stay null literals."""
    exprs = []
    for slot in _SLOTS:
        keys = {k for keys in _SLOT_KEYS[slot] for k in keys}
        value = _choose_slot(a, slot)
        fields = [f for f in "sid" if any(f"{k}|{f}" in a.names for k in keys)]
        if slot == t._COST_SLOT and fields:
            fields.append("name")
        for field in fields:
            exprs.append(getattr(value, field).alias(f"@{slot}|{field}"))
            a.slots.add(f"@{slot}|{field}")
    return exprs


_NULLS = {"s": pl.String(), "i": pl.Int64(), "d": pl.Float64(), "name": pl.String()}


def _slot(a: _Attrs, slot: str) -> _Value:
    """The slot's value, from ``slot_columns``."""
    return _Value(
        *(
            pl.col(f"@{slot}|{f}") if f"@{slot}|{f}" in a.slots else pl.lit(None, _NULLS[f])
            for f in ("s", "i", "d", "name")
        )
    )


def _choose_slot(a: _Attrs, slot: str) -> _Value:
    """``_collect``'s value for ``slot`` in each span's dialect (``dialect`` column)."""
    filled = slot not in _TOKEN_SLOTS  # token slots take "" too (an error to report)
    variants = list(_SLOT_KEYS[slot].items())
    if len(variants) == 1:
        return a.first(variants[0][0], filled=filled)
    options = [
        (pl.col("dialect").is_in(names), a.first(keys, filled=filled)) for keys, names in variants
    ]
    return _Value.choose(options)


def _dialect(a: _Attrs, scope_dialects: dict[str, str | None]) -> pl.Expr:
    """``detect_dialect``: by scope (``scope_dialects``, from ``_scope_dialect``), a scope's
    older variant by its markers, else the first dialect whose marker is present."""
    by_scope = pl.col("scope").replace_strict(scope_dialects, default=None, return_dtype=pl.String)
    expr = pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    for name, variant in t._VARIANTS.items():
        marked = pl.any_horizontal([a.present(m) for m in variant.markers])
        expr = expr.when((by_scope == name) & marked).then(pl.lit(variant.name))
    expr = expr.when(by_scope.is_not_null()).then(by_scope)
    not_priced = ~priced(a)
    for dialect in t.DIALECTS:
        if dialect.markers:
            marked = pl.any_horizontal(
                [
                    a.present(m) & (not_priced | _reported_from(a, m))
                    if m in t.PRICED_OVER
                    else a.present(m)
                    for m in dialect.markers
                ]
            )
            expr = expr.when(marked).then(pl.lit(dialect.name))
    return expr.otherwise(pl.lit(t.SEMCONV.name))


def priced(a: _Attrs) -> pl.Expr:
    """Whether llmtrace's live processor priced the span (``dialects._priced_dialect``): its
    ``PRICED_OVER`` attributes are its own, its reported cost is ``REPORTED_COST``."""
    return a.equals(t.PRICE_STATUS, t.PRICED)


def _reported_from(a: _Attrs, attribute: str) -> pl.Expr:
    """``dialects.reported_from`` of the span's ``REPORTED_COST_SOURCE`` (text only)."""
    source = a.s(t.REPORTED_COST_SOURCE)
    return ((source == attribute) | source.str.starts_with(attribute + ".")).fill_null(False)


def _is_llm(a: _Attrs) -> tuple[pl.Expr, pl.Expr]:
    """``is_llm_span``: (whether it is, needs Python)."""
    observation = a.value(_OBSERVATION_TYPE)
    lowered, observation_bad = observation.lowered(strip=False)
    usage = [a.present(k) for k in sorted(t.USAGE_ATTRIBUTES)]
    is_llm = (
        pl.when(a.is_in(_OPERATION, t.NON_INFERENCE_OPERATIONS))
        .then(False)
        .when(a.present(_OPENINFERENCE_KIND))
        .then(a.is_in(_OPENINFERENCE_KIND, ("LLM", "EMBEDDING")))
        .when(a.present(_OBSERVATION_TYPE))
        .then(lowered.is_in(["generation", "embedding"]).fill_null(False))
        .when(a.is_in(_OPERATION, t.INFERENCE_OPERATIONS))
        .then(True)
        .when(pl.any_horizontal([a.present(m) for m in t.AGGREGATE_MARKERS]))
        .then(False)
        .when(a.present("llm.request.type"))
        .then(True)
        .otherwise(pl.any_horizontal(usage) if usage else pl.lit(False))
    )
    bad = (
        ~a.is_in(_OPERATION, t.NON_INFERENCE_OPERATIONS)
        & ~a.present(_OPENINFERENCE_KIND)
        & a.present(_OBSERVATION_TYPE)
        & observation_bad
    )
    return is_llm, bad


def tree_columns(a: _Attrs) -> list[pl.Expr]:
    """Every span's tree fields (``_Collector.add``): ``action``, ``agent``, ``tool``,
    ``tool_end``, ``_llm`` and ``_tree_py`` (needs the per-span path)."""
    operation = a.value(_OPERATION)
    agent_text, agent_bad = a.first(t.AGENT_NAME_ATTRIBUTES).text()
    agent_span = a.is_in(_OPERATION, t.AGENT_OPERATIONS) | ~operation.present()
    is_tool = a.equals(_OPERATION, "execute_tool")
    for name, value in t.TOOL_SPAN_MARKERS:
        is_tool = is_tool | a.equals(name, value)
    tool_text, tool_bad = a.first(t.TOOL_NAME_ATTRIBUTES).text()
    entity_text, entity_bad = a.value(_ENTITY_NAME).text()
    tool = pl.when(is_tool).then(pl.coalesce(tool_text, entity_text))
    action, action_bad = a.value("llmtrace.action").str()
    step = tool.is_not_null() & (a.present(_TOOL_ARGUMENTS) | a.present(_TOOL_RESULT))
    is_llm, llm_bad = _is_llm(a)
    bad = (
        (agent_span & agent_bad)
        | (is_tool & (tool_bad | (tool_text.is_null() & entity_bad)))
        | action_bad
        | step
        | llm_bad
    )
    return [
        action.alias("action"),
        pl.when(agent_span).then(agent_text).alias("agent"),
        tool.alias("tool"),
        pl.when(tool.is_not_null()).then(pl.col("end_ns")).alias("tool_end"),
        is_llm.alias("_llm"),
        bad.fill_null(True).alias("_tree_py"),
    ]


def _operation(a: _Attrs) -> tuple[pl.Expr, pl.Expr]:
    """``dialects._operation``: (operation, needs Python)."""
    values, bads = [], []
    for name, translate in t.OPERATION_SOURCES:
        value = a.value(name)
        filled = a.filled(name)
        if translate:
            lowered, bad = value.lowered(strip=False)
            text, _ = value.str()
            out = pl.when(text.is_in(list(translate))).then(
                text.replace_strict(dict(translate), default=None, return_dtype=pl.String)
            )
            out = out.otherwise(lowered)
            # a translated value is read as it is; only a lowered one needs ASCII
            bad = pl.when(text.is_in(list(translate))).then(value.d.is_not_null()).otherwise(bad)
        else:
            out, bad = value.str()
        values.append(pl.when(filled).then(out))
        bads.append(pl.when(filled).then(bad))
    return pl.coalesce(values), pl.coalesce(bads).fill_null(False)


def _usage(a: _Attrs, provider: pl.Expr) -> tuple[list[pl.Expr], pl.Expr]:
    """Inclusive token counts in ``_TOKEN_KEYS`` order (``_usage_values`` without the JSON
    sources, which send the span to Python): (expressions, needs Python)."""
    counts, bads = {}, []
    for key, slot in t._TOKEN_SLOT.items():
        count, bad = _slot(a, slot).tokens()
        if key != "total":  # Langfuse's JSON counts replace the attributes' (tokens.update)
            count = pl.coalesce(pl.col(f"_ju_{key}"), count)
        counts[key] = count
        bads.append(bad)
    inp, out = counts["input"], counts["output"]
    reasoning, total = counts["reasoning"], counts["total"]
    cache = counts["cache_read"].fill_null(0) + counts["cache_write"].fill_null(0)
    exclusive_input = pl.lit(False)
    for dialect in t.DIALECTS:
        if dialect.exclusive_input_providers:
            exclusive_input = exclusive_input | (
                (pl.col("dialect") == dialect.name)
                & provider.is_in(sorted(dialect.exclusive_input_providers)).fill_null(False)
            )
    add_cache = inp.is_not_null() & (cache != 0) & (exclusive_input | (cache > inp))
    exclusive_output = (reasoning > out) | (
        total.is_not_null() & inp.is_not_null() & (total == inp + out + reasoning)
    )
    add_reasoning = (
        out.is_not_null() & reasoning.is_not_null() & (reasoning != 0) & exclusive_output
    )
    fields = {
        "input": pl.when(add_cache.fill_null(False)).then(inp + cache).otherwise(inp),
        "output": pl.when(add_reasoning.fill_null(False)).then(out + reasoning).otherwise(out),
        "cache_read": counts["cache_read"],
        "cache_write": counts["cache_write"],
        "cache_write_1h": counts["cache_write_1h"],
        "reasoning": reasoning,
    }
    exprs = [fields[key].alias(t.TOKEN_RECORD_FIELD[key]) for key in t._TOKEN_KEYS]
    return exprs, pl.any_horizontal(bads)


def _service_tier(a: _Attrs) -> tuple[pl.Expr, pl.Expr]:
    """``_service_tier`` (the Langfuse model-parameters case goes to Python whole)."""
    value = _slot(a, "service_tier")
    lowered, bad = value.lowered(strip=True)
    tier = pl.when(value.present() & (lowered != "")).then(
        lowered.replace_strict(t.SERVICE_TIER_VALUES, default=lowered, return_dtype=pl.String)
    )
    return tier, bad


def call_columns(a: _Attrs) -> list[pl.Expr]:
    """``map_span_row``'s fields, except content fingerprints and ``prompt`` (added after the
    content of the spans that carry it is fingerprinted), and ``_call_py`` (needs Python).
    Reads ``dialect`` (``dialect_column``) and ``_res_service`` / ``_res_environment`` (the
    resource's own value, when it has a truthy one, as text)."""
    provider_value = _slot(a, "provider")
    provider_lowered, provider_bad = provider_value.lowered(strip=True)
    provider = pl.when(provider_value.present()).then(
        provider_lowered.replace_strict(
            t.PROVIDER_ALIASES, default=provider_lowered, return_dtype=pl.String
        )
    )
    texts, bads = {}, [provider_bad]
    for slot in (
        "response_id",
        "request_model",
        "response_model",
        "prompt_name",
        "prompt_version",
        "action",
        "conversation_id",
        "user_id",
        "reasoning_effort",
        "service",
        "environment",
    ):
        texts[slot], bad = _slot(a, slot).text()
        bads.append(bad)
    error_type, error_bad = a.value("error.type").text()
    agent, agent_bad = a.value(t.AGENT_ATTRIBUTE).text()
    tool, tool_bad = a.value(t.TOOL_ATTRIBUTE).text()
    operation, operation_bad = _operation(a)
    usage, usage_bad = _usage(a, provider)
    cost_value = _slot(a, t._COST_SLOT)
    cost, cost_bad = cost_value.cost()
    json_cost = pl.col("_jc_has").fill_null(False)
    cost_bad = ~json_cost & cost_bad  # a cost in Langfuse's JSON is read first
    # a span llmtrace priced: its reported cost is the one it kept (``_priced_reported_cost``)
    is_priced = priced(a)
    kept = a.value(t.REPORTED_COST)
    kept_cost, kept_bad = kept.cost()
    kept_source, kept_source_bad = a.value(t.REPORTED_COST_SOURCE).text()
    kept_present = kept.present()
    cost_bad = (
        pl.when(is_priced).then(kept_present & (kept_bad | kept_source_bad)).otherwise(cost_bad)
    )
    tier, tier_bad = _service_tier(a)
    model = pl.coalesce(texts["response_model"], texts["request_model"])
    whole = pl.any_horizontal([a.present(k) for k in _WHOLE_CALL_KEYS])
    elapsed = pl.lit(False)
    for dialect in t.DIALECTS:
        if dialect.elapsed:
            elapsed = elapsed | (
                (pl.col("dialect") == dialect.name)
                & (pl.col("start_ns") == pl.col("end_ns"))
                & a.present(dialect.elapsed)
            )
    py = (
        pl.any_horizontal(bads)
        | error_bad
        | agent_bad
        | tool_bad
        | operation_bad
        | usage_bad
        | cost_bad
        | tier_bad
        | whole
        | elapsed.fill_null(False)
        | pl.col("start_ns").is_null()  # rejected by the collector: its problem text
    )
    return [
        texts["response_id"].alias("response_id"),
        pl.coalesce(pl.col("_res_service"), texts["service"]).alias("service"),
        pl.coalesce(pl.col("_res_environment"), texts["environment"]).alias("environment"),
        provider.alias("provider"),
        model.alias("model"),
        pl.coalesce(texts["request_model"], model).alias("request_model"),
        operation.alias("operation"),
        texts["prompt_name"].alias("prompt_name"),
        texts["prompt_version"].alias("prompt_version"),
        texts["action"].alias("action"),
        texts["conversation_id"].alias("conversation_id"),
        texts["user_id"].alias("user_id"),
        texts["reasoning_effort"].alias("reasoning_effort"),
        tier.alias("service_tier"),
        agent.alias("agent"),
        tool.alias("tool"),
        (
            (pl.col("status_code") == t.STATUS_ERROR)
            | error_type.is_not_null()
            | a.equals(_LEVEL, "ERROR")
        ).alias("is_error"),
        error_type.alias("error_type"),
        *usage,
        pl.when(is_priced)
        .then(pl.when(kept_present).then(kept_cost))
        .when(json_cost)
        .then(pl.col("_jc_cost"))
        .when(cost_value.present())
        .then(cost)
        .alias("reported_cost"),
        pl.when(is_priced)
        .then(pl.when(kept_present).then(kept_source))
        .when(json_cost)
        .then(pl.col("_jc_source"))
        .when(cost_value.present())
        .then(cost_value.name)
        .alias("reported_cost_source"),
        py.fill_null(True).alias("_call_py"),
    ]


def dialect_column(a: _Attrs, scope_dialects: dict[str, str | None]) -> pl.Expr:
    return _dialect(a, scope_dialects).alias("dialect")


def prompt_key() -> pl.Expr:
    """``dialects._prompt_key``: name@version, the name, or fp:template."""
    name, version = pl.col("prompt_name"), pl.col("prompt_version")
    template = pl.col("template_fingerprint")
    return (
        pl.when(name.is_not_null())
        .then(
            pl.when(version.is_not_null()).then(pl.format("{}@{}", name, version)).otherwise(name)
        )
        .when(template.is_not_null())
        .then(pl.format("fp:{}", template))
        .alias("prompt")
    )


def attrs_for(names: Iterable[str]) -> _Attrs:
    return _Attrs(names)
