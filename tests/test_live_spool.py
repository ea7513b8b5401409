"""The store exporter spools, store readers settle: the same rows as when the app wrote them.

The app's side (``llmtrace.spool``) writes one file of the importer's rows per batch; the
store's readers (``Store.settle``, ``llmtrace.store_spool``) turn them into priced call
records. These tests hold the settled rows to the rows the exporter wrote itself before it
spooled (``_AppWrites`` below is that exporter), and check what a spool must survive: a crash
between the append and the removal of the files, two readers at once, a damaged file, a file
of a newer version, an app writing while a reader settles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import polars as pl
import pytest
from live.spans import CHAT_USAGE, memory_provider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from recorded import fixture_paths, replay

from llmtrace import spool
from llmtrace.otel.exporters import StoreSpanExporter, spans_to_calls
from llmtrace.otel.processor import LazyPriceBook
from llmtrace.pricing import price_calls
from llmtrace.store import Store

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KEYS = ["trace_id", "span_id"]


class _AppWrites(StoreSpanExporter):
    """The store exporter as it was before the spool (06ca7cd): each batch through the
    importer's whole path and appended by the app itself."""

    def _write(self, spans: Sequence[ReadableSpan]) -> None:
        calls = spans_to_calls(spans, keep_content=self._keep_content)
        if calls.height:
            book = self._pricer.get() if self._pricer is not None else None
            Store(self.store_path).append(price_calls(calls, book))
        for span in spans:
            self._written[f"{span.context.span_id:016x}"] = None


class _OneBatch:
    """Holds every span it is given and exports them as one batch at shutdown: the old
    exporter finished each batch alone, the spool finishes spans of many batches together,
    so the two agree on a whole recording exported in one batch."""

    def __init__(self, inner: type[StoreSpanExporter]) -> None:
        self.inner = inner

    def __call__(self, store: Path, pricer: Any) -> Any:
        exporter = self.inner(store, pricer=pricer)
        held: list[ReadableSpan] = []
        export, shutdown = exporter.export, exporter.shutdown

        def hold(spans: Sequence[ReadableSpan]) -> Any:
            held.extend(spans)
            return SpanExportResult.SUCCESS

        def finish() -> None:
            export(held)
            shutdown()

        exporter.export, exporter.shutdown = hold, finish  # type: ignore[method-assign]
        return exporter


def _rows(store: Path) -> pl.DataFrame:
    return Store(store).scan().collect().sort(KEYS)


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_settled_rows_equal_the_rows_the_app_wrote_itself(
    path: Path, prices: LazyPriceBook, tmp_path: Path
) -> None:
    """Every recorded library, replayed through the live pipeline and exported as one batch:
    the spooled and settled store equals, row for row and column for column, the store the
    old exporter wrote."""
    replay(path, prices, tmp_path / "spooled", exporter_class=_OneBatch(StoreSpanExporter))
    replay(path, prices, tmp_path / "written", exporter_class=_OneBatch(_AppWrites))
    assert spool.pending(tmp_path / "spooled"), "the app wrote no spool file"
    assert not list((tmp_path / "spooled").glob("calls/*/*.parquet")), "the app wrote Parquet"
    written = _rows(tmp_path / "written")
    assert written.height > 0
    settled = _rows(tmp_path / "spooled")
    assert spool.pending(tmp_path / "spooled") == []
    assert settled.equals(written, null_equal=True), (settled, written)


def _spans(count: int, trace: int = 0, prompt: str = "hello") -> list[ReadableSpan]:
    """``count`` LLM calls under one root, as finished SDK spans (children end first)."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("test")
    usage = {
        **CHAT_USAGE,
        "gen_ai.input.messages": f'[{{"role": "user", "content": "{prompt}"}}]',
    }
    with tracer.start_as_current_span(f"POST /ask/{trace}"):
        for _ in range(count):
            with tracer.start_as_current_span("chat", attributes=usage):
                pass
    return list(memory.get_finished_spans())


def _spool_batches(store: Path, batches: int, per_batch: int = 5) -> int:
    """``batches`` spool files of ``per_batch`` calls each; returns the number of calls."""
    exporter = StoreSpanExporter(store)
    for number in range(batches):
        exporter.export(_spans(per_batch, trace=number))
    assert len(spool.pending(store)) == batches
    return batches * per_batch


def test_a_settle_interrupted_before_the_files_are_removed_adds_nothing_again(
    tmp_path: Path,
) -> None:
    """A crash between the append and the unlink leaves the files: settling them again adds
    no row (the store's key check), and the store holds each call once."""
    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    saved = {path: path.read_bytes() for path in spool.pending(store)}
    first = Store(store).settle()
    assert first is not None and first.added == calls and first.files == 3
    for path, data in saved.items():  # as if the process died before unlinking
        path.write_bytes(data)
    again = Store(store).settle()
    assert again is not None and again.added == 0 and again.duplicates == calls
    rows = _rows(store)
    assert rows.height == calls and rows.select(KEYS).is_unique().all()
    assert spool.pending(store) == []


def test_two_processes_settling_at_once_store_each_call_once(tmp_path: Path) -> None:
    """They start settling together (they wait for a go file, everything imported), and each
    dawdles between reading the stored keys and writing (so without the writer lock each
    would miss the others' rows): the lock makes one settle everything, the others find
    nothing left or only stored keys."""
    store = tmp_path / "store"
    calls = _spool_batches(store, 60, per_batch=3)
    go = tmp_path / "go"
    code = (
        "import sys, os, time\n"
        "from llmtrace.store import Store\n"
        "keys = Store._stored_keys\n"
        "def slow(self, day_dir):\n"
        "    found = keys(self, day_dir)\n"
        "    time.sleep(0.3)\n"
        "    return found\n"
        "Store._stored_keys = slow\n"
        "store = Store(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "store.settle()\n"
    )
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for reader in readers:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    go.touch()
    for reader in readers:
        _, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err
    rows = _rows(store)
    assert rows.height == calls and rows.select(KEYS).is_unique().all()


def test_a_damaged_spool_file_is_reported_and_kept_aside_and_the_rest_settles(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    calls = _spool_batches(store, 2)
    bad = spool.spool_dir(store) / "00000000T000000.000000000Z-1-000000001.msgpack"
    bad.write_bytes(b"\x93not msgpack at all")
    problems: list[Any] = []
    rows = Store(store, on_problem=problems.append).scan().collect()
    assert rows.height == calls
    assert [p.path for p in problems] == [bad] and "spool file not settled" in problems[0].message
    assert (spool.spool_dir(store) / spool.REJECTED / bad.name).read_bytes().startswith(b"\x93")
    assert spool.pending(store) == []


def test_a_spool_file_of_a_newer_version_is_left_in_place(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _spool_batches(store, 1)
    (path,) = spool.pending(store)
    doc = msgspec.msgpack.decode(path.read_bytes())
    doc["header"]["version"] = spool.VERSION + 1
    path.write_bytes(msgspec.msgpack.encode(doc))
    problems: list[Any] = []
    assert Store(store, on_problem=problems.append).scan().collect().height == 0
    assert spool.pending(store) == [path]
    assert "newer" in problems[0].message


def test_fields_are_mapped_by_name_not_position(tmp_path: Path) -> None:
    """A file whose call fields come in another order (another llmtrace version) settles to
    the same rows."""
    store = tmp_path / "store"
    calls = _spool_batches(store, 1)
    (path,) = spool.pending(store)
    doc = msgspec.msgpack.decode(path.read_bytes())
    fields = doc["header"]["fields"]["calls"]
    doc["header"]["fields"]["calls"] = fields[::-1]
    doc["calls"] = [row[::-1] for row in doc["calls"]]
    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "spool").mkdir()
    (expected / "spool" / path.name).write_bytes(path.read_bytes())
    path.write_bytes(msgspec.msgpack.encode(doc))
    assert _rows(store).equals(_rows(expected), null_equal=True)
    assert _rows(store).height == calls


def test_readers_survive_an_app_that_keeps_spooling(tmp_path: Path) -> None:
    """An app spooling batch after batch while readers settle and scan: nothing is lost,
    nothing counted twice, no reader fails."""
    store = tmp_path / "store"
    exporter = StoreSpanExporter(store)
    done = threading.Event()
    errors: list[BaseException] = []
    batches = [_spans(4, trace=n) for n in range(60)]

    def read() -> None:
        try:
            while not done.is_set():
                Store(store).scan().select(KEYS).collect()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for batch in batches:
        exporter.export(batch)
    done.set()
    for reader in readers:
        reader.join()
    assert errors == []
    rows = _rows(store)
    assert rows.height == 60 * 4 and rows.select(KEYS).is_unique().all()


def test_without_capture_no_prompt_text_reaches_the_spool(tmp_path: Path) -> None:
    """Privacy: the spool file holds the fingerprints, never the messages, unless asked."""
    for keep, store in ((False, tmp_path / "plain"), (True, tmp_path / "kept")):
        exporter = StoreSpanExporter(store, keep_content=keep)
        exporter.export(_spans(2, prompt="secret order 4711"))
        (path,) = spool.pending(store)
        assert (b"secret order 4711" in path.read_bytes()) is keep
        (row, _) = _rows(store).to_dicts()
        assert row["input_fingerprint"] is not None
        assert (row["input_content"] is not None) is keep


def test_a_store_that_cannot_be_written_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only store (no writer lock to be had): spooled calls wait, with a problem, and
    the stored calls are still read."""
    store = tmp_path / "store"
    _spool_batches(store, 1)
    assert Store(store).scan().collect().height == 5
    StoreSpanExporter(store).export(_spans(2, trace=9))
    reader = Store(store, on_problem=lambda p: None)

    def no_lock() -> Any:
        raise PermissionError(13, "Permission denied", str(store / ".lock"))

    monkeypatch.setattr(reader, "_locked", no_lock)
    assert reader.scan().collect().height == 5
    assert "not settled yet" in reader.problems[spool.spool_dir(store)].message
    assert len(spool.pending(store)) == 1


def test_a_one_call_app_exporting_to_the_store_imports_no_polars(tmp_path: Path) -> None:
    """The app spools; Polars (and the Parquet writer) stay in the store's readers."""
    code = (
        "import llmtrace\n"
        "handle = llmtrace.init(exporters='store', service_name='one-call', metrics=False)\n"
        "tracer = handle.tracer_provider.get_tracer('app')\n"
        "attrs = {'gen_ai.operation.name': 'chat', 'gen_ai.provider.name': 'openai',\n"
        "         'gen_ai.request.model': 'gpt-4o', 'gen_ai.usage.input_tokens': 1000,\n"
        "         'gen_ai.usage.output_tokens': 10}\n"
        "with tracer.start_as_current_span('chat gpt-4o', attributes=attrs):\n"
        "    pass\n"
        "handle.shutdown()\n"
        "import sys\n"
        "print(','.join(m for m in ('polars', 'pyarrow', 'llmtrace.store') if m in sys.modules))\n"
    )
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    batch, final = spool.pending(tmp_path / "store")  # the call's batch, the app's last word
    assert spool.read(final).header["final"] and not spool.read(batch).header.get("final")
    (row,) = _rows(tmp_path / "store").to_dicts()
    assert row["source"] == "live" and row["price_status"] == "ok" and row["total_cost"] > 0
    assert os.listdir(tmp_path / "store" / "spool") == []


def test_a_command_opening_the_store_settles_a_big_spool_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ``SETTLE_BAR_FILES`` files on, opening the store settles them (with a bar on
    stderr) before the command reads; fewer wait for the first read."""
    from llmtrace.commands import common

    store = tmp_path / "store"
    _spool_batches(store, 3)
    monkeypatch.setattr(common, "SETTLE_BAR_FILES", 4)
    common.open_store(str(store))
    assert len(spool.pending(store)) == 3
    monkeypatch.setattr(common, "SETTLE_BAR_FILES", 3)
    common.open_store(str(store))
    assert spool.pending(store) == []
    assert list((store / "calls").glob("*/*.parquet"))


def test_a_settle_removes_what_a_killed_app_left_half_written_and_only_that(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    _spool_batches(store, 1)
    folder = spool.spool_dir(store)
    old, fresh = folder / ".old.msgpack.tmp", folder / ".fresh.msgpack.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    hours_ago = old.stat().st_mtime - 2 * spool.STALE_TEMPORARY_S
    os.utime(old, (hours_ago, hours_ago))
    assert Store(store).scan().collect().height == 5
    assert not old.exists() and fresh.exists()


def test_a_trace_spooled_over_many_batches_settles_as_an_import_of_its_spans(
    tmp_path: Path,
) -> None:
    """Each span its own batch, the roots last (as SDKs end them): the settled rows equal
    ``llmtrace import otlp`` of the same spans as one file, so a call gets its trace's root
    name as action even though the root came in another batch (the old exporter, finishing
    each batch alone, gave those calls the service name)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from llmtrace.importers.otlp import import_otlp
    from llmtrace.price_book import PriceBook

    store = tmp_path / "store"
    spans = [*_spans(3, trace=1), *_spans(2, trace=2)]
    exporter = StoreSpanExporter(store)
    for span in spans:
        exporter.export([span])
    assert len(spool.pending(store)) == 7  # roots too: they name their trace's action
    settled = _rows(store)
    path = tmp_path / "spans.pb"
    path.write_bytes(encode_spans(spans).SerializeToString())
    result = import_otlp([path])
    assert result.problems == []
    imported = price_calls(result.calls, PriceBook.load()).sort(KEYS)
    assert sorted(settled["action"]) == ["POST /ask/1"] * 3 + ["POST /ask/2"] * 2
    compare = [c for c in settled.columns if c != "source"]
    assert settled.select(compare).equals(imported.select(compare), null_equal=True)


def test_a_file_the_batch_step_cannot_take_is_set_aside_and_its_group_still_settles(
    tmp_path: Path,
) -> None:
    """Rows that decode but are not call records (a token count that is text): the group's
    files are stepped one by one, the bad one moved aside, the others stored."""
    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    bad = _text_token_counts(spool.pending(store)[1])
    problems: list[Any] = []
    assert Store(store, on_problem=problems.append).scan().collect().height == calls - 5
    assert [p.path for p in problems] == [bad]
    assert (spool.spool_dir(store) / spool.REJECTED / bad.name).exists()
    assert spool.pending(store) == []


def test_files_the_batch_step_takes_alone_but_not_together_settle_each_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the step fails on a group but takes each of its files alone, the files are
    settled one by one (none is bad to set aside): raising failed this settle and every
    later one, so no reader saw a call of the spool again."""
    from llmtrace import store_spool

    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    step = store_spool._Context.step

    def alone_only(self: Any, parts: list[Any], *args: Any, **kwargs: Any) -> Any:
        if len(parts) > 1:
            raise ValueError("these rows together")
        return step(self, parts, *args, **kwargs)

    monkeypatch.setattr(store_spool._Context, "step", alone_only)
    problems: list[Any] = []
    assert Store(store, on_problem=problems.append).scan().collect().height == calls
    assert problems == [] and spool.pending(store) == []
    assert not (spool.spool_dir(store) / spool.REJECTED).exists()


def test_a_big_spool_settles_in_groups_of_bounded_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory: a group ends once it holds ``GROUP_SPANS`` spans (each batch here is 5 calls
    and their root: 6 spans), one append (one new file a day) per group."""
    from llmtrace import store_spool

    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    monkeypatch.setattr(store_spool, "GROUP_SPANS", 6)
    assert _rows(store).height == calls
    assert len(list((store / "calls").glob("*/*.parquet"))) == 3


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_a_settle_leaves_the_cyclic_gc_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool
) -> None:
    """A settle turns the cyclic GC off and freezes what existed before it (``_quiet_gc``):
    the reader's process gets both back as they were, also when the settle fails, and an
    app that froze objects itself keeps them frozen."""
    import gc

    from llmtrace import store_spool

    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    monkeypatch.setattr(store_spool, "GROUP_SPANS", 6)  # the collect between groups runs too
    seen: list[tuple[bool, int]] = []
    step = store_spool._step

    def watched(*args: Any, **kwargs: Any) -> None:
        seen.append((gc.isenabled(), gc.get_freeze_count()))
        step(*args, **kwargs)

    monkeypatch.setattr(store_spool, "_step", watched)
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        assert _rows(store).height == calls
        assert seen and all(not on and frozen > 0 for on, frozen in seen), seen
        assert gc.isenabled() is enabled and gc.get_freeze_count() == 0
        _spool_batches(store, 1)
        monkeypatch.setattr(store_spool, "_step", _failing)
        assert Store(store).settle() is None  # reported as a problem, not raised
        assert gc.isenabled() is enabled and gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        assert Store(store).settle() is None
        # not thawed (0); a frozen object freed meanwhile leaves the count, so not == frozen
        assert gc.get_freeze_count() > frozen // 2, "the caller's frozen objects were thawed"
    finally:
        gc.unfreeze()
        if was:
            gc.enable()


def _failing(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("a settle failing half-way")


@pytest.mark.parametrize(
    "memory",
    [
        {"0" * 32: 5},  # 514d29e's shape, a value not [closed, name]
        {"0" * 32: [1, 2, 3]},
        {"format": "llmtrace-spool-closed", "traces": ["a"], "closed": [1], "names": [7]},
        {"format": "llmtrace-spool-closed", "traces": ["a", "b"], "closed": [1], "names": []},
        [1, 2],
    ],
    ids=["int", "three", "name-int", "lengths", "list"],
)
def test_a_memory_of_closed_traces_of_another_shape_is_ignored(tmp_path: Path, memory: Any) -> None:
    """The memory of closed traces is advisory (``spool_carry.MEMORY``): one that decodes
    but is not of the expected shape (a damaged or a later llmtrace's) is taken as empty and
    rewritten; it made every settle fail, so no reader saw a new call again."""
    from llmtrace import spool_carry

    store = tmp_path / "store"
    calls = _spool_batches(store, 2)
    (store / "state").mkdir()
    (store / "state" / spool_carry.MEMORY).write_bytes(msgspec.msgpack.encode(memory))
    problems: list[Any] = []
    assert Store(store, on_problem=problems.append).scan().collect().height == calls
    assert problems == [] and spool.pending(store) == []
    rewritten = msgspec.msgpack.decode((store / "state" / spool_carry.MEMORY).read_bytes())
    assert isinstance(rewritten, dict) and rewritten != memory


def _plain_spans(name: str) -> list[ReadableSpan]:
    """A trace of an app's other work (HTTP, database): no LLM call in it."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("web")
    query = {"db.system": "postgres"}
    with (
        tracer.start_as_current_span(name),
        tracer.start_as_current_span("SELECT", attributes=query),
    ):
        pass
    return list(memory.get_finished_spans())


def test_an_apps_other_traces_spool_nothing(tmp_path: Path) -> None:
    """Only traces with an LLM call (in this batch or lately) are spooled: a batch of other
    traces writes no file, and beside a call's trace the others leave no tree row."""
    store = tmp_path / "store"
    exporter = StoreSpanExporter(store)
    exporter.export(_plain_spans("GET /health"))
    assert spool.pending(store) == []
    llm = _spans(2, trace=1)
    exporter.export([*_plain_spans("GET /orders"), *llm])
    (path,) = spool.pending(store)
    doc = msgspec.msgpack.decode(path.read_bytes())
    llm_trace = f"{llm[0].context.trace_id:032x}"
    assert {row[0] for row in doc["tree"]} == {llm_trace}
    assert len(doc["tree"]) == 3 and len(doc["calls"]) == 2


def test_store_check_names_what_the_spool_holds_back_and_repair_sets_it_aside(
    tmp_path: Path,
) -> None:
    """``llmtrace store check`` settles first, then names a file the settle rejected and a
    batch of a newer format still waiting (exit 1); ``--repair`` quarantines the first and
    still exits 1 for the batch it cannot settle."""
    store = tmp_path / "store"
    calls = _spool_batches(store, 3)
    first, second, _ = spool.pending(store)
    first.write_bytes(b"\x93not msgpack at all")
    doc = msgspec.msgpack.decode(second.read_bytes())
    doc["header"]["version"] = spool.VERSION + 1
    second.write_bytes(msgspec.msgpack.encode(doc))

    outcome = _store_check(store)
    assert outcome.exit_code == 1, outcome.output
    rejected = spool.spool_dir(store) / spool.REJECTED / first.name
    assert f"{rejected}: spool file a settle could not read" in outcome.stdout
    assert f"{second}: spooled live batch not settled" in outcome.stdout
    assert Store(store).scan().collect().height == calls // 3  # the third batch settled

    outcome = _store_check(store, "--repair")
    assert outcome.exit_code == 1, outcome.output  # the newer batch cannot be repaired here
    assert not rejected.exists()
    assert (store / "quarantine" / "spool" / spool.REJECTED / first.name).is_file()
    assert spool.pending(store) == [second]


def test_store_check_names_a_killed_apps_half_written_spool_file_and_repair_removes_it(
    tmp_path: Path,
) -> None:
    """With nothing to settle, a ``.tmp`` older than an hour is named and ``--repair``
    removes it; a younger one may be a live app's batch being written: left alone."""
    store = tmp_path / "store"
    _spool_batches(store, 1)
    Store(store).scan().collect()  # settled: nothing pending
    half, young = (spool.spool_dir(store) / f".{n}.msgpack.tmp" for n in ("old", "young"))
    for path in (half, young):
        path.write_bytes(b"\x82")
    old = half.stat().st_mtime - spool.STALE_TEMPORARY_S - 60
    os.utime(half, (old, old))

    outcome = _store_check(store)
    assert outcome.exit_code == 1, outcome.output
    assert f"{half}: half-written spool file of a killed app" in outcome.stdout
    assert str(young) not in outcome.stdout
    outcome = _store_check(store, "--repair")
    assert outcome.exit_code == 0, outcome.output
    assert f"repaired: removed {half}" in outcome.stdout
    assert not half.exists() and young.exists()
    assert _store_check(store).exit_code == 0


def _store_check(store: Path, *options: str) -> Any:
    from click.testing import CliRunner

    from llmtrace.cli import cli

    return CliRunner().invoke(cli, ["store", "check", *options, "--store", str(store)])


@pytest.mark.parametrize("where", ["name", "model"])
def test_a_span_with_a_lone_surrogate_is_rejected_not_its_batch(tmp_path: Path, where: str) -> None:
    """A lone surrogate (``\\udcff``: text ``os.fsdecode`` or a cut UTF-16 string makes) in a
    span's rows cannot be encoded in a spool file: the exporter failed the whole batch and
    every call in it was lost. As the import does, it rejects that span and spools the rest."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("app")
    for number, odd in enumerate([False, True]):
        usage = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini\udcff" if odd and where == "model" else "gpt-4o",
            "gen_ai.usage.input_tokens": 100 + number,
            "gen_ai.usage.output_tokens": 10,
        }
        name = "chat \udcff" if odd and where == "name" else "chat"
        with tracer.start_as_current_span(name, attributes=usage):
            pass
    store = tmp_path / "store"
    exporter = StoreSpanExporter(store)
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    (path,) = spool.pending(store)
    assert spool.read(path).header["rejected"] == 1
    rows = Store(store).scan().collect()
    assert rows["input_tokens"].to_list() == [100]


def test_a_file_set_aside_in_place_is_not_removed_by_the_next_settle(tmp_path: Path) -> None:
    """A file the batch step cannot take is kept for the user (moved aside, or left in place
    when that fails). Left in place, it was still among the files the settle's carry (an
    open trace of the same app) replaces, so the next settle removed it unread."""
    store = tmp_path / "store"
    _spool_batches(store, 2)
    bad = _text_token_counts(spool.pending(store)[1])
    StoreSpanExporter(store).export(_spans(2, trace=9)[:-1])  # its root has not ended
    (spool.spool_dir(store) / spool.REJECTED).write_text("not a folder: the move fails")
    problems: list[Any] = []
    first = Store(store, on_problem=problems.append).settle()
    assert first is not None and first.rejected_files == 1 and first.carried_calls == 2
    assert "left in place" in problems[0].message
    assert bad.exists()
    Store(store, on_problem=problems.append).settle()
    assert bad.exists()


def test_the_twin_of_a_span_rejected_for_a_lone_surrogate_is_spooled_with_its_call(
    tmp_path: Path,
) -> None:
    """A span deferring to a span written lately is spooled without its call (its twin has
    it). A span rejected for a lone surrogate wrote no call: the twin deferring to it must
    (held back for a target that is not written, it is spooled at the latest at shutdown)."""
    memory, provider = memory_provider()
    tracer = provider.get_tracer("app")
    usage = dict(CHAT_USAGE)
    with tracer.start_as_current_span("chat \udcff", attributes=usage) as odd:
        target = f"{odd.get_span_context().span_id:016x}"
    with tracer.start_as_current_span(
        "chat", attributes={**usage, "llmtrace.priced_span_id": target}
    ):
        pass
    first, twin = memory.get_finished_spans()
    store = tmp_path / "store"
    exporter = StoreSpanExporter(store)
    assert exporter.export([first]) == SpanExportResult.SUCCESS  # rejected: nothing to spool
    assert exporter.export([twin]) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert Store(store).scan().collect()["input_tokens"].to_list() == [100]


def _text_token_counts(path: Path) -> Path:
    """Rewrite a spool file so its rows decode but are not call records (every call's input
    token count is text); returns ``path``."""
    doc = msgspec.msgpack.decode(path.read_bytes())
    column = doc["header"]["fields"]["calls"].index("input_tokens")
    for row in doc["calls"]:
        row[column] = "many"
    path.write_bytes(msgspec.msgpack.encode(doc))
    return path
