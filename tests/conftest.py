"""Fixtures shared by the test modules.

``prices``: the live side's price book, loaded once per module (genai-prices plus no user
overrides). Seven live-side modules defined it, each the same six lines (duplicates --change).
A module that needs another book defines its own ``prices``, which takes precedence.
"""

from __future__ import annotations

import pytest

from llmtrace.otel.pricer import LazyPriceBook


@pytest.fixture(scope="module")
def prices() -> LazyPriceBook:
    book = LazyPriceBook()
    book.get()
    return book
