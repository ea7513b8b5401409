"""Cost and token metrics, recorded once per priced LLM call through the app's MeterProvider.

Instruments (names chosen so Prometheus, via the Collector's or the SDK exporter's
normalisation, gets what Grafana's GenAI dashboards already query):

* ``gen_ai.usage.cost`` histogram, unit ``USD``, small explicit buckets (per-call USD is tiny;
  the SDK default buckets up to 10,000 would put every call in the first one) ->
  ``gen_ai_usage_cost_USD_bucket/_sum/_count``.
* ``llmtrace.cost`` (observable) counter, unit ``USD``, summed per non-zero cost component
  (``llmtrace.cost.component`` = input, cache_read, cache_write, output, reasoning, request) ->
  ``llmtrace_cost_USD_total``. The components are disjoint, so summing them gives the total.
* ``gen_ai.client.token.usage`` histogram, unit ``{token}``, with ``gen_ai.token.type`` in
  input, output, cache_read, cache_write, reasoning. Counts are inclusive as in the semantic
  conventions (input includes the cache types, output includes reasoning), so never sum across
  types.
* ``llmtrace.action.cost`` histogram, unit ``USD``, the same small buckets: one value per
  completed action instance (a local root span and everything under it, see
  ``CostSpanProcessor``), the sum of its LLM calls' costs -> ``llmtrace_action_cost_USD_*``.
  What a user pays per checkout or per answer is the sum over the calls that served it, and its
  p50/p95 cannot be had from per-call costs. Labels: ``service.name``, ``llmtrace.action`` and
  ``deployment.environment.name`` only (an action may call several models and prompts), bounded
  like the others.

**Double counting, decided:** the official GenAI instrumentations (and OpenLIT, OpenLLMetry)
already record ``gen_ai.client.token.usage`` with types input and output for their spans. For a
call priced from such a span llmtrace records only cache_read, cache_write and reasoning, which
nobody else records; input and output are recorded by llmtrace only for spans from sources that
record no metrics (the ``anthropic`` SDK's own spans, OpenInference, unknown scopes). Each call
therefore appears once per token type. The cost instruments are llmtrace's alone.

Labels: ``gen_ai.request.model``, ``gen_ai.provider.name``, ``gen_ai.operation.name``,
``service.name``, ``llmtrace.prompt``, ``llmtrace.action``, ``gen_ai.agent.name`` (the innermost
agent of the call: its ``invoke_agent`` ancestor; configurable). Cardinality is
bounded per label: an allow-list keeps only the listed values, otherwise the first
``metric_max_values`` distinct values are kept; every other value is folded into ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from llmtrace.otel import _guard
from llmtrace.otel.histograms import FastHistogram
from llmtrace.otel.settings import METRIC_LABELS, LiveSettings

COST_BUCKETS = (0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
# cost component (call-record field) -> llmtrace.cost.component value
COMPONENTS = {
    "input_cost": "input",
    "cache_read_cost": "cache_read",
    "cache_write_cost": "cache_write",
    "output_cost": "output",
    "reasoning_cost": "reasoning",
    "request_cost": "request",
}
# token type -> call-record field
TOKEN_TYPES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
    "reasoning": "reasoning_tokens",
}
# Instrumentation scopes whose own metrics already carry input/output token usage.
_SCOPES_WITH_TOKEN_METRICS = ("opentelemetry.instrumentation.", "openlit")
OTHER = "other"
# The labels an action's cost keeps (of those configured): it has no single model or prompt.
ACTION_LABELS = ("service", "action", "agent")
ENVIRONMENT = "deployment.environment.name"
# label -> call-record field, where they differ: the model label is the model *asked for*, as in
# the official instrumentations' gen_ai.request.model (dated response ids would split series).
_LABEL_FIELDS = {"model": "request_model"}
# distinct label-value sets whose metric attributes are kept built (bounded: labels are)
_MAX_LABEL_SETS = 4096


class LabelFolder:
    """Bounds one label's values: allow-listed ones, or the first ``limit`` seen; else ``other``."""

    def __init__(self, allow: frozenset[str] | None, limit: int) -> None:
        self.allow = allow
        self.limit = limit
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if self.allow is not None:
            return value if value in self.allow else OTHER
        if value in self.seen:
            return value
        with self._lock:
            if len(self.seen) < self.limit:
                self.seen.add(value)
                return value
        return OTHER


class CostMetrics:
    """The instruments above, with bounded labels; ``record`` is called once per priced call."""

    def __init__(self, meter_provider: MeterProvider, settings: LiveSettings) -> None:
        from llmtrace import __version__

        meter = meter_provider.get_meter("llmtrace", __version__)
        self.cost = meter.create_histogram(
            "gen_ai.usage.cost",
            unit="USD",
            description="Cost of each LLM call in USD, priced by llmtrace",
            explicit_bucket_boundaries_advisory=COST_BUCKETS,
        )
        # Summed here and observed at collection time: an SDK counter add costs ~13 us per
        # component per call on the worker, a dict update well under 1 us.
        self._component_sums: dict[tuple[tuple[str, str], ...], float] = {}
        self._sums_lock = threading.Lock()
        meter.create_observable_counter(
            "llmtrace.cost",
            callbacks=[self._observe_components],
            unit="USD",
            description="Cost of LLM calls in USD by disjoint component (llmtrace.cost.component)",
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens per LLM call by gen_ai.token.type (inclusive counts)",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        meter.create_observable_counter(
            "llmtrace.errors",
            callbacks=[_observe_errors],
            unit="{error}",
            description="Errors llmtrace swallowed inside the app (see llmtrace.otel logs)",
        )
        self.action_cost = meter.create_histogram(
            "llmtrace.action.cost",
            unit="USD",
            description="Cost of each action instance (a local root span) in USD: its calls' sum",
            explicit_bucket_boundaries_advisory=COST_BUCKETS,
        )
        self._labels = [
            (name, METRIC_LABELS[name], self._folder(settings, name))
            for name in settings.metric_labels
        ]
        self._label_fields = tuple(_LABEL_FIELDS.get(name, name) for name, _, _ in self._labels)
        self._label_sets: dict[tuple[Any, ...], Any] = {}
        self._token_types = tuple(TOKEN_TYPES.items())
        self._action_labels = [entry for entry in self._labels if entry[0] in ACTION_LABELS] + [
            ("environment", ENVIRONMENT, self._folder(settings, "environment"))
        ]
        self._action_fields = tuple(
            _LABEL_FIELDS.get(name, name) for name, _, _ in self._action_labels
        )
        self._action_sets: dict[tuple[Any, ...], tuple[dict[str, str], Any]] = {}
        # the same histograms, recorded without the SDK's per-record attribute work
        # (llmtrace.otel.histograms: identical points, ~6x less CPU per record)
        self._cost = FastHistogram(self.cost)
        self._tokens = FastHistogram(self.tokens)
        self._action_cost = FastHistogram(self.action_cost)

    @staticmethod
    def _folder(settings: LiveSettings, name: str) -> LabelFolder:
        allow = settings.metric_allow.get(name)
        return LabelFolder(allow, settings.metric_max_values)

    def attributes(self, call: Mapping[str, Any]) -> dict[str, str]:
        """Bounded metric attributes for a call record (missing values are left out)."""
        return _bounded(call, self._labels)

    def record_action(self, call: Mapping[str, Any], cost: float) -> None:
        """Record one completed action instance: ``cost`` is the sum of its calls' costs and
        ``call`` one of them (its service, environment and action are the action's)."""
        self._action_cost.record(float(cost), *self._action_entry(call))

    def _action_entry(self, call: Mapping[str, Any]) -> tuple[dict[str, str], Any]:
        """An action's metric attributes and their key, built once per distinct label set."""
        raw = _values(call, self._action_fields)
        try:
            entry = self._action_sets.get(raw)
        except TypeError:  # an unhashable label value: built each time
            raw, entry = None, None
        if entry is None:
            attrs = _bounded(call, self._action_labels)
            entry = (attrs, tuple(attrs.items()))
            if raw is not None:
                if len(self._action_sets) >= _MAX_LABEL_SETS:
                    self._action_sets.clear()
                self._action_sets[raw] = entry
        return entry

    def record(self, call: Mapping[str, Any], scope: str) -> None:
        """Record one priced call: cost histogram, cost components and token usage."""
        attrs, keys, by_type, base = self._label_set(call)
        total = call.get("total_cost")
        if total is not None:
            self._cost.record(float(total), attrs, base)
            sums = self._component_sums
            with self._sums_lock:
                for field in COMPONENTS:
                    value = call.get(field)
                    if value:
                        key = keys[field]
                        sums[key] = sums.get(key, 0.0) + float(value)
        skip_io = scope.startswith(_SCOPES_WITH_TOKEN_METRICS)
        for token_type, field in TOKEN_TYPES.items():
            if skip_io and token_type in ("input", "output"):
                continue
            count = call.get(field)
            if count:
                self._tokens.record(int(count), by_type[token_type], (base, token_type))

    def record_many(self, calls: Iterable[tuple[Mapping[str, Any], str]]) -> None:
        """``record`` for each (priced call, instrumentation scope), the same points and sums.

        Why: the live worker records a batch of calls at once. The values are grouped by
        attribute set, in the calls' order, and each histogram takes a set's values in one go
        (``FastHistogram.record_many``), the component sums take their lock once and each
        sum its values in the calls' order (the same additions, so the same floats). Groups
        are found by the label set's identity (``_label_set`` gives one entry per distinct
        set), not by hashing its attribute tuples, which Python does not cache (a tuple of
        seven pairs, hashed per component and per token type of every call, was half of
        this)."""
        # One group per attribute set (per ``base``: two entries may fold to the same set),
        # found by the entry's id after its first call in the batch. The batch's values are
        # keyed by the group's id and, like the keys they stand for, kept in first-seen order
        # (the SDK files attribute sets, and the sums their keys, in the order they come).
        by_entry: dict[int, tuple[Any, ...]] = {}
        by_base: dict[tuple[tuple[str, str], ...], tuple[Any, ...]] = {}
        held = []  # the entries: kept alive, so no id is reused during the batch
        costs: dict[int, tuple[Any, list[float]]] = {}
        parts: dict[tuple[int, str], tuple[Any, list[float]]] = {}
        tokens: dict[tuple[int, str], tuple[Any, list[int]]] = {}
        skip = ("input", "output")
        token_types = self._token_types
        for call, scope in calls:
            try:
                entry = self._label_set(call)
                group = by_entry.get(id(entry))
                if group is None:
                    group = by_base.setdefault(entry[3], entry)
                    by_entry[id(entry)] = group
                    held.append(entry)
                ident = id(group)
                total = call.get("total_cost")
                if total is not None:
                    value = float(total)
                    for field in COMPONENTS:
                        part = call.get(field)
                        if part:
                            slot = parts.get((ident, field))
                            if slot is None:
                                slot = parts[ident, field] = (group[1][field], [])
                            slot[1].append(float(part))
                    values = costs.get(ident)
                    if values is None:
                        values = costs[ident] = (group, [])
                    values[1].append(value)
                skip_io = scope.startswith(_SCOPES_WITH_TOKEN_METRICS)
                for token_type, field in token_types:
                    if skip_io and token_type in skip:
                        continue
                    count = call.get(field)
                    if count:
                        slot = tokens.get((ident, token_type))
                        if slot is None:
                            slot = tokens[ident, token_type] = (group, [])
                        slot[1].append(int(count))
            except Exception as exc:  # noqa: BLE001 - one bad call must not lose the batch
                _guard.swallow("metrics.record", exc)
        if parts:
            sums = self._component_sums
            with self._sums_lock:
                for key, values in parts.values():
                    total = sums.get(key, 0.0)
                    for value in values:  # one at a time, in order: the same floats
                        total = total + value
                    sums[key] = total
        for group, values in costs.values():
            self._cost.record_many(values, group[0], group[3])
        for (_, token_type), (group, counts) in tokens.items():
            self._tokens.record_many(counts, group[2][token_type], (group[3], token_type))

    def record_actions(self, actions: Iterable[tuple[Mapping[str, Any], float]]) -> None:
        """``record_action`` for each (first call, cost) of completed actions, the same points."""
        groups: dict[Any, tuple[dict[str, str], list[float]]] = {}
        for call, cost in actions:
            try:
                attrs, key = self._action_entry(call)
                entry = groups.get(key)
                if entry is None:
                    entry = groups[key] = (attrs, [])
                entry[1].append(float(cost))
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("metrics.record_action", exc)
        for key, (attrs, values) in groups.items():
            self._action_cost.record_many(values, attrs, key)

    def _label_set(
        self, call: Mapping[str, Any]
    ) -> tuple[
        dict[str, str],
        dict[str, tuple[tuple[str, str], ...]],
        dict[str, dict[str, str]],
        tuple[tuple[str, str], ...],
    ]:
        """A call's bounded attributes, the component sums' key per cost field, one dict
        per token type and the attributes as a tuple (the set's key for ``FastHistogram``), built once per distinct set of label values (the SDK copies what it
        keeps, and these are never changed). A folder's answer for a value never changes
        (seen values stay seen; once full, a new value is ``other`` for good), so a cached
        answer is the answer ``attributes`` would give now."""
        raw = _values(call, self._label_fields)
        try:
            entry = self._label_sets.get(raw)
        except TypeError:  # an unhashable label value (a list): built each time
            raw, entry = None, None
        if entry is None:
            attrs = self.attributes(call)
            by_type = {t: {**attrs, "gen_ai.token.type": t} for t in TOKEN_TYPES}
            base = tuple(attrs.items())
            keys = {f: (*base, ("llmtrace.cost.component", c)) for f, c in COMPONENTS.items()}
            entry = (attrs, keys, by_type, base)
            if raw is not None:
                if len(self._label_sets) >= _MAX_LABEL_SETS:
                    self._label_sets.clear()
                self._label_sets[raw] = entry
        return entry

    def _observe_components(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            with self._sums_lock:
                items = list(self._component_sums.items())
            return [Observation(value, dict(key)) for key, value in items]
        except Exception as exc:  # noqa: BLE001 - never raise into the SDK's collection thread
            _guard.swallow("metrics:components", exc)
            return []


def _values(call: Mapping[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...]:
    """``tuple(call.get(field) for field in fields)``: one C call for a call record holding
    every field (the live worker's), the generator otherwise."""
    getter = _GETTERS.get(fields)
    if getter is None:
        getter = _GETTERS[fields] = itemgetter(*fields) if len(fields) > 1 else None
    if getter is not None and type(call) is dict:
        try:
            return getter(call)
        except KeyError:
            pass
    return tuple(call.get(field) for field in fields)


_GETTERS: dict[tuple[str, ...], Any] = {}  # the label field tuples of the CostMetrics made


def _bounded(call: Mapping[str, Any], labels: list[tuple[str, str, LabelFolder]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, key, fold in labels:
        value = call.get(_LABEL_FIELDS.get(name, name))
        if value is not None and value != "":
            out[key] = fold(str(value))
    return out


def _observe_errors(options: CallbackOptions) -> Iterable[Observation]:
    try:
        return [Observation(_guard.total_errors())]
    except Exception as exc:  # noqa: BLE001 - never raise into the SDK's collection thread
        _guard.swallow("metrics:errors", exc)
        return []
