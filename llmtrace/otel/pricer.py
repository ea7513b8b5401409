"""The live side's pricer: the price book loaded off the app's thread, one call priced at a time."""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from llmtrace.otel import _guard


class LazyPriceBook:
    """Loads the PriceBook once, when the first call is priced.

    Loading imports genai-prices and builds its data (~0.2-0.3 s of CPU, bench_startup.py): at
    ``import llmtrace`` it would slow every import, at ``init()`` (even on a background thread)
    every app start, also of apps that make no LLM call. The live side prices on its worker
    thread (``CostSpanProcessor``), so the first call's span waits for the load there, not the
    app's request. A price file that cannot be read is reported through the guard and the
    bundled prices used.
    """

    def __init__(self, path: Any = None) -> None:
        self._path = path
        self._book: Any = None
        self._lock = threading.Lock()
        _BOOKS.add(self)

    @property
    def path(self) -> Any:
        """The price file given (None: ``PriceBook.load`` resolves ``$LLMTRACE_PRICES`` or the
        config's): the store exporter records what it resolves to in each spool file."""
        return self._path

    @property
    def loaded(self) -> bool:
        """Whether the book is loaded (pricing now takes microseconds, not a load): the
        processor works a span on the app's thread only then (``inline_when_idle``)."""
        return self._book is not None

    def get(self) -> Any:
        book = self._book
        if book is not None:
            return book
        with self._lock:  # held for the whole load: what an exiting app waits on
            if self._book is None:
                from llmtrace.price_book import PriceBook

                try:
                    self._book = PriceBook.load(self._path)
                except Exception as exc:  # noqa: BLE001 - a bad price file must not stop pricing
                    _guard.swallow("pricing.load", exc)
                    self._book = PriceBook()
            return self._book

    def __call__(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        """Price one call record with the loaded book."""
        return dict(zip(PRICE_FIELDS, self.values(call), strict=True))

    def values(self, call: Mapping[str, Any]) -> tuple[Any, ...]:
        """``__call__``'s values as a tuple in ``PRICE_FIELDS`` order (``price_values``): the
        live worker's form, written into the record and the span's attributes without a dict
        of costs in between."""
        book = self._book
        if book is None:
            book = self.get()
        try:  # a call record holds every field: one C call takes them in price_counts' order
            fields = _price_fields(call)
        except KeyError:
            get = call.get
            fields = (
                get("provider"),
                get("model"),
                call["start_time"],
                get("input_tokens"),
                get("cache_read_tokens"),
                get("cache_write_tokens"),
                get("cache_write_1h_tokens"),
                get("output_tokens"),
                get("reasoning_tokens"),
                get("service_tier"),
            )
        return book.price_values(*fields)


_price_fields = itemgetter(
    "provider",
    "model",
    "start_time",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
    "service_tier",
)
"""The call-record fields ``PriceBook.price_counts`` takes, in its order."""
PRICE_FIELDS = (
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "reasoning_cost",
    "request_cost",
    "total_cost",
    "price_source",
    "price_status",
)
"""The fields a price gives, in ``PriceBook.price_counts``' order (repeated here so the live
side does not import the price book while the app starts; a test checks they agree)."""

# How long an exiting app waits for a load still under way (it reads bundled data only and
# takes about a second on a loaded machine; a price file on a hung disk must not hold exit).
_EXIT_WAIT_SECONDS = 10.0
_BOOKS: weakref.WeakSet[LazyPriceBook] = weakref.WeakSet()


def _finish_loading() -> None:
    """At exit, let a price load still under way (on any thread) finish before the
    interpreter finalizes.

    Why: a daemon thread (the pricing worker) still inside genai-prices (pydantic-core's
    native code) when the interpreter finalizes is stopped by a forced unwind that aborts the
    whole process (SIGABRT, "FATAL: exception not rethrown"): 4 of 60 apps that exited right
    after starting a load died that way. A loading book holds its lock for the whole load, so
    taking the lock waits for it; a book not loading gives it at once.
    """
    deadline = time.monotonic() + _EXIT_WAIT_SECONDS
    for book in list(_BOOKS):
        if book._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            book._lock.release()


# Registered when this module is imported, i.e. before init() creates its tracer provider:
# exit handlers run last-registered first, so the provider's shutdown (which flushes the
# pricing worker, and may start a load there) runs before this waits.
atexit.register(_finish_loading)


def _after_fork_in_child() -> None:
    """A load under way in the parent when it forked has no thread in the child, but its lock
    would stay taken there: every book gets a fresh one (a loaded book keeps its data)."""
    for book in list(_BOOKS):
        book._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def default_pricer() -> LazyPriceBook:
    """A pricer over the default price book (``$LLMTRACE_PRICES`` or the config's file)."""
    return LazyPriceBook()
