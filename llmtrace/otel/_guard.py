"""The live side's safety net: swallow, log once, count.

Telemetry runs inside other people's programs, so no exception raised by llmtrace may reach the
app. Every entry point the app can reach (span processor callbacks, the completion hook,
exporters, metric callbacks) catches broad exceptions and hands them here. Logging each *place*
once (not each occurrence) keeps a broken price table from flooding the app's logs; the counts
stay available (``error_counts()`` and the ``llmtrace.errors`` metric) so the failure is not
silent either.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

logger = logging.getLogger("llmtrace.otel")

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_logged: set[str] = set()


def swallow(where: str, exc: BaseException) -> None:
    """Record that ``exc`` was raised at ``where``; log it the first time ``where`` fails."""
    try:
        with _lock:
            _counts[where] += 1
            first = where not in _logged
            _logged.add(where)
        if first:
            logger.warning(
                "llmtrace: error in %s (logged once, counted; the app is not affected): %r",
                where,
                exc,
                exc_info=exc,
            )
    except Exception:  # noqa: BLE001 - the safety net itself must never raise
        pass


def count(where: str) -> None:
    """Count a failure at ``where`` that its caller reports itself (no log line here)."""
    try:
        with _lock:
            _counts[where] += 1
    except Exception:  # noqa: BLE001
        pass


def error_counts() -> dict[str, int]:
    """Errors swallowed so far, by place (for tests, health checks and the errors metric)."""
    with _lock:
        return dict(_counts)


def total_errors() -> int:
    """All errors swallowed so far."""
    with _lock:
        return sum(_counts.values())


def reset() -> None:
    """Forget counts and logged places (tests use this between cases)."""
    with _lock:
        _counts.clear()
        _logged.clear()
