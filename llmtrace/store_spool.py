"""Settling the live exporter's spool (``llmtrace.spool``) into the store: the reader's side.

Each spool file is one batch of the app's spans as the importer's plain rows. Settling turns
each file into call records exactly as the exporter did before it spooled: the importer's
batch step (``_Stream(accuracy, "live", 0).step``: merging, actions, agents, scores) on that
file alone, and ``price_calls`` with the price file the app used. Per file, so the records do
not depend on when, or by whom, the spool is settled. Then the calls of many files are added
in one ``Store.append`` (one read of the stored keys per day and group, instead of one per
batch as when the app wrote each batch itself), and only then are the files removed: a crash
in between leaves them to be settled again, which adds nothing (``append`` skips stored keys).

Evaluations that match no call of their batch are dropped, as the exporter always did.
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
from llmtrace.importers.otlp import _Collector, _Stream
from llmtrace.pricing import price_calls
from llmtrace.store_journal import fsync_dir

if TYPE_CHECKING:
    from llmtrace.store import Store

GROUP_CALLS = 200_000
"""Calls settled per ``append``: bounds a settle's memory however much was spooled."""


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
    group: list[tuple[Path, pl.DataFrame]] = []
    count = 0
    for number, path in enumerate(files, start=1):
        calls = context.calls_of(path, result)
        if calls is not None:
            group.append((path, calls))
            count += calls.height
        if count >= GROUP_CALLS:
            _add(store, group, result)
            group, count = [], 0
        if progress is not None:
            progress(number, len(files))
    _add(store, group, result)
    return result


def _add(store: Store, group: list[tuple[Path, pl.DataFrame]], result: SettleResult) -> None:
    """Append a group's calls in one go, then remove its files (in that order: see above)."""
    if not group:
        return
    added = store._append_held(pl.concat([calls for _, calls in group], how="vertical_relaxed"))
    result.added += added.added
    result.duplicates += added.duplicates
    for path, _ in group:
        path.unlink(missing_ok=True)
        result.files += 1
    fsync_dir(group[0][0].parent)


class _Context:
    """Price books and accuracy settings by file name, loaded once per settle."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.books: dict[str | None, Any] = {}
        self.accuracies: dict[str | None, AccuracyConfig] = {}

    def calls_of(self, path: Path, result: SettleResult) -> pl.DataFrame | None:
        """One file's priced call records; None when it is gone, too new or unreadable."""
        try:
            batch = spool.read(path)
        except FileNotFoundError:
            return None  # settled by another reader meanwhile
        except spool.SpoolTooNew as exc:
            result.left += 1
            self.store._problem(path, str(exc))
            return None
        except (spool.SpoolError, OSError) as exc:
            self._reject(path, str(exc), result)
            return None
        header = batch.header
        sink = _Collector(bool(header.get("keep_content")))
        sink.calls, sink.tree, sink.roots = batch.calls, batch.tree, batch.roots
        sink.evaluations = batch.evaluations
        sink.spans = int(header.get("spans") or 0)
        sink.llm_spans = int(header.get("llm_spans") or 0)
        sink.rejected = int(header.get("rejected") or 0)
        try:
            step = _Stream(self.accuracy(header.get("config")), "live", 0).step(sink, final=True)
            if not step.calls.height:
                return step.calls
            return price_calls(step.calls, self.book(header.get("prices")))
        except (pl.exceptions.PolarsError, TypeError, ValueError, OverflowError) as exc:
            self._reject(path, f"its rows cannot be read as call records ({exc})", result)
            return None

    def _reject(self, path: Path, why: str, result: SettleResult) -> None:
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
