"""The live side's pricer: the price book loaded off the app's thread, one call priced at a time."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

from llmtrace.otel import _guard
from llmtrace.otel.spans import TOKEN_FIELDS


class LazyPriceBook:
    """Loads the PriceBook once, on first use or in a background thread started by ``init``.

    Loading imports genai-prices and reads its data (~0.5 s): doing it on the app's first LLM
    call would add that to one request, doing it at ``import llmtrace`` would slow every import.
    A price file that cannot be read is reported through the guard and the bundled prices used.
    """

    def __init__(self, path: Any = None) -> None:
        self._path = path
        self._book: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        book = self._book
        if book is not None:
            return book
        with self._lock:
            if self._book is None:
                from llmtrace.price_book import PriceBook

                try:
                    self._book = PriceBook.load(self._path)
                except Exception as exc:  # noqa: BLE001 - a bad price file must not stop pricing
                    _guard.swallow("pricing.load", exc)
                    self._book = PriceBook()
            return self._book

    def warm_in_background(self) -> None:
        """Start loading now, off the app's thread."""

        def load() -> None:
            try:
                self.get()
            except Exception as exc:  # noqa: BLE001
                _guard.swallow("pricing.warm", exc)

        thread = threading.Thread(target=load, name="llmtrace-prices", daemon=True)
        thread.start()
        atexit.register(_finish_loading, thread)

    def __call__(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        """Price one call record with the loaded book."""
        return self.get().price_one(
            call.get("provider"),
            call.get("model"),
            call["start_time"],
            **{field: call.get(field) for field in TOKEN_FIELDS},
            service_tier=call.get("service_tier"),
        )


# How long an exiting app waits for a load still under way (it reads bundled data only and
# takes about a second on a loaded machine; a price file on a hung disk must not hold exit).
_EXIT_WAIT_SECONDS = 10.0


def _finish_loading(thread: threading.Thread) -> None:
    """At exit, let a price load still under way finish before the interpreter finalizes.

    Why: a daemon thread still inside genai-prices (pydantic-core's native code) when the
    interpreter finalizes is stopped by a forced unwind that aborts the whole process
    (SIGABRT, "FATAL: exception not rethrown"): 4 of 60 apps that exited right after
    ``init()`` died that way. Daemon, so an app that forks or never exits is not held by it.
    """
    thread.join(_EXIT_WAIT_SECONDS)


def default_pricer() -> LazyPriceBook:
    """A pricer over the default price book (``$LLMTRACE_PRICES`` or the config's file)."""
    return LazyPriceBook()
