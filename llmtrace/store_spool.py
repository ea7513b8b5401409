"""Settling the live exporter's spool (``llmtrace.spool``) into the store: the reader's side.

Each spool file is one batch of the app's spans as the importer's plain rows. Settling reads
the files in name order (a process's batches in the order it wrote them) and runs a *group*
of them through the importer's batch step as one input (``_Stream(accuracy, "live", 0).step``
with ``final=True``: merging, actions, agents, scores), then ``price_calls`` with the price
file the app used, exactly as ``llmtrace import otlp`` finishes the same spans read as one
file. So a call whose spans, or whose trace's root, came in different batches is finished
with all of them, and the Polars step's fixed cost (~45 ms) is paid per group, not per batch.
A group ends at ``GROUP_SPANS`` spans (memory: every span is a tree row, and an app's
spans are mostly not LLM calls) or where the app's price or config file changes; a trace split across two groups is finished in each as an import with
``--batch-spans`` would finish it at a batch boundary. A file whose rows the step cannot take
is found by stepping the group's files one by one, and moved aside.

The group's calls are added in one ``Store.append`` (one read of the stored keys per day), and
only then are its files removed: a crash in between leaves them to be settled again, which
adds nothing (``append`` skips stored keys). Evaluations that match no call of their group are
dropped, as the exporter always dropped those of its batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from llmtrace import spool
from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config, load_config
from llmtrace.importers.otlp import DEFAULT_BATCH_SPANS, _Collector, _Stream
from llmtrace.pricing import price_calls
from llmtrace.store_journal import fsync_dir

if TYPE_CHECKING:
    from llmtrace.store import Store

GROUP_SPANS = DEFAULT_BATCH_SPANS
"""Spans finished per step and ``append`` (``import otlp``'s default batch, 0.7-0.8 GB peak
there): bounds a settle's memory however much was spooled."""


@dataclass
class SettleResult:
    """What one settle did: spool files taken, calls added and already stored, files kept."""

    files: int = 0
    added: int = 0
    duplicates: int = 0
    rejected_files: int = 0
    left: int = 0


Progress = Callable[[int, int], None]
"""Called with (files settled so far, files to settle)."""


def settle(store: Store, *, progress: Progress | None = None) -> SettleResult:
    """Settle ``store``'s spool files; the caller holds the store's writer lock."""
    result = SettleResult()
    spool.remove_stale_temporaries(store.path)
    files = spool.pending(store.path)
    if not files:
        return result
    context = _Context(store)
    group: list[spool.SpoolBatch] = []
    count = 0
    for number, path in enumerate(files, start=1):
        batch = context.read(path, result)
        if batch is not None:
            if group and (count >= GROUP_SPANS or _key(batch) != _key(group[0])):
                _add(store, context, group, result)
                group, count = [], 0
            group.append(batch)
            count += len(batch.tree)
        if progress is not None:
            progress(number, len(files))
    _add(store, context, group, result)
    return result


def _key(batch: spool.SpoolBatch) -> tuple[Any, Any]:
    """What a group's files must share: the app's config (accuracy) and price file."""
    return batch.header.get("config"), batch.header.get("prices")


def _add(
    store: Store, context: _Context, group: list[spool.SpoolBatch], result: SettleResult
) -> None:
    """Finish, price and append a group's calls in one go, then remove its files (in that
    order: see above)."""
    if not group:
        return
    try:
        calls = context.calls_of(group)
    except _STEP_ERRORS:
        if len(group) == 1:
            context.reject(group[0].path, result)
            return
        for batch in group:  # find the file the step cannot take; settle the others alone
            _add(store, context, [batch], result)
        return
    if calls.height:
        added = store._append_held(calls)
        result.added += added.added
        result.duplicates += added.duplicates
    for batch in group:
        batch.path.unlink(missing_ok=True)
        result.files += 1
    fsync_dir(group[0].path.parent)


_STEP_ERRORS = (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError)


class _Context:
    """Price books and accuracy settings by file name, loaded once per settle."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.books: dict[str | None, Any] = {}
        self.accuracies: dict[str | None, AccuracyConfig] = {}

    def read(self, path: Path, result: SettleResult) -> spool.SpoolBatch | None:
        """One spool file; None when it is gone, too new or unreadable (then reported)."""
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

    def calls_of(self, group: list[spool.SpoolBatch]) -> pl.DataFrame:
        """The group's priced call records: its files' rows as one input to the batch step."""
        sink = _Collector(False)  # keep_content acts when rows are made, in the app
        for batch in group:
            sink.calls.extend(batch.calls)
            sink.tree.extend(batch.tree)
            sink.roots.extend(batch.roots)
            sink.evaluations.extend(batch.evaluations)
            sink.spans += int(batch.header.get("spans") or 0)
            sink.llm_spans += int(batch.header.get("llm_spans") or 0)
            sink.rejected += int(batch.header.get("rejected") or 0)
        config, prices = _key(group[0])
        step = _Stream(self.accuracy(config), "live", 0).step(sink, final=True)
        if not step.calls.height:
            return step.calls
        return price_calls(step.calls, self.book(prices))

    def reject(self, path: Path, result: SettleResult) -> None:
        self._move_aside(path, "its rows cannot be read as call records", result)

    def _move_aside(self, path: Path, why: str, result: SettleResult) -> None:
        """Move an unreadable file aside (kept, not deleted) and report it once."""
        result.rejected_files += 1
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
