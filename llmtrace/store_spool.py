"""Settling the live exporter's spool (``llmtrace.spool``) into the store: the reader's side.

Each spool file is one batch of the app's spans as the importer's plain rows. Settling reads
the files in name order (a process's batches in the order it wrote them) and runs a *group*
of them through the importer's batch step as one input (``_Stream(accuracy, "live", 0).step``
with ``final=True``: merging, actions, agents, scores), then ``price_calls`` with the price
file the app used, exactly as ``llmtrace import otlp`` finishes the same spans read as one
file. So a call whose spans, or whose trace's root, came in different batches is finished
with all of them, and the Polars step's fixed cost (~45 ms) is paid per group, not per batch.
A group ends at ``GROUP_SPANS`` spans (memory: every span is a tree row, and an app's spans
are mostly not LLM calls) or where the app's price or config file changes. A file whose rows
the step cannot take is found by stepping the group's parts one by one, and moved aside.

The importer's streaming policies, applied across settles (``llmtrace.spool_carry``):

* Open traces: a trace's calls are finished once its local root has been spooled (a span
  without a parent, or whose parent is in another process), since the root ends last and
  names the calls' action. Until then its rows are held back from one group to the next and,
  at the end of the settle, *carried*: written back into the spool as a carry file. A trace is
  finished as it is once it was first spooled ``spool.CARRY_S`` ago (an app that died) or when
  every process that spooled it has shut down (its exporter's final batch). So a reader sees a
  running trace's calls only once it ends. A span arriving after its trace's root was
  settled is finished at once, with the root's name (the settles' memory of closed traces);
  not after a local root whose parent is in another process, which ends one request of the
  trace here: a later request's spans wait for their own.
* Late scores: an evaluation not written with a call new in its group (its call was stored
  by an earlier settle or import, or comes later) goes to ``Store.attach_scores`` once, after
  every group was appended (under the lock already held: ``_attach_scores_held``); one that
  matches no stored call either (a judge's trace spooled before the call's) is carried until
  its call arrives, and dropped as matching no call ``CARRY_S`` after it was spooled.

Nothing is lost or doubled by a crash: the groups' calls are appended, then the scores
attached, then the carry files written (atomically, naming the files they replace), and only
then are the files removed. A crash before the carry leaves the files to be settled again,
which adds nothing (``append`` skips stored keys, ``attach_scores`` adds a score only as far
as the batch gives more copies than the call holds); a crash after it leaves files a carry
replaces, which the next settle removes unread.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from llmtrace import spool
from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config, load_config
from llmtrace.importers.otlp import DEFAULT_BATCH_SPANS, _Collector, _Stream
from llmtrace.pricing import price_calls
from llmtrace.record import KEY_FIELDS
from llmtrace.spool_carry import (
    Part,
    Traces,
    read_memory,
    replaced_by_carries,
    waiting_apart,
    write_carry,
    write_memory,
)
from llmtrace.store_journal import fsync_dir

if TYPE_CHECKING:
    from llmtrace.store import Store

GROUP_SPANS = DEFAULT_BATCH_SPANS
"""Spans finished per step and ``append`` (``import otlp``'s default batch, 0.7-0.8 GB peak
there): bounds a settle's memory however much was spooled."""


@dataclass
class SettleResult:
    """What one settle did: spool files taken, calls added and already stored, files kept;
    late scores attached to stored calls, rows and evaluations carried to the next settle,
    evaluations dropped because no call matched them within ``spool.CARRY_S``."""

    files: int = 0
    added: int = 0
    duplicates: int = 0
    rejected_files: int = 0
    left: int = 0
    scores: int = 0
    carried_calls: int = 0
    carried_scores: int = 0
    dropped_scores: int = 0


Progress = Callable[[int, int], None]
"""Called with (files settled so far, files to settle)."""

Key = tuple[Any, Any]


@dataclass
class _Key:
    """One (config, price file)'s share of a settle: its files, the rows held back (open
    traces), the evaluations of each step that wait for ``attach_scores``."""

    header: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    held: list[Part] = field(default_factory=list)
    targets: list[pl.DataFrame] = field(default_factory=list)
    evaluations: dict[int, list[Any]] = field(default_factory=dict)


def settle(store: Store, *, progress: Progress | None = None) -> SettleResult:
    """Settle ``store``'s spool files; the caller holds the store's writer lock."""
    with _quiet_gc():
        return _settle(store, progress)


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    """The cyclic GC off for a settle, what existed before it frozen (as ``import otlp`` does
    while reading, ``importers.otlp.stream_otlp``).

    Why: a settle decodes every spooled row as a list (~170k for 100k spans) and the batch
    step makes as many again; each automatic collection rescanned all of them, finding no
    cycle: 0.3-0.4 of the 1.2 CPU s a settle of 100k spans took, 0.15 of the 0.2 s of one
    batch's settle in a store a reader had settled before (bench/bench_settle.py). Between
    groups (``GROUP_SPANS``) ``_settle`` collects once, so a large spool's cycles, if any,
    are freed as the import frees them. Not frozen when the caller froze objects itself
    (unfreezing would thaw those too)."""
    collecting = gc.isenabled()
    gc.disable()
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        yield
    finally:
        if freezing:
            gc.unfreeze()
        if collecting:
            gc.enable()


def _settle(store: Store, progress: Progress | None) -> SettleResult:
    result = SettleResult()
    spool.remove_stale_temporaries(store.path)
    files = spool.pending(store.path)
    if not files:
        return result
    context = _Context(store)
    files = context.drop_replaced(files, result)
    traces = Traces(time.time_ns())
    remembered = read_memory(store.path)
    traces.recall(remembered)
    keys: dict[Key, _Key] = {}
    group: list[Part] = []
    group_key: Key | None = None
    count = 0
    for number, path in enumerate(files, start=1):
        batch = context.read(path, result)
        if batch is not None:
            key = _key(batch)
            if group and group_key is not None and (count >= GROUP_SPANS or key != group_key):
                _step(store, context, keys[group_key], group, traces, result)
                group, count = [], 0
                gc.collect()  # the GC is off (``_quiet_gc``): once per group, not per list
            part = Part.of(batch, number)
            traces.read(part)  # after the step before: its roots close traces from here on
            keys.setdefault(key, _Key(batch.header)).files.append(path)
            group_key = key
            group.extend(waiting_apart(part))
            count += len(batch.tree)
        if progress is not None:
            progress(number, len(files))
    if group and group_key is not None:
        _step(store, context, keys[group_key], group, traces, result)
    # before the carries: a settle dying after one removes the files it replaces unread, so
    # their roots would not be read again and the late spans of those traces would wait
    memory = traces.memory()  # every file read: what _close steps adds no root
    if memory is not None:
        try:
            write_memory(store.path, memory)
        except OSError as exc:  # advisory: failing here, every later settle failed as well
            store._problem(store.path / "state", f"memory of closed traces not written: {exc}")
    for state in keys.values():  # every key's due traces stored before any key's scores
        if state.held:  # are attached: a score in one key's files may be for another's call
            _step(store, context, state, [], traces, result)
    for key, state in keys.items():
        _close(store, context, key, state, traces, result)
    for path in [path for state in keys.values() for path in state.files]:
        if path not in context.rejected:  # only now: every row is stored, attached or carried
            path.unlink(missing_ok=True)
            result.files += 1
    if keys:
        fsync_dir(spool.spool_dir(store.path))
    return result


def _key(batch: spool.SpoolBatch) -> Key:
    """What a group's files must share: the app's config (accuracy) and price file."""
    return batch.header.get("config"), batch.header.get("prices")


def _step(
    store: Store,
    context: _Context,
    state: _Key,
    parts: list[Part],
    traces: Traces,
    result: SettleResult,
) -> None:
    """Finish the rows of ready traces among those held and ``parts``; hold the others."""
    everything = state.held + parts
    ready = traces.ready(set().union(*(part.traces() for part in everything)))
    now: list[Part] = []
    state.held = []
    for part in everything:
        if part.due:  # a carry's waiting evaluations
            now.append(part)
            continue
        finished, later = part.split(ready, traces.local_ready(part))
        if finished is not None and any(finished.lists):  # an app's final word has no rows
            now.append(finished)
        if later is not None:
            state.held.append(later)
    if now:
        _finish(store, context, state, now, traces.root_rows(now), result)


def _finish(
    store: Store,
    context: _Context,
    state: _Key,
    parts: list[Part],
    roots: list[Any],
    result: SettleResult,
) -> None:
    """Step, price and append ``parts`` as one input; keep their evaluations not written
    with a new call for ``attach_scores``. A file whose rows the step cannot take is found
    by stepping the files alone, and moved aside with all its rows; the others are stepped
    together again, or, when only their combination fails, each alone (as 2ae18f3 settled
    a group: raising instead failed every later settle of the spool too)."""
    config, prices = _key_of(state)
    try:
        step = context.step(parts, config, prices, roots)
    except _STEP_ERRORS:
        bad = {part.path for part in parts if not context.steps(part, config, prices, roots)}
        if not bad and len(parts) == 1:
            raise
        for path in bad:
            context.reject(path, result)
        state.held = [part for part in state.held if part.path not in bad]
        rest = [part for part in parts if part.path not in bad]
        for again in [rest] if bad else [[part] for part in rest]:
            if again:
                _finish(store, context, state, again, roots, result)
        return
    appended = store._append_held(step.calls) if step.calls.height else None
    if appended is not None:
        result.added += appended.added
        result.duplicates += appended.duplicates
    targets = step.score_targets
    if targets.is_empty():
        return
    if appended is not None and appended.keys is not None:
        written = targets.filter(pl.col("matched")).join(
            appended.keys, on=list(KEY_FIELDS), how="semi"
        )
        targets = targets.join(written.select("score_id"), on="score_id", how="anti")
    number = len(state.evaluations)
    state.evaluations[number] = [row for part in parts for row in part.lists[3]]
    state.targets.append(
        targets.with_columns(
            pl.format(f"{number}:{{}}", "score_id").alias("score_id"),
            pl.lit(number, dtype=pl.Int64).alias("batch"),
        )
    )


def _key_of(state: _Key) -> Key:
    return state.header.get("config"), state.header.get("prices")


def _close(
    store: Store,
    context: _Context,
    key: Key,
    state: _Key,
    traces: Traces,
    result: SettleResult,
) -> Path | None:
    """End of the settle for one key, its held traces that were due finished (``_settle``):
    attach the late scores, and carry the rest (written before any of the key's files is
    removed)."""
    waiting: list[Any] = []
    if state.targets:
        attached = store._attach_scores_held(pl.concat(state.targets), context.accuracy(key[0]))
        result.scores += attached.attached
        for number, index in sorted(_position(sid) for sid in attached.unmatched_ids):
            row = state.evaluations[number][index]
            if traces.expired(row[0]):
                result.dropped_scores += 1
            else:
                waiting.append(row)
    if not state.held and not waiting:
        return None
    result.carried_calls += sum(len(part.lists[0]) for part in state.held)
    result.carried_scores += len(waiting)
    folder = spool.spool_dir(store.path)
    # not a file set aside: one left in place (its move failed) is the user's to keep, and a
    # carry's next settle removes the files it replaces unread
    replaces = [path for path in state.files if path not in context.rejected]
    return write_carry(
        folder, state.header, state.held, waiting, replaces, traces, first=state.files[0]
    )


def _position(score_id: str) -> tuple[int, int]:
    """(step, evaluation) of a score id ``<step>:e<n>`` (``_finish``)."""
    step, evaluation = score_id.split(":", 1)
    return int(step), int(evaluation.removeprefix("e"))


_STEP_ERRORS = (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError)


class _Context:
    """Price books and accuracy settings by file name, loaded once per settle."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.books: dict[str | None, Any] = {}
        self.accuracies: dict[str | None, AccuracyConfig] = {}
        self.cache: dict[Path, spool.SpoolBatch] = {}  # carries read by ``drop_replaced``
        self.rejected: set[Path] = set()

    def read(self, path: Path, result: SettleResult) -> spool.SpoolBatch | None:
        """One spool file; None when it is gone, too new or unreadable (then reported)."""
        if path in self.cache:
            return self.cache.pop(path)
        try:
            return spool.read(path)
        except FileNotFoundError:
            return None  # settled by another reader meanwhile
        except spool.SpoolTooNew as exc:
            result.left += 1
            self.store._problem(path, str(exc))
            return None
        except (spool.SpoolError, OSError) as exc:
            self._move_aside(path, str(exc), result)
            return None

    def drop_replaced(self, files: list[Path], result: SettleResult) -> list[Path]:
        """``files`` without those a carry among them replaces (removed now: their rows are
        stored or in the carry; a crash came before the settle that wrote it removed them)."""
        carries = [path for path in files if spool.is_carry(path.name)]
        if not carries:
            return files
        batches = [b for path in carries if (b := self.read(path, result)) is not None]
        self.cache = {batch.path: batch for batch in batches}
        replaced = replaced_by_carries(batches)
        kept = []
        for path in files:
            if path.name in replaced:
                path.unlink(missing_ok=True)
            else:
                kept.append(path)
        if len(kept) < len(files):
            fsync_dir(spool.spool_dir(self.store.path))
        return [path for path in kept if path.exists()]

    def step(
        self, parts: list[Part], config: str | None, prices: str | None, roots: Iterable[Any] = ()
    ) -> Any:
        """The parts' priced calls and score targets: their rows as one input to the batch
        step, as ``llmtrace import otlp`` finishes the same spans (``roots``: those of
        traces closed before, for late spans' actions)."""
        sink = _Collector(False)  # keep_content acts when rows are made, in the app
        sink.roots.extend(roots)
        for part in parts:
            calls, tree, roots, evaluations = part.lists
            sink.calls.extend(calls)
            sink.tree.extend(tree)
            sink.roots.extend(roots)
            sink.evaluations.extend(evaluations)
        step = _Stream(self.accuracy(config), "live", 0).step(sink, final=True)
        if step.calls.height:
            step.calls = price_calls(step.calls, self.book(prices))
        return step

    def steps(
        self, part: Part, config: str | None, prices: str | None, roots: Iterable[Any] = ()
    ) -> bool:
        """Whether the batch step takes ``part``'s rows alone."""
        try:
            self.step([part], config, prices, roots)
        except _STEP_ERRORS:
            return False
        return True

    def reject(self, path: Path, result: SettleResult) -> None:
        self._move_aside(path, "its rows cannot be read as call records", result)

    def _move_aside(self, path: Path, why: str, result: SettleResult) -> None:
        """Move an unreadable file aside (kept, not deleted) and report it once."""
        result.rejected_files += 1
        self.rejected.add(path)
        aside = path.parent / spool.REJECTED / path.name
        try:
            aside.parent.mkdir(exist_ok=True)
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError as exc:
            where = f"left in place ({exc})"
        self.store._problem(path, f"spool file not settled: {why}; {where}")

    def book(self, prices: str | None) -> Any:
        if prices not in self.books:
            from llmtrace.price_book import PriceBook

            try:
                self.books[prices] = PriceBook.load(prices) if prices else PriceBook()
            except Exception as exc:  # noqa: BLE001 - as the app's pricer: bundled prices
                self.store._problem(Path(prices), f"price file not read ({exc}); bundled prices")
                self.books[prices] = PriceBook()
        return self.books[prices]

    def accuracy(self, config: str | None) -> AccuracyConfig:
        if config not in self.accuracies:
            try:
                found = load_config(config) if config else Config()
                self.accuracies[config] = AccuracyConfig.from_config(found)
            except Exception as exc:  # noqa: BLE001 - the defaults, reported once
                self.store._problem(Path(config or "."), f"config not read ({exc}); defaults")
                self.accuracies[config] = AccuracyConfig()
        return self.accuracies[config]
