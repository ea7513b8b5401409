"""The store exporter's rows of a batch (``exporters.span_rows``) are what they were.

``span_rows`` runs on the exporter thread for every span an app ends (issue 15, goal 3), so it
builds each span's mapping in one go and reads the attributes in place instead of copying them
into ``importer_mapping``'s dict and that dict into another. The spool file holds these rows and
a settle turns them into stored calls, so they must not change by a bit: every case here runs
through ``span_rows`` as it was (``plain_span_rows``, commit 514d29e) and as it is, and compares
the calls, tree rows, roots, evaluations, counts and the problems reported, by ``repr`` (so an
int that became a float, or -0.0 that became 0.0, is a difference).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags
from recorded import fixture_paths, readable_spans, replay

from llmtrace import dialects, twins
from llmtrace.importers.otlp_rows import CALL_ROW
from llmtrace.otel import calls, exporters
from llmtrace.otel.processor import CostSpanProcessor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def plain_span_rows(spans: Sequence[ReadableSpan], *, keep_content: bool = False) -> Any:
    """``exporters.span_rows`` as it was (commit 514d29e)."""
    from llmtrace.importers import ImportProblem
    from llmtrace.importers.otlp_rows import SpanRows

    rows = SpanRows(keep_content)
    for number, span in enumerate(spans, start=1):
        mapping = exporters.importer_mapping(span)
        rows.spans += 1
        try:
            rows.add({"events": [], "resource": {}, "scope": None, **mapping})
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            rows.rejected += 1
            problem = ImportProblem("<spans>", number, mapping.get("span_id"), str(exc))
            exporters._guard.swallow("exporter.store.span", ValueError(str(problem)))
    return rows


def _outcome(function: Any, spans: Sequence[ReadableSpan], keep: bool, monkeypatch) -> list[str]:
    """Everything ``function`` gives for ``spans``, and what it reports, a text per row."""
    swallowed: list[str] = []
    with monkeypatch.context() as patch:
        patch.setattr(exporters._guard, "swallow", lambda where, exc: swallowed.append(str(exc)))
        rows = function(spans, keep_content=keep)
    out = [f"{field}: {row!r}" for field in ("calls", "tree", "roots", "evaluations")
           for row in getattr(rows, field)]  # fmt: skip
    counts = [f"{field}={getattr(rows, field)}" for field in ("spans", "llm_spans", "rejected")]
    return out + counts + swallowed


def assert_same_rows(spans: Sequence[ReadableSpan], monkeypatch) -> None:
    for keep in (False, True):
        new = _outcome(exporters.span_rows, spans, keep, monkeypatch)
        old = _outcome(plain_span_rows, spans, keep, monkeypatch)
        first = next((i for i, (a, b) in enumerate(zip(new, old, strict=False)) if a != b), None)
        assert first is None, (keep, new[first], old[first])  # the first difference
        assert len(new) == len(old)


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_recorded_libraries_give_the_same_rows(path: Path, prices, monkeypatch) -> None:
    """What the exporter receives from the live processor for each recorded library (priced
    spans with llmtrace's attributes, their parents), as one batch and span by span."""
    spans = replay(path, prices)
    rows = exporters.span_rows(spans)
    assert rows.calls and len(rows.tree) == len(spans)
    assert type(spans[0]) in exporters._SDK_SPANS  # the fast mapping is the one compared
    assert_same_rows(spans, monkeypatch)
    for span in spans:
        assert_same_rows([span], monkeypatch)


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_rows_the_worker_hands_over_are_the_exported_spans_rows(
    path: Path, prices, tmp_path: Path, monkeypatch
) -> None:
    """With the store exporter downstream, the worker gives each priced span's exported copy
    its call row (``calls.call_row``), which ``span_rows`` takes instead of mapping the copy:
    each row must be, field by field and type by type, ``map_span_row`` of that copy plus its
    emitter, as ``SpanRows.add`` makes it; and the batch's rows those of ``span_rows`` as it
    was, which never reads the handed-over row."""
    spans = replay(path, prices, store=tmp_path / "store")
    llm = [s for s in spans if dialects.is_llm_span(s.attributes or {})]
    handed = [s for s in spans if getattr(s, calls.ROW_ATTRIBUTE, None) is not None]
    assert handed and set(map(id, handed)) <= set(map(id, llm))
    _assert_rows_are_mapped_rows(spans)
    assert_same_rows(spans, monkeypatch)
    for span in handed:
        assert_same_rows([span], monkeypatch)


def _assert_rows_are_mapped_rows(spans: Sequence[ReadableSpan]) -> list[str]:
    """Each handed-over row is ``map_span_row`` of its span plus the emitter, field by field
    and type by type; the names of the spans that carry one."""
    names = []
    for span in spans:
        row = getattr(span, calls.ROW_ATTRIBUTE, None)
        if row is None:
            continue
        names.append(span.name)
        mapping = {"events": [], "resource": {}, "scope": None, **exporters.importer_mapping(span)}
        expected = (
            *dialects.map_span_row(mapping),
            twins.emitter(mapping["scope"], mapping["name"]),
        )
        assert len(row) == len(expected) == len(CALL_ROW)
        for field, got, want in zip(CALL_ROW, row, expected, strict=True):
            assert (type(got), repr(got)) == (type(want), repr(want)), (span.name, field)
    return names


def test_rows_handed_over_only_where_the_exported_copy_maps_the_same(
    prices, tmp_path: Path, monkeypatch
) -> None:
    """Spans whose exported copy maps otherwise than the worker's record get no row: a source
    marker the worker writes over that gave no cost (the copy's dialect differs), a reported
    cost written upstream, events; a point-in-time span dated back by its duration and a
    source cost as an int do get one, equal to ``map_span_row``'s."""
    memory = InMemorySpanExporter()
    store = exporters.StoreSpanExporter(tmp_path / "store", pricer=prices)
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory), SimpleSpanProcessor(store)], pricer=prices, background=False
    )
    provider = TracerProvider(resource=Resource({"service.name": "shop"}))
    provider.add_span_processor(processor)
    app, logfire = provider.get_tracer("app"), provider.get_tracer("logfire")
    extras: dict[str, dict[str, Any]] = {
        "plain": {},
        "openlit-cost": {"gen_ai.usage.cost": 1},
        "openlit-empty": {"gen_ai.usage.cost": ""},
        "langfuse-empty": {"langfuse.observation.cost_details": "{}"},
        "upstream-reported": {"llmtrace.reported_cost": 0.5},
        "event": {"langfuse.observation.level": "ERROR"},
    }
    with app.start_as_current_span("POST /ask"):
        for number, (name, extra) in enumerate(extras.items()):
            attributes = {**_GOOD, "gen_ai.usage.input_tokens": 100 + number, **extra}
            with app.start_as_current_span(name, attributes=attributes) as span:  # no twins
                if name == "event":
                    span.add_event("exception", {"exception.type": "Boom"})
        point = logfire.start_span("logfire-point", attributes={**_GOOD, "duration": 1.5})
        point.end(end_time=point.start_time)
        bare = {key: value for key, value in _GOOD.items() if "usage" not in key}
        with app.start_as_current_span("adopting", attributes=bare):  # takes its child's usage
            child = {**_GOOD, "gen_ai.usage.input_tokens": 55}
            with app.start_as_current_span("child", attributes=child):
                pass
        bare["gen_ai.request.model"] = "gpt-4o-mini"  # twins of no call above
        held = {**bare, "gen_ai.response.id": "r9", "gen_ai.conversation.id": "c1"}
        with app.start_as_current_span("held", attributes=held):  # no usage: waits for a twin
            pass
        taker = {**_GOOD, **bare, "gen_ai.usage.input_tokens": 7, "gen_ai.response.id": "r9"}
        with app.start_as_current_span("taker", attributes=taker):  # ... and gives it a field
            pass
    processor.shutdown()
    spans = list(memory.get_finished_spans())
    assert sorted(_assert_rows_are_mapped_rows(spans)) == [
        "logfire-point",
        "openlit-cost",
        "plain",
    ]
    assert_same_rows(spans, monkeypatch)


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_rows_handed_over_with_the_hooks_fingerprints_are_the_exported_spans_rows(
    path: Path, prices, tmp_path: Path, monkeypatch
) -> None:
    """As an app gets it: a completion-hook input stashed for each span (the worker puts the
    fingerprint fields into its record as computed, the exported copy carries them as
    attributes that ``map_span_row`` reads back), half of them as plain texts."""
    from test_live_fast_paths import _prompt

    from llmtrace.otel import hook

    memory = InMemorySpanExporter()
    store = exporters.StoreSpanExporter(tmp_path / "store", pricer=prices)
    processor = CostSpanProcessor(
        [SimpleSpanProcessor(memory), SimpleSpanProcessor(store)], pricer=prices, background=False
    )
    for number, span in enumerate(readable_spans(path)):
        prompt = _prompt(number)
        if number % 2:
            prompt = hook.plain_texts(*prompt) or prompt
        processor.stash_prompt(span.context.span_id, prompt)
        processor.on_end(span)
    processor.shutdown()
    spans = list(memory.get_finished_spans())
    handed = [s for s in spans if getattr(s, calls.ROW_ATTRIBUTE, None) is not None]
    assert any("llmtrace.prompt.prefix_hashes" in (s.attributes or {}) for s in handed)
    assert _assert_rows_are_mapped_rows(spans)
    assert_same_rows(spans, monkeypatch)


def test_the_worker_hands_rows_over_only_to_an_exporter_that_takes_them(prices) -> None:
    """No store exporter downstream (or content kept): no row is made (it would cost the
    worker ~1 us a call for nothing)."""
    path = fixture_paths()[0]
    assert not any(hasattr(s, calls.ROW_ATTRIBUTE) for s in replay(path, prices))
    assert CALL_ROW == calls.CALL_ROW


@pytest.mark.parametrize(
    ("chosen", "capture", "takes"),
    [(("store",), False, True), (("console",), False, False), (("store",), True, False)],
)
def test_the_setups_store_exporter_is_found_behind_its_batch_processor(
    chosen: tuple[str, ...], capture: bool, takes: bool, prices, tmp_path: Path
) -> None:
    """As ``llmtrace.init()`` wires it (``exporters.span_processors``: the SDK's batch
    processor, which keeps its exporter in a private field): the worker sees the store
    exporter and hands it rows, without content only. An SDK that moves that field fails here
    rather than silently costing every app ~9 us a call again."""
    from llmtrace.otel.settings import LiveSettings

    settings = LiveSettings(exporters=chosen, store=tmp_path / "store", capture_content=capture)
    downstream = exporters.span_processors(settings, prices)
    processor = CostSpanProcessor(downstream, pricer=prices, background=False, keep_content=capture)
    try:
        assert processor._call_rows is takes
    finally:
        processor.shutdown()


class _Subclass(ReadableSpan):
    """Not one of the SDK's classes: read through its properties (the plain way)."""


def _context(rng: random.Random, trace: int) -> SpanContext:
    return SpanContext(trace, rng.getrandbits(64) | 1, rng.random() < 0.2, TraceFlags(1))


_VALUES: list[Any] = ["", "x", "CHAT", " chat ", 0, -1, 12, 2**70, 1.5, 12.0, float("nan"), True]
_VALUES += [("a", "b"), ("stop",), "12", "-3", "1e3", '{"total": 0.5}', '{"a": 1}', "[1]", "{"]
_ATTRIBUTES = [
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cost",
    "gen_ai.response.id",
    "gen_ai.agent.name",
    "gen_ai.tool.name",
    "gen_ai.tool.call.arguments",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "openinference.span.kind",
    "llm.token_count.prompt",
    "llm.request.type",
    "langfuse.observation.type",
    "langfuse.observation.cost_details",
    "langfuse.observation.usage_details",
    "llmtrace.action",
    "llmtrace.agent",
    "llmtrace.prompt.prefix_hashes",
    "llmtrace.prompt.prefix_tokens",
    "error.type",
    "http.route",
    "db.system.name",
]
_GOOD = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
}
_COSTS = '{"input":0.1,"input_cached_tokens":0.0,"total":0.25}'


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def _attributes(rng: random.Random) -> dict[str, Any]:
    kind = rng.random()
    if kind < 0.25:  # an app's other spans
        return {"http.route": "/x", "server.port": 80} if rng.random() < 0.5 else {}
    if kind < 0.35:  # tool runs, some whose arguments or action cannot be read (rejected)
        attrs = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}
        attrs["gen_ai.tool.call.arguments"] = rng.choice(['{"q": 1}', b"x", {1}, None])
        if rng.random() < 0.2:
            attrs["llmtrace.action"] = rng.choice([_Unprintable(), "act"])
        return attrs
    if kind < 0.4:  # is_llm_span cannot answer (after the tree row, in add)
        attrs = {"langfuse.observation.type": _Unprintable()}
        return {**attrs, "gen_ai.operation.name": ["chat"]} if rng.random() < 0.5 else attrs
    attrs = dict(_GOOD) if kind < 0.7 else {}
    for name in rng.sample(_ATTRIBUTES, rng.randint(0, 6)):
        attrs[name] = rng.choice(_VALUES)
    if rng.random() < 0.3:
        attrs["langfuse.observation.cost_details"] = rng.choice(
            [_COSTS, _COSTS + " ", " " + _COSTS, _COSTS[:-1], '{"total":1e999}', '{"x":NaN}']
        )
    if rng.random() < 0.2:
        attrs["llmtrace.prompt.prefix_hashes"] = rng.choice([["00ff", "0a"], ("ab",), ["zz"]])
        attrs["llmtrace.prompt.prefix_tokens"] = rng.choice([[1, 2], (3,), None, ["x"]])
    return attrs


def _events(rng: random.Random) -> list[Event]:
    events = []
    for _ in range(rng.choice([0, 0, 1, 2])):
        pick = rng.random()
        if pick < 0.4:
            events.append(Event("exception", {"exception.type": rng.choice(["E", "", 5])}))
        elif pick < 0.8:
            attrs: dict[str, Any] = {"gen_ai.evaluation.name": rng.choice(["relevance", ""])}
            attrs["gen_ai.evaluation.score.value"] = rng.choice([0.5, 1, "x", True, 1e400])
            if rng.random() < 0.5:
                attrs["gen_ai.evaluation.score.label"] = rng.choice(["good", 3])
            if rng.random() < 0.5:
                attrs["gen_ai.response.id"] = "chatcmpl-1"
            events.append(Event("gen_ai.evaluation.result", attrs))
        else:
            events.append(Event("log", {"message": "hello"}))
    return events


def _random_spans(rng: random.Random, count: int) -> list[ReadableSpan]:
    scopes = [p + "x" for d in dialects.DIALECTS for p in d.scope_prefixes][:8]
    scopes += ["opentelemetry.instrumentation.fastapi", ""]
    resources = [Resource({"service.name": "app"}), Resource({}), Resource({"service.name": 5})]
    spans: list[ReadableSpan] = []
    for _ in range(count):
        trace = rng.getrandbits(128) | 1
        parent = None if rng.random() < 0.3 else _context(rng, trace)
        start = 1_764_201_600_000_000_000 + rng.randrange(10**12)
        scope = rng.choice(scopes + [None])
        spans.append(
            rng.choice([ReadableSpan, ReadableSpan, _Subclass])(
                name=rng.choice(["chat gpt-4o", "GET /x", "execute_tool f", ""]),
                context=_context(rng, trace),
                parent=parent,
                resource=rng.choice(resources),
                attributes=_attributes(rng),
                events=_events(rng),
                status=Status(rng.choice([StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR])),
                start_time=rng.choice([start, start, None]),
                end_time=start + rng.choice([0, 1000, 10**9]),
                instrumentation_scope=None if scope is None else InstrumentationScope(scope),
            )
        )
    return spans


def test_random_spans_give_the_same_rows(monkeypatch) -> None:
    """Spans of every kind (LLM or not, good and bad values, events of each kind, with and
    without a parent, scope or start, SDK spans and a subclass) give the same rows and the
    same problems, as one batch and in batches of a few."""
    rng = random.Random(14)
    spans = _random_spans(rng, 1500)
    plain = plain_span_rows(spans)
    assert plain.calls and plain.evaluations and plain.roots
    assert plain.rejected > 20 and len(plain.tree) > len(plain.calls) + 300
    tools = [row for row in plain.tree if row[5] is not None]
    assert len(tools) > 50 and any(row[7] for row in tools)
    assert_same_rows(spans, monkeypatch)
    for start in range(0, 300, 7):
        assert_same_rows(spans[start : start + 7], monkeypatch)


def test_sdk_spans_give_the_same_rows(monkeypatch) -> None:
    """Spans as a ``TracerProvider`` ends them (``_Span`` objects, ``BoundedAttributes``, an
    exception recorded), not built by hand."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    with tracer.start_as_current_span("POST /ask"):
        for number in range(5):
            with tracer.start_as_current_span("chat", attributes=_GOOD) as span:
                span.set_attribute("gen_ai.response.id", f"r{number}")
                if number == 3:
                    span.record_exception(ValueError("boom"))
                    span.set_status(Status(StatusCode.ERROR))
    spans = list(memory.get_finished_spans())
    assert type(spans[0]) in exporters._SDK_SPANS
    assert len(exporters.span_rows(spans).calls) == 5
    assert_same_rows(spans, monkeypatch)
