"""Plausible ranges for values every importer reads: one place, so all edges agree.

A call record stores counts as Int64 and times as microseconds since 1970. A value outside
these ranges is not a strange call, it is broken data (an overflow, a float where a count
belongs, a clock set to year 9999); importers reject the record that carries it with a problem
naming the field, so one bad value never aborts a batch of good ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

INT64_MAX = 2**63 - 1
# The largest count a JSON number (a double) holds exactly; Langfuse sends counts as JSON
# numbers, and below it a sum of a dozen counts cannot overflow Int64.
MAX_JSON_COUNT = 2**53
# Calls from before 2000 or after 2100 are clock or unit errors (seconds read as nanoseconds).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
EARLIEST_NS = int(EARLIEST.timestamp()) * 1_000_000_000
LATEST_NS = int(LATEST.timestamp()) * 1_000_000_000


def time_problem_ns(value: int) -> str | None:
    """Why a Unix-nanosecond time is implausible, or None when it is fine."""
    if value < EARLIEST_NS or value >= LATEST_NS:
        return f"{value} is not a time between {EARLIEST:%Y} and {LATEST:%Y}"
    return None


def time_problem(value: datetime) -> str | None:
    """Why a datetime is implausible for a call, or None when it is fine."""
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    if moment < EARLIEST or moment >= LATEST:
        return f"{value.isoformat()} is not a time between {EARLIEST:%Y} and {LATEST:%Y}"
    return None


__all__ = [
    "EARLIEST",
    "EARLIEST_NS",
    "INT64_MAX",
    "LATEST",
    "LATEST_NS",
    "MAX_JSON_COUNT",
    "time_problem",
    "time_problem_ns",
]
