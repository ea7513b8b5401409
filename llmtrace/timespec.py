"""Parse the ``--since`` / ``--until`` values every command accepts.

One parser for all commands, so ``7d`` means the same thing to ``costs`` and ``audit``.
Accepted: a date (``2026-11-01``, midnight UTC), a date-time in ISO 8601 (naive means UTC),
``now``, ``today``, or a relative span back from now: ``90m``, ``24h``, ``7d``, ``2w``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(value: str, *, now: datetime | None = None) -> datetime:
    """Turn a user's time expression into an aware UTC datetime.

    Raises ``ValueError`` with the accepted forms when ``value`` is none of them.
    """
    now = now or datetime.now(UTC)
    text = value.strip()
    lowered = text.lower()
    if lowered == "now":
        return now
    if lowered == "today":
        return datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        if len(text) == 10:
            parsed_date = date.fromisoformat(text)
            return datetime.combine(parsed_date, datetime.min.time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"cannot read time {value!r}: use a date (2026-11-01), a date-time "
            "(2026-11-01T12:00:00Z), 'now', 'today' or a span back from now (24h, 7d, 2w)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
