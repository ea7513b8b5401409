"""What the live side does with one LLM span once it is its turn: the call record, its price,
the exported copy with cost attributes, its action's running cost, and twins held back.

Why a module of its own: ``CostSpanProcessor`` (``llmtrace.otel.processor``) is the span
processor the SDK calls and the scheduling between the app's threads and the worker (queue,
batches, inline work, flushes); this is the per-span work it schedules, the same whichever thread
runs it. ``SpanWork`` is a mixin of that class: its methods use the processor's state, set up in
``CostSpanProcessor.__init__`` and annotated below.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from llmtrace import dialects, twins
from llmtrace.fingerprint import INPUT_MARKERS, PREFIX_HASHES_ATTRIBUTE
from llmtrace.otel import _guard
from llmtrace.otel.calls import CallMapper, call_row, hand_over
from llmtrace.otel.hook import prompt_attributes, prompt_parts
from llmtrace.otel.jobs import FROM_HELD_TWIN, Action, Job, Parked
from llmtrace.otel.pricer import PRICE_FIELDS, LazyPriceBook
from llmtrace.otel.spans import (
    ACTION,
    AGENT_ATTRIBUTE,
    PRICE_STATUS,
    PRICED_SPAN_ID,
    PRICED_TRACE_ID,
    TOKEN_FIELDS,
    TOOL_ATTRIBUTE,
    add_reported_cost,
    cost_attributes,
    cost_attributes_of,
    plain_attributes,
    span_mapping,
    with_attributes,
)

_INPUT_MARKERS = frozenset(INPUT_MARKERS)  # a span carrying its input: fingerprinted from that


def _has_usage(call: Mapping[str, Any]) -> bool:
    return call.get("input_tokens") is not None or call.get("output_tokens") is not None


def _adopt_usage(call: dict[str, Any], child: Mapping[str, Any]) -> None:
    """Fill a call without usage from its deferring child's view of the same call."""
    for field in TOKEN_FIELDS:
        call[field] = child.get(field)
    for field in ("model", "request_model", "provider", "response_id"):
        if call.get(field) is None:
            call[field] = child.get(field)


class SpanWork:
    """The per-span steps of ``CostSpanProcessor`` (see the module docstring)."""

    # the processor's state these steps read and write (set in CostSpanProcessor.__init__)
    _to_call: Any
    _pricer: Any
    _keep_content: bool
    _call_rows: bool  # a downstream exporter takes rows (``call_row``); never with content
    _max_tracked: int
    _twin_wait: float
    _child_calls: dict[int, dict[str, Any]]
    _actions: dict[int, Action]
    _prompts: dict[int, tuple[Any, Any, Any]]
    _recent: twins.RecentCalls
    _parked: dict[int, Parked]
    _calls_done: deque[tuple[Mapping[str, Any], str]]
    _actions_done: deque[tuple[Mapping[str, Any], float]]
    _on_call: Callable[[Mapping[str, Any], str], None] | None
    _on_calls: Any
    _on_action: Callable[[Mapping[str, Any], float], None] | None
    _on_actions: Any
    calls_priced: int
    calls_deferred: int
    actions_recorded: int
    actions_unpriced: int
    actions_dropped: int
    _forward: Callable[[ReadableSpan], None]  # hands a span to the downstream processors

    def _process(self, job: Job) -> None:
        try:
            out = self._enrich(job)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.on_end", exc)
            out = job.span
        if out is not None:  # None: held back until its twin arrives (``_park``)
            self._forward(out)
        if job.is_root:
            self._finish_action(job.span_id)

    # -- actions (worker) ------------------------------------------------------------------------

    def _add_to_action(self, root_id: int, call: Mapping[str, Any]) -> None:
        actions = self._actions
        action = actions.get(root_id)
        if action is None:
            if len(actions) >= self._max_tracked:  # roots that never end: forget the oldest
                actions.pop(next(iter(actions)))
                self.actions_dropped += 1
            action = actions[root_id] = Action(call)
        total = call.get("total_cost")
        if total is None:
            action.unpriced += 1
        else:
            action.cost += total
            action.calls += 1

    def _finish_action(self, root_id: int) -> None:
        action = self._actions.pop(root_id, None)
        if action is None:
            return
        if action.unpriced:
            self.actions_unpriced += 1
            return
        self.actions_recorded += 1
        if self._on_actions is not None:
            self._actions_done.append((action.call, action.cost))
        elif self._on_action is not None:
            try:
                self._on_action(action.call, action.cost)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("processor.on_action", exc)

    def _enrich(self, job: Job) -> ReadableSpan | None:
        span = job.span
        # one private copy of the attributes: read by span_to_call, then extended into the
        # exported copy's (the call record keeps no reference to the dict itself)
        attrs = plain_attributes(span)
        adopted = self._child_calls.pop(job.span_id, None)
        if adopted is None and not dialects.is_llm_span(attrs):
            self._prompts.pop(job.span_id, None)
            return span
        extra: dict[str, Any] = {}
        prompt = self._prompts.pop(job.span_id, None)
        prints = None  # the hook input's fingerprint fields, when they go to the record directly
        held: dict[str, Any] = {}  # ... and their attributes, added after span_to_call
        if prompt is not None and PREFIX_HASHES_ATTRIBUTE not in attrs:
            both = None
            if not self._keep_content and _INPUT_MARKERS.isdisjoint(attrs):
                # span_to_call would read these attributes back (hex strings -> ints): the
                # record takes the fields as computed instead, the same values
                both = prompt_parts(prompt)
            if both is not None:
                prints, held = both  # the fields, and prints_attributes of them
            else:
                extra.update(prompt_attributes(prompt))
        if job.root_name and ACTION not in attrs:
            extra[ACTION] = job.root_name
        if job.agent is not None and AGENT_ATTRIBUTE not in attrs:
            extra[AGENT_ATTRIBUTE] = job.agent
        if job.tool is not None and TOOL_ATTRIBUTE not in attrs:
            extra[TOOL_ATTRIBUTE] = job.tool
        if extra:
            attrs.update(extra)
        to_call = self._to_call
        try:
            if type(to_call) is CallMapper:  # a known shape's record without the mapping
                call = to_call.from_span(span, attrs)
            else:
                call = to_call(span_mapping(span, attrs))
        except dialects.SpanError as exc:
            _guard.swallow("processor.span_to_call", exc)
            if job.root_id is not None and job.ancestor_id is None:
                self._add_to_action(job.root_id, {})  # a call of unknown cost
            return with_attributes(span, {**extra, **held, PRICE_STATUS: "invalid_usage"}, attrs)
        if prints is not None:
            extra.update(held)
            call.update(prints)
            if not call.get("prompt_name") and prints["template_fingerprint"]:
                call["prompt"] = f"fp:{prints['template_fingerprint']}"  # as map_span keys it
        if job.ancestor_id is not None:
            if job.ancestor_id not in self._child_calls and _has_usage(call):
                self._child_calls[job.ancestor_id] = call
            extra[PRICED_SPAN_ID] = f"{job.ancestor_id:016x}"
            self.calls_deferred += 1
            return with_attributes(span, extra, attrs)
        if adopted is not None and not _has_usage(call):
            _adopt_usage(call, adopted)
        if adopted is not None and call.get("service_tier") is None:
            call["service_tier"] = adopted.get("service_tier")  # often only the SDK's span says
        scope = span.instrumentation_scope
        scope_name = scope.name if scope is not None else None
        call[twins.EMITTER] = twins.emitter(scope_name, span.name)
        twin = self._recent.find(call)
        if twin is not None:  # a twin in another trace (or not in progress) was priced already
            extra[PRICED_SPAN_ID] = str(twin.get("span_id"))
            extra[PRICED_TRACE_ID] = str(twin.get("trace_id"))
            self.calls_deferred += 1
            return with_attributes(span, extra, attrs)
        has_usage = _has_usage(call)  # the tokens do not change from here on
        if not has_usage and not call.get("is_error") and self._twin_wait > 0:
            self._park(job, span, call, extra)
            return None
        held = self._take_parked(call) if has_usage and self._parked else None
        if held is not None:
            for field in FROM_HELD_TWIN:
                if call.get(field) is None:
                    call[field] = held.call.get(field)
        # the store exporter's row from this record (``call_row``), unless something below
        # or before made the record differ from what the exported span maps to
        hand_row = self._call_rows and adopted is None and held is None
        out = self._price(job, span, call, extra, attrs, scope_name or "", hand_row)
        self._recent.remember(call)
        if held is not None:
            self.calls_deferred += 1
            self._forward(
                with_attributes(
                    held.span,
                    {
                        **held.extra,
                        PRICED_SPAN_ID: str(call.get("span_id")),
                        PRICED_TRACE_ID: str(call.get("trace_id")),
                    },
                )
            )
        return out

    def _price(
        self,
        job: Job,
        span: ReadableSpan,
        call: dict[str, Any],
        extra: dict[str, Any],
        attrs: dict[str, Any] | None = None,
        scope_name: str | None = None,
        hand_row: bool = False,
    ) -> ReadableSpan:
        """Price one call, count it (metrics, its action) and return the span to forward
        (``attrs``: the span's attributes already copied, as ``with_attributes`` takes them;
        ``scope_name``: its instrumentation scope's name, "" for none, when already read;
        ``hand_row``: give the forwarded copy the store exporter's row, ``call_row``)."""
        row = None
        if hand_row and attrs is not None and scope_name is not None:
            row = call_row(span, call, attrs)  # before pricing: a pricer may add any field
        if call.get("start_time") is None:
            call["start_time"] = datetime.now(UTC)
        pricer = self._pricer
        if type(pricer) is LazyPriceBook:  # the price as a tuple: no dict of costs read back
            values = pricer.values(call)
            extra.update(cost_attributes_of(values))
            call.update(zip(PRICE_FIELDS, values, strict=True))
        else:
            costs = pricer(call)
            extra.update(cost_attributes(costs))
            call.update(costs)
        add_reported_cost(extra, call)  # the source's own cost, which those replace
        self.calls_priced += 1
        if job.root_id is not None:
            self._add_to_action(job.root_id, call)
        if scope_name is None and (self._on_calls is not None or self._on_call is not None):
            scope = span.instrumentation_scope
            scope_name = scope.name if scope is not None else ""
        if self._on_calls is not None:
            self._calls_done.append((call, scope_name))
        elif self._on_call is not None:
            try:
                self._on_call(call, scope_name)
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("processor.on_call", exc)
        out = with_attributes(span, extra, attrs)
        if row is not None:
            hand_over(out, row, scope_name)
        return out

    # -- twins held back (worker) ---------------------------------------------------------------

    def _park(
        self, job: Job, span: ReadableSpan, call: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """Hold a span without usage (and without error) for up to ``twin_wait_millis``: a
        twin that carries the call's usage (Logfire's streaming log span, the SDK's span of a
        stream an instrumentation reports without usage) may still come. Bounded: when full,
        the oldest held span is released first."""
        if len(self._parked) >= self._max_tracked:
            self._release_one(next(iter(self._parked)))
        deadline = time.monotonic() + self._twin_wait
        self._parked[job.span_id] = Parked(deadline, job, span, call, extra)

    def _take_parked(self, call: Mapping[str, Any]) -> Parked | None:
        """The nearest held span that is a twin of ``call``, removed from the held ones."""
        best, best_distance = None, None
        for span_id, held in list(self._parked.items()):  # an app thread may add (inline work)
            if twins.are_twins(call, held.call):
                gap = twins.distance(call, held.call)
                if best_distance is None or gap < best_distance:
                    best, best_distance = span_id, gap
        return None if best is None else self._parked.pop(best, None)

    def _release_one(self, span_id: int) -> None:
        held = self._parked.pop(span_id, None)
        if held is None:
            return
        try:
            job = held.job
            if job.root_id is not None and job.root_id not in self._actions:
                job.root_id = None  # its action closed meanwhile: counted per call only
            out = self._price(job, held.span, held.call, held.extra)
        except Exception as exc:  # noqa: BLE001
            _guard.swallow("processor.release", exc)
            out = held.span
        self._forward(out)

    def _release_parked(self, *, force: bool) -> None:
        """Price and forward held spans whose wait is over (all of them when ``force``)."""
        if not self._parked:
            return
        now = time.monotonic()
        for span_id in [s for s, h in list(self._parked.items()) if force or h.deadline <= now]:
            self._release_one(span_id)

    def _park_timeout(self) -> float | None:
        """How long the idle worker may sleep: until the first held span's wait is over."""
        deadlines = [held.deadline for held in list(self._parked.values())]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())
