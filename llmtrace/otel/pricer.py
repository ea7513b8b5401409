"""The live side's pricer: the price book loaded off the app's thread, one call priced at a time."""

from __future__ import annotations

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

        threading.Thread(target=load, name="llmtrace-prices", daemon=True).start()

    def __call__(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        """Price one call record with the loaded book."""
        return self.get().price_one(
            call.get("provider"),
            call.get("model"),
            call["start_time"],
            **{field: call.get(field) for field in TOKEN_FIELDS},
            service_tier=call.get("service_tier"),
        )


def default_pricer() -> LazyPriceBook:
    """A pricer over the default price book (``$LLMTRACE_PRICES`` or the config's file)."""
    return LazyPriceBook()
