"""The OTLP importer's per-span step as plain Python rows: no Polars.

Why a module of its own: the live store exporter turns each batch of spans into exactly the
rows the importer collects (``SpanRows.add``) and spools them to disk for a store reader to
settle (``llmtrace.spool``), so an app that exports to the store never imports Polars or
writes Parquet. The importer's ``_Collector`` (``llmtrace.importers.otlp``) is a ``SpanRows``
that adds the columnar lane and the Polars frames; both therefore build the same rows from
the same span, by construction.

The four lists, each a tuple per row in the order of its ``*_FIELDS`` names:

* ``calls`` (``CALL_ROW``): ``dialects.map_span_row`` plus the span's twin emitter;
* ``tree`` (``TREE_FIELDS``): one row per span, to resolve actions, agents and tool steps;
* ``roots`` (``ROOTS_FIELDS``): the trace and name of each span without a parent;
* ``evaluations`` (``EVALUATION_FIELDS``): one per ``gen_ai.evaluation.result`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmtrace import twins
from llmtrace.dialects import CALL_FIELDS, SpanError, agent_and_tool, is_llm_span, map_span_row
from llmtrace.fingerprint import step_fingerprint
from llmtrace.importers.otlp_spans import _VALUE_ERRORS, _Malformed

EVALUATION_EVENT = "gen_ai.evaluation.result"

CALL_ROW = (*CALL_FIELDS, twins.EMITTER)
"""The fields of one collected call (``SpanRows.calls``): ``map_span_row`` plus the emitter."""
TREE_FIELDS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "action",
    "agent",
    "tool",
    "tool_end",
    "tool_step",
)
ROOTS_FIELDS = ("trace_id", "_root_name")
EVALUATION_FIELDS = (
    "trace_id",
    "_holder",
    "_holder_parent",
    "response_id",
    "name",
    "value",
    "label",
)


class SpanRows:
    """Calls, the span tree, roots and evaluations of the spans added, as lists of tuples."""

    def __init__(self, keep_content: bool) -> None:
        self.keep_content = keep_content
        self.calls: list[tuple[Any, ...]] = []  # map_span_row + emitter (CALL_ROW)
        self.tree: list[tuple[Any, ...]] = []  # one row per span (TREE_FIELDS)
        self.roots: list[tuple[str, str]] = []
        self.evaluations: list[tuple[Any, ...]] = []
        self.spans = 0
        self.llm_spans = 0
        self.rejected = 0

    def add(self, span: dict[str, Any]) -> None:
        """Keep one parsed span: always in the tree, and as a call if it is an LLM span.

        A span rejected for its content (a bad token count) still links its children to its
        ancestors: the tree is only used to resolve actions and is never stored.
        """
        attrs = span["attributes"]
        self.add_tree_row(
            span["trace_id"],
            span["span_id"],
            span["parent_span_id"],
            span["name"],
            span["end_ns"],
            attrs,
        )
        events = span["events"]
        evaluations = (
            [_evaluation(span, e) for e in events if e.get("name") == EVALUATION_EVENT]
            if events
            else None
        )
        if is_llm_span(attrs, span["name"], span["scope"]):
            if span["start_ns"] is None:
                raise _Malformed("LLM span has no startTimeUnixNano")
            call = map_span_row(span, keep_content=self.keep_content)
            self.calls.append((*call, twins.emitter(span["scope"], span["name"])))
            self.llm_spans += 1
        if evaluations:
            self.evaluations.extend(evaluations)

    def add_tree_row(
        self,
        trace_id: str,
        span_id: str,
        parent: str | None,
        name: str | None,
        end_ns: int | None,
        attrs: Mapping[str, Any],
    ) -> None:
        """A span's tree row and, for a span without a parent, its root; then the failure of
        a span whose tree values cannot be read (raised once the row is whole, so the tree's
        lists stay aligned: the tree is only used to resolve actions and is never stored).

        ``add`` begins with it; the live store exporter calls it alone for a span that has no
        events and is not an LLM span (``is_llm_span`` said so), which is all ``add`` would
        keep of it. Why: most spans of an app (HTTP, database) are such spans, and building
        the whole importer mapping of each (ids, scope, times, status, resource, events) to
        keep these few values cost the exporter ~2 us a span.
        """
        action = attrs.get("llmtrace.action")
        failure: Exception | None = None
        try:
            action = None if action is None else str(action)
            agent, tool = agent_and_tool(attrs)
            step = _tool_step(tool, attrs) if tool is not None else None
        except (SpanError, *_VALUE_ERRORS) as exc:  # e.g. a list as the operation name
            action = agent = tool = step = None
            failure = exc
        self.tree.append(
            (
                trace_id,
                span_id,
                parent,
                action,
                agent,
                tool,
                end_ns if tool is not None else None,
                step,
            )
        )
        if parent is None:
            self.roots.append((trace_id, name))
        if failure is not None:
            raise failure


def _tool_step(tool: str, attrs: Mapping[str, Any]) -> str | None:
    """The step fingerprint of a tool run whose arguments or result were recorded (the opt-in
    ``gen_ai.tool.call.arguments`` / ``.result``): the call that reads it took this step."""
    arguments = attrs.get("gen_ai.tool.call.arguments")
    result = attrs.get("gen_ai.tool.call.result")
    if arguments is None and result is None:
        return None
    return step_fingerprint("tool", tool, arguments, result)


def _score_number(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is bool:
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SpanError(f"gen_ai.evaluation.score.value {value!r} is not finite")
    return number


def _evaluation(span: Mapping[str, Any], event: Mapping[str, Any]) -> tuple[Any, ...]:
    attrs = event.get("attributes") or {}
    name = attrs.get("gen_ai.evaluation.name")
    if not name:
        raise SpanError(f"{EVALUATION_EVENT} event has no gen_ai.evaluation.name")
    label = attrs.get("gen_ai.evaluation.score.label")
    response_id = attrs.get("gen_ai.response.id")
    return (
        span["trace_id"],
        span["span_id"],
        span["parent_span_id"],
        None if response_id is None else str(response_id),
        str(name),
        _score_number(attrs.get("gen_ai.evaluation.score.value")),
        None if label is None else str(label),
    )
