"""What a settle carries over (``llmtrace.spool_carry``): late scores and open traces.

A settle runs whenever the store is read, so often while the app runs. These tests replay a
real recording (tests/fixtures/libraries, official GenAI instrumentation) through the live
pipeline (``CostSpanProcessor`` -> ``StoreSpanExporter``, one batch per span, as the spans
ended) with reads in between, plus an LLM judge's evaluation span, and hold the store to what
``llmtrace import otlp`` of the same spans as one file stores: a judge's score reaches its
call whenever it was exported, a trace's calls get the root's action whenever the root was
exported, and a settle killed at any step and run again stores each call and score once.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from live.spans import CHAT_USAGE, memory_provider
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from recorded import LIBRARIES, readable_spans

from llmtrace import spool, spool_carry
from llmtrace.otel.exporters import StoreSpanExporter
from llmtrace.otel.processor import CostSpanProcessor, LazyPriceBook
from llmtrace.pricing import price_calls
from llmtrace.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEYS = ["trace_id", "span_id"]
RECORDING = LIBRARIES / "official-genai-1.3b0.jsonl"
ROOT = "handle contract-review"  # the root of two traces of the recording, each with a call


class _App:
    """The live pipeline of one app process into ``store``: each ``send`` is one batch (the
    twin spans of one call stay together, as a batch processor exports spans that end
    together; the exporter's handling of twins split across batches is not the subject)."""

    def __init__(self, store: Path, prices: LazyPriceBook) -> None:
        self.exporter = StoreSpanExporter(store, pricer=prices)
        self.memory = InMemorySpanExporter()
        self.processor = CostSpanProcessor(
            [SimpleSpanProcessor(self.memory)], pricer=prices, background=False
        )
        self.exported: list[ReadableSpan] = []

    def send(self, spans: Iterable[ReadableSpan]) -> None:
        for span in spans:
            self.processor.on_end(span)
        exported = self.memory.get_finished_spans()  # as the processor enriched them
        self.exporter.export(exported)
        self.exported.extend(exported)
        self.memory.clear()

    def shutdown(self) -> None:
        self.processor.shutdown()
        self.exporter.shutdown()


def _judge(response_id: str, value: float, name: str = "correctness") -> list[ReadableSpan]:
    """An LLM judge's run in a trace of its own: its span carries the evaluation event that
    names the judged call by response id (as OTel GenAI evaluators do)."""
    memory, provider = memory_provider()
    with provider.get_tracer("judge").start_as_current_span("judge") as span:
        span.add_event(
            "gen_ai.evaluation.result",
            {
                "gen_ai.evaluation.name": name,
                "gen_ai.evaluation.score.value": value,
                "gen_ai.response.id": response_id,
            },
        )
    return list(memory.get_finished_spans())


def _imported(spans: list[ReadableSpan], path: Path) -> pl.DataFrame:
    """``llmtrace import otlp`` of ``spans`` as one file, priced as the app's pricer does."""
    from llmtrace.importers.otlp import import_otlp
    from llmtrace.price_book import PriceBook

    path.write_bytes(encode_spans(spans).SerializeToString())
    result = import_otlp([path])
    assert result.problems == []
    return price_calls(result.calls, PriceBook.load()).sort(KEYS)


def _rows(store: Path) -> pl.DataFrame:
    return Store(store).scan().collect().sort(KEYS)


def _same_as_import(store: Path, spans: list[ReadableSpan], tmp_path: Path) -> pl.DataFrame:
    settled = _rows(store)
    imported = _imported(spans, tmp_path / "spans.pb")
    compare = [c for c in settled.columns if c != "source"]
    assert settled.height == imported.height and settled.select(KEYS).is_unique().all()
    differ = [c for c in compare if not settled[c].equals(imported[c], check_names=True)]
    assert differ == [], (differ, settled.select(KEYS, *differ), imported.select(KEYS, *differ))
    return settled


def _scored(rows: pl.DataFrame, response_id: str) -> dict[str, Any]:
    (row,) = rows.filter(pl.col("response_id") == response_id).to_dicts()
    return row


def _settle(store: Path) -> Any:
    result = Store(store).settle()
    assert result is not None
    return result


def test_a_judges_score_exported_after_a_settle_reaches_the_stored_call(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """The calls are stored by one read; the judge's evaluation comes in a later batch and
    the next read attaches it to the stored call (score and accuracy), as the import does."""
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(readable_spans(RECORDING))
    assert _settle(store).added == 12
    app.send(_judge("chatcmpl-loop1", 0.25))
    result = _settle(store)
    assert (result.added, result.scores, result.carried_scores) == (0, 1, 0)
    rows = _same_as_import(store, app.exported, tmp_path)
    row = _scored(rows, "chatcmpl-loop1")
    assert [(s["name"], s["value"]) for s in row["scores"]] == [("correctness", 0.25)]
    assert row["accuracy"] == 0.25
    assert _settle_again_adds_nothing(store, rows)


def _settle_again_adds_nothing(store: Path, rows: pl.DataFrame) -> bool:
    assert Store(store).settle() is None  # nothing pending: the spool is empty
    return _rows(store).equals(rows, null_equal=True)


def test_a_judges_score_spooled_before_its_call_waits_in_the_spool_for_it(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """The judge's trace is exported (and read) before the call's: its evaluation is carried
    (not dropped) and attached when the call arrives."""
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(_judge("msg_loop16", 1.0))
    result = _settle(store)
    assert (result.added, result.carried_scores, result.dropped_scores) == (0, 1, 0)
    (carry,) = spool.pending(store)
    assert spool.is_carry(carry.name) and not spool.has_pending(store)  # not due: no re-read
    app.send(readable_spans(RECORDING))
    result = _settle(store)
    assert (result.added, result.carried_scores) == (12, 0)
    assert spool.pending(store) == []
    rows = _same_as_import(store, app.exported, tmp_path)
    assert [s["value"] for s in _scored(rows, "msg_loop16")["scores"]] == [1.0]


def test_a_score_whose_call_never_comes_is_dropped_after_the_bound(
    prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(_judge("msg_nowhere", 1.0))
    assert _settle(store).carried_scores == 1
    # due at once: -1 s, as the carry's name holds its time rounded up to the second
    monkeypatch.setattr(spool, "CARRY_S", -1.0)
    assert spool.has_pending(store)
    result = _settle(store)
    assert (result.carried_scores, result.dropped_scores) == (0, 1)
    assert spool.pending(store) == []


def _without_root(spans: list[ReadableSpan], name: str) -> tuple[list[Any], list[Any]]:
    """(the spans but the roots called ``name``, those roots)."""
    roots = [s for s in spans if s.name == name and s.parent is None]
    return [s for s in spans if s not in roots], roots


def test_a_trace_whose_root_is_exported_after_a_settle_gets_the_roots_action(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """The two contract-review traces are read while running (their roots not exported):
    their calls are carried, not stored with the service as action, and once the roots
    arrive they are stored as the import stores the same spans."""
    store = tmp_path / "store"
    app = _App(store, prices)
    early, roots = _without_root(readable_spans(RECORDING), ROOT)
    app.send(early)
    result = _settle(store)
    assert (result.added, result.carried_calls) == (10, 4)  # each trace: one call, twin spans
    assert "contract-review" not in set(_rows(store)["action"])
    app.send(roots)
    assert _settle(store).added == 2
    rows = _same_as_import(store, app.exported, tmp_path)
    assert (rows["action"] == "contract-review").sum() == 2  # the roots' llmtrace.action


def test_a_trace_that_never_gets_a_root_is_finished_after_the_bound(
    prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    app = _App(store, prices)
    early, _ = _without_root(readable_spans(RECORDING), ROOT)
    app.send(early)
    assert _settle(store).carried_calls == 4
    assert Store(store).settle() is None  # the carry is not due: readers do not re-read it
    monkeypatch.setattr(spool, "CARRY_S", -1.0)  # due at once (its name's time is rounded up)
    assert _settle(store).added == 2
    assert spool.pending(store) == []
    _same_as_import(store, app.exported, tmp_path)  # the import, too, finishes them as they are


def test_a_carry_readers_find_due_is_finished_by_the_settle_they_start(
    prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readers read when a carry is due from its name (``spool.carry_due``): a settle started
    then finishes its oldest traces. The name held the oldest spool time rounded down to the
    second, so for up to a second before the traces were due every read settled the carry
    for nothing, rewriting it as it was."""
    import time

    store = tmp_path / "store"
    app = _App(store, prices)
    early, _ = _without_root(readable_spans(RECORDING), ROOT)
    app.send(early)
    assert _settle(store).carried_calls == 4
    (carry,) = spool.pending(store)
    entries = spool.read(carry).header["carry"]["traces"].values()
    first = min(entry[0] for entry in entries)
    assert first % 10**9, "spooled on a whole second: nothing to round"
    due = spool.carry_due(carry.name)
    assert due * 1e9 >= first + spool.CARRY_S * 1e9  # not before its oldest rows are due
    assert not spool.has_pending(store, now=due - 1)
    monkeypatch.setattr(time, "time", lambda: due)
    monkeypatch.setattr(time, "time_ns", lambda: int(due * 1e9))
    result = _settle(store)
    assert (result.added, result.carried_calls) == (2, 0)
    assert spool.pending(store) == []


def test_an_apps_shutdown_finishes_its_open_traces_at_once(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """``llmtrace run -- python app.py``, then ``llmtrace costs``: the exporter's last word
    (a final batch) tells the settle that no root of this process will come."""
    store = tmp_path / "store"
    app = _App(store, prices)
    early, _ = _without_root(readable_spans(RECORDING), ROOT)
    app.send(early)
    assert _settle(store).carried_calls == 4
    app.shutdown()
    result = _settle(store)
    assert (result.added, result.carried_calls) == (2, 0)
    assert spool.pending(store) == []
    _same_as_import(store, app.exported, tmp_path)


def test_a_span_whose_parent_is_remote_closes_its_trace_here(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """A service called by another (a ``traceparent`` header): its entry span's parent is in
    the caller's process, so no span without a parent will come; the entry span ends the
    trace here, and its calls are not carried."""
    memory, provider = memory_provider()
    caller = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    usage = dict(CHAT_USAGE)
    tracer = provider.get_tracer("service")
    with (
        tracer.start_as_current_span(
            "POST /ask", context=set_span_in_context(NonRecordingSpan(caller))
        ),
        tracer.start_as_current_span("chat", attributes=usage),
    ):
        pass
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(memory.get_finished_spans()[:1])  # the call's batch: still open
    assert _settle(store).carried_calls == 1
    app.send(memory.get_finished_spans()[1:])  # the entry span: closed
    result = _settle(store)
    assert (result.added, result.carried_calls) == (1, 0)
    _same_as_import(store, app.exported, tmp_path)


CRASHES = ["after the append", "after the attach", "after the carry is written"]


@pytest.mark.parametrize("crash", CRASHES)
def test_a_settle_killed_at_any_step_and_run_again_stores_each_call_and_score_once(
    crash: str, prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool holds at once: closed traces, a late score of a stored call, a score whose
    call is not there yet, and two open traces. The settle dies at a step; the next one and
    the rest of the spans store what the import of all the spans stores."""
    store = tmp_path / "store"
    app = _App(store, prices)
    spans = readable_spans(RECORDING)
    early, roots = _without_root(spans, ROOT)
    first = [s for s in early if s.attributes.get("gen_ai.response.id") != "chatcmpl-loop3"]
    later = [s for s in early if s not in first]
    app.send(first[:4])
    _settle(store)  # some calls stored before: a score for one of them is a late score
    app.send([*first[4:], *_judge("chatcmpl-loop1", 0.5), *_judge("chatcmpl-loop3", 0.0)])

    class Killed(Exception):
        pass

    def die(*_: Any, **__: Any) -> Any:
        raise Killed

    real_attach, real_carry = Store._attach_scores_held, spool_carry.write_carry
    if crash == "after the append":
        monkeypatch.setattr(Store, "_attach_scores_held", die)
    elif crash == "after the attach":

        def attach_then_die(self: Store, *args: Any) -> Any:
            real_attach(self, *args)
            raise Killed

        monkeypatch.setattr(Store, "_attach_scores_held", attach_then_die)
    else:

        def carry_then_die(*args: Any, **kwargs: Any) -> Any:
            real_carry(*args, **kwargs)
            raise Killed

        monkeypatch.setattr("llmtrace.store_spool.write_carry", carry_then_die)
    with pytest.raises(Killed):
        from llmtrace import store_spool

        reader = Store(store)
        with reader._locked():
            store_spool.settle(reader)
    monkeypatch.undo()
    again = _settle(store)
    assert again.carried_calls == 4 and again.carried_scores == 1
    app.send([*later, *roots])
    _settle(store)
    assert spool.pending(store) == []
    rows = _same_as_import(store, app.exported, tmp_path)
    assert [s["value"] for s in _scored(rows, "chatcmpl-loop1")["scores"]] == [0.5]
    assert [s["value"] for s in _scored(rows, "chatcmpl-loop3")["scores"]] == [0.0]


def test_a_root_that_is_the_twin_of_a_call_written_before_still_closes_its_trace(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """Official GenAI's Anthropic call: the SDK's span and the outer ``chat`` span, the
    trace's root, are one call. Exported in two batches, the root's call is not spooled again
    (its twin was), but the root's span is: the trace closes and its call is stored with the
    root's name as action (as the import names it), not carried until the bound."""
    store = tmp_path / "store"
    app = _App(store, prices)
    spans = [s for s in readable_spans(RECORDING) if f"{s.context.trace_id:032x}" == _TWINS]
    assert [s.parent is None for s in spans] == [False, True]
    for span in spans:
        app.send([span])
    result = _settle(store)
    assert (result.added, result.carried_calls, app.exporter.twins_dropped) == (1, 0, 1)
    imported = _imported(app.exported, tmp_path / "spans.pb")
    assert _rows(store)["action"].to_list() == imported["action"].to_list()
    assert imported["action"].to_list() == ["chat claude-sonnet-4-5"]


_TWINS = "bd8147b77a5939d2c893ba84cb2fe2b6"  # msg_loop9: anthropic SDK span under chat span


def test_spans_that_end_after_their_root_are_finished_at_once_with_the_roots_name(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """A request answers, ends, and leaves work running under its root span: a judge that
    scores the answer and a follow-up call. Read between the two, the late spans' trace is
    known closed (the settles' memory), so they are stored at once, the call with the root's
    name as action and the score on the stored call, as the import of all the spans has it."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("app")
    usage = dict(CHAT_USAGE)
    root = tracer.start_span("POST /ask")
    under = set_span_in_context(root)
    tracer.start_span("chat", under, attributes={**usage, "gen_ai.response.id": "r-answer"}).end()
    root.end()
    judge = tracer.start_span("judge", under)
    judge.add_event(
        "gen_ai.evaluation.result",
        {
            "gen_ai.evaluation.name": "correctness",
            "gen_ai.evaluation.score.value": 1.0,
            "gen_ai.response.id": "r-answer",
        },
    )
    tracer.start_span("chat", under, attributes={**usage, "gen_ai.response.id": "r-followup"}).end()
    judge.end()
    spans = list(memory.get_finished_spans())
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(spans[:2])  # the answer and the root
    assert _settle(store).added == 1
    app.send(spans[2:])  # the follow-up call and the judge, after the root
    result = _settle(store)
    assert (result.added, result.scores, result.carried_calls, result.carried_scores) == (
        1,
        1,
        0,
        0,
    )
    rows = _same_as_import(store, app.exported, tmp_path)
    assert rows["action"].to_list() == ["POST /ask"] * 2
    assert [s["value"] for s in _scored(rows, "r-answer")["scores"]] == [1.0]


def _old_memory(now: int, remembered: dict[str, tuple[int, str | None]], events: list[Any]) -> Any:
    """514d29e's memory of closed traces, as a reference: everything in one dict, one sort;
    a local root (parent in another process) is not remembered: it ends one request of its
    trace here, not the trace (``Traces.read``)."""
    recent = dict(remembered)
    for kind, trace, name in events:
        if kind == "root":
            recent[trace] = (now, name)
    horizon = now - spool.CARRY_S * 1e9
    kept = sorted(((c, t, n) for t, (c, n) in recent.items()), reverse=True)[: spool_carry.RECENT]
    return [(t, c, n) for c, t, n in kept if c > horizon], {t: n for t, (c, n) in recent.items()}


@pytest.mark.parametrize("seed", range(40))
def test_the_memory_of_closed_traces_is_the_one_a_sort_of_everything_gives(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Traces.memory`` merges this settle's closes before the recalled memory instead of
    sorting everything: the same traces, times, names and order as one sort (ties of one
    settle, roots seen again, local roots of remembered traces, the horizon, the ``RECENT``
    cut, a memory file in 514d29e's shape or out of order, a clock set back), and the same
    root names and closed traces for the settle."""
    import random

    rng = random.Random(seed)
    monkeypatch.setattr(spool_carry, "RECENT", rng.choice([5, 20, 1000]))
    now = 2_000_000_000 * 10**9
    span = int(spool.CARRY_S * 1e9)
    times = [now - rng.randrange(2 * span) for _ in range(rng.randint(1, 6))]
    if seed % 7 == 3:
        times.append(now + 5 * 10**9)  # written by a settle whose clock was ahead
    remembered = {
        f"{rng.getrandbits(16):032x}": (rng.choice(times), rng.choice(["POST /a", "b", None]))
        for _ in range(rng.randint(0, 40))
    }
    ordered = sorted(((c, t, n) for t, (c, n) in remembered.items()), reverse=True)
    store = tmp_path / "store"
    if seed % 5 == 1:  # 514d29e's shape
        doc: Any = {t: [c, n] for c, t, n in ordered}
        if seed % 2:
            doc = dict(reversed(list(doc.items())))
        (store / "state").mkdir(parents=True)
        (store / "state" / spool_carry.LEGACY_MEMORY).write_bytes(msgspec_encode(doc))
    else:
        if seed % 5 == 2:
            rng.shuffle(ordered)
        columns = [list(column) for column in zip(*ordered, strict=True)] or [[], [], []]
        spool_carry.write_memory(
            store, spool_carry.Memory(columns[1], columns[0], columns[2], ordered=False)
        )
    pool = [*remembered, *(f"{rng.getrandbits(16) + 70000:032x}" for _ in range(20))]
    events = [
        (rng.choice(["root", "local"]), trace, rng.choice(["POST /x", "y"]))
        for trace in rng.choices(pool, k=rng.randint(0, 2 * len(pool)))  # some twice
    ]
    traces = spool_carry.Traces(now)
    traces.recall(spool_carry.read_memory(store))
    for kind, trace, name in events:  # one file per event, as batches bring them
        header = {"local_roots": [trace]} if kind == "local" else {}
        roots = [[trace, name]] if kind == "root" else []
        traces.read(spool_carry.Part(Path("batch.msgpack"), header, ([], [], roots, [])))
    expected, names = _old_memory(now, remembered, events)
    memory = traces.memory()
    if memory is None:
        assert expected == [(t, c, n) for c, t, n in ordered]
    else:
        assert list(zip(memory.traces, memory.closed, memory.names, strict=True)) == expected
    for trace in pool:
        assert traces.is_closed(trace) is (trace in names)
        part = spool_carry.Part(Path("late.msgpack"), {}, ([], [[trace, "s", None]], [], []))
        found = traces.root_rows([part])
        assert found == ([[trace, names[trace]]] if names.get(trace) is not None else [])


def msgspec_encode(doc: Any) -> bytes:
    import msgspec

    return msgspec.msgpack.encode(doc)


def test_a_root_with_a_remote_parent_that_is_the_twin_of_a_call_written_before_closes_its_trace(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """As above, in a service called by another (``traceparent``): the outer ``chat`` span,
    the trace's root here, has its parent in the caller's process. Its call is not spooled
    again (its twin was), but it still ends the trace here (``local_roots``): the trace's call
    is stored at once, not carried until ``spool.CARRY_S``."""
    from opentelemetry.sdk.trace import ReadableSpan

    store = tmp_path / "store"
    app = _App(store, prices)
    inner, root = [s for s in readable_spans(RECORDING) if f"{s.context.trace_id:032x}" == _TWINS]
    caller = SpanContext(root.context.trace_id, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    root = ReadableSpan(
        name=root.name,
        context=root.context,
        parent=caller,
        resource=root.resource,
        attributes=dict(root.attributes or {}),
        kind=root.kind,
        status=root.status,
        start_time=root.start_time,
        end_time=root.end_time,
        instrumentation_scope=root.instrumentation_scope,
    )
    app.send([inner])
    app.send([root])
    result = _settle(store)
    assert app.exporter.twins_dropped == 1  # the root was spooled as a twin, without its call
    assert (result.added, result.carried_calls) == (1, 0)
    assert spool.pending(store) == []


def test_another_apps_shutdown_does_not_finish_this_apps_open_traces(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """Two exporters spool into one store under one process id: two containers sharing the
    store (each app is pid 1, or the same small pid, in its own namespace), an app restarted
    with its old pid before anyone read the store, or two exporters in one process. One
    shuts down; the other's running traces must stay open (carried) until their roots come:
    finished at the first one's final batch, their calls lost the roots' action."""
    store = tmp_path / "store"
    running, stopping = _App(store, prices), _App(store, prices)
    early, roots = _without_root(readable_spans(RECORDING), ROOT)
    running.send(early)
    stopping.send(_judge("chatcmpl-nothing", 1.0))
    stopping.shutdown()
    assert _settle(store).carried_calls == 4
    running.send(roots)
    assert _settle(store).added == 2
    _same_as_import(store, running.exported, tmp_path)


def test_a_memory_of_closed_traces_that_cannot_be_written_does_not_stop_settling(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """The memory of closed traces is advisory (``spool_carry.MEMORY``: lost, a late span
    waits for the bound). Its folder unwritable (here a file where ``state`` should be), the
    settle raised after appending, before removing its files: every later settle did the
    same, so the spool never drained and every read settled all of it again."""
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(readable_spans(RECORDING))
    (store / "state").write_text("not a folder")
    reader = Store(store)
    result = reader.settle()
    assert result is not None and result.added == 12
    assert spool.pending(store) == []
    assert any("memory of closed traces" in str(problem) for problem in reader.problems.values())


def test_a_settle_killed_after_its_carry_still_remembers_the_traces_it_closed(
    prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settle that stored a closed trace and carried an open one dies right after writing
    the carry. The next settle removes the files the carry replaces unread, so the closed
    trace's root is not read again: unless the memory of closed traces was written before
    the carry, a span of that trace ending after its root waited for ``spool.CARRY_S`` and
    was then stored without the root's name as action."""
    from llmtrace import store_spool

    memory, provider = memory_provider()
    tracer = provider.get_tracer("app")
    usage = dict(CHAT_USAGE)
    root = tracer.start_span("POST /ask")
    under = set_span_in_context(root)
    tracer.start_span("chat", under, attributes={**usage, "gen_ai.response.id": "r-1"}).end()
    root.end()
    running = tracer.start_span("POST /running")  # never ends here: its trace stays open
    tracer.start_span(
        "chat", set_span_in_context(running), attributes={**usage, "gen_ai.response.id": "r-2"}
    ).end()
    tracer.start_span("chat", under, attributes={**usage, "gen_ai.response.id": "r-3"}).end()
    spans = list(memory.get_finished_spans())
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(spans[:3])  # the answer, its root, the running trace's call

    class Killed(Exception):
        pass

    real_carry = spool_carry.write_carry

    def carry_then_die(*args: Any, **kwargs: Any) -> Any:
        real_carry(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(store_spool, "write_carry", carry_then_die)
    reader = Store(store)
    with pytest.raises(Killed), reader._locked():
        store_spool.settle(reader)
    monkeypatch.undo()
    assert _settle(store).added == 0  # removes the files the carry replaces, unread
    app.send(spans[3:])  # a call under the first root, ending after it
    result = _settle(store)
    assert (result.added, result.carried_calls) == (1, 1)  # the running trace: still open
    rows = _rows(store)
    assert rows.filter(pl.col("response_id") == "r-3")["action"].to_list() == ["POST /ask"]


def test_a_later_request_of_a_trace_in_a_called_service_keeps_its_agent(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """A service called twice in one trace (an agent calling it in turns): each request's
    entry span has its parent in the caller's process. The first request's entry span closed
    the trace for good, so the second request's call, exported before its agent span (which
    ends after it), was stored at once without its agent. Each local root ends its request:
    the second call waits for its own and is stored as the import of all the spans has it."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("service")
    usage = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.output_tokens": 10,
    }
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"}
    for turn, caller_span in enumerate([0xDE1, 0xDE2]):
        caller = SpanContext(0xABC, caller_span, is_remote=True, trace_flags=TraceFlags(1))
        entry = tracer.start_span("POST /ask", set_span_in_context(NonRecordingSpan(caller)))
        run = tracer.start_span("invoke_agent helper", set_span_in_context(entry), attributes=agent)
        tokens = {**usage, "gen_ai.usage.input_tokens": 100 + turn}
        tracer.start_span("chat", set_span_in_context(run), attributes=tokens).end()
        run.end()
        entry.end()
    spans = list(memory.get_finished_spans())  # per turn: the call, the agent, the entry
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send(spans[:3])
    assert _settle(store).added == 1
    app.send(spans[3:4])  # the second call alone: its request is still running
    assert _settle(store).carried_calls == 1
    app.send(spans[4:])
    assert _settle(store).added == 1
    rows = _same_as_import(store, app.exported, tmp_path)
    assert rows["agent"].to_list() == ["helper", "helper"]


def test_a_late_score_in_one_apps_files_reaches_a_call_another_app_finishes_at_the_end(
    prices: LazyPriceBook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps of other configs (so their files settle as two keys) share a trace: the
    caller holds its root, the called app made a call. The caller's last batch brings the
    root and a judge's score of the called app's call. The call's trace is finished only at
    the end of the settle (its rows were held before the root came); the score was attached
    by the caller's key before that, found no call, and waited in a carry for the next
    settle (dropped, had it been spooled ``spool.CARRY_S`` before)."""
    from llmtrace.otel import exporters

    memory, provider = memory_provider()
    tracer = provider.get_tracer("app")
    usage = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.output_tokens": 10,
    }
    root = tracer.start_span("POST /plan")
    under = set_span_in_context(root)
    own = {**usage, "gen_ai.usage.input_tokens": 1, "gen_ai.response.id": "r-own"}
    tracer.start_span("chat", under, attributes=own).end()
    called = {**usage, "gen_ai.usage.input_tokens": 2, "gen_ai.response.id": "r-called"}
    tracer.start_span("chat", under, attributes=called).end()
    root.end()
    warm = {**usage, "gen_ai.usage.input_tokens": 3, "gen_ai.response.id": "r-warm"}
    with tracer.start_as_current_span("warm-up", attributes=warm):
        pass
    caller_call, called_call, root_span, warm_up = memory.get_finished_spans()
    store = tmp_path / "store"
    caller, service = _App(store, prices), _App(store, prices)
    with monkeypatch.context() as patch:  # the caller's config: another key
        patch.setattr(exporters, "_config_file", lambda: str(tmp_path / "caller.toml"))
        caller.send([warm_up])  # the caller's key comes first in the settle
    service.send([called_call])
    caller.send([caller_call, root_span, *_judge("r-called", 0.5)])
    reader = Store(store)
    result = reader.settle()
    assert result is not None
    assert (result.added, result.scores, result.carried_scores) == (3, 1, 0)
    assert [s["value"] for s in _scored(_rows(store), "r-called")["scores"]] == [0.5]


def test_a_score_waiting_in_a_carry_does_not_finish_a_later_request_of_its_trace(
    prices: LazyPriceBook, tmp_path: Path
) -> None:
    """A called service's trace (entry spans with a remote parent): the first request's judge
    scores a call of the second request, not stored yet, so the score waits in a carry. The
    carry said its trace was finished (so the score would step at once next time), which
    finished the second request's call too, held in the same carry, at the next settle, as it
    was: without its agent span, which ends after it. Only the waiting score steps at once."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("service")
    usage = {
        **CHAT_USAGE,
        "gen_ai.response.id": "r-2",
    }
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"}
    callers = [SpanContext(0xABC, n, is_remote=True, trace_flags=TraceFlags(1)) for n in (1, 2)]
    entry = tracer.start_span("POST /ask", set_span_in_context(NonRecordingSpan(callers[0])))
    judge = tracer.start_span("judge", set_span_in_context(entry))
    judge.add_event(
        "gen_ai.evaluation.result",
        {
            "gen_ai.evaluation.name": "correctness",
            "gen_ai.evaluation.score.value": 1.0,
            "gen_ai.response.id": "r-2",
        },
    )
    judge.end()
    entry.end()
    entry = tracer.start_span("POST /ask", set_span_in_context(NonRecordingSpan(callers[1])))
    run = tracer.start_span("invoke_agent helper", set_span_in_context(entry), attributes=agent)
    tracer.start_span("chat", set_span_in_context(run), attributes=usage).end()
    run.end()
    entry.end()
    judge_span, first_entry, call, run_span, second_entry = memory.get_finished_spans()
    store = tmp_path / "store"
    app = _App(store, prices)
    app.send([judge_span, first_entry])
    assert _settle(store).carried_scores == 1
    app.send([call])  # the second request is running
    assert _settle(store).carried_calls == 1
    app.send(_judge("r-other", 0.0))  # another trace: a settle that brings nothing of this one
    assert _settle(store).carried_calls == 1
    app.send([run_span, second_entry])
    _settle(store)
    rows = _same_as_import(store, app.exported, tmp_path)
    assert rows["agent"].to_list() == ["helper"]
    assert [s["value"] for s in _scored(rows, "r-2")["scores"]] == [1.0]
