"""Hostile values and the mutations that plant them: shared by the fuzz tests
(tests/test_fuzz_edges.py) and the mutation run (bench/fuzz_edges.py).

Every value here once broke an import somewhere (issue 12): integers beyond Int64, floats where
counts belong, NaN and infinities as numbers and as text, times far outside any call, invalid
Unicode, control and bidi characters that forge or garble output, and nesting deeper than the
interpreter's stack.
"""

from __future__ import annotations

import copy
import random
from typing import Any

INTS = [2**63, 2**64, 2**63 - 1, -(2**63) - 1, 10**30, -5, 0]
FLOATS = [1e20, 1e300, float("nan"), float("inf"), float("-inf"), -0.0, 1.5, 2.0**63]
TEXTS = [
    "1e300",
    "NaN",
    "inf",
    "-1",
    "99999999999999999999",
    "x\udfff",
    "\ud800",
    "id\n/etc/passwd:1: span 1: forged",
    "\x1b[2J\x1b]0;title\x07",
    "\u202eevil",
    "",
    " ",
    "9999-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
]
SHAPES: list[Any] = [None, True, [], {}, [1, 2], {"a": {"b": 1}}]


def deep(depth: int = 3000) -> Any:
    """A list nested ``depth`` levels (deeper than the default recursion limit)."""
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[Any] = [*INTS, *FLOATS, *TEXTS, *SHAPES]


def paths(value: Any, prefix: tuple = (), limit: int = 40) -> list[tuple]:
    """Every path (keys and indexes) to a leaf or container inside ``value``, at most ``limit``
    levels deep (a planted deep value is a leaf here)."""
    found = [prefix] if prefix else []
    if len(prefix) >= limit:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key), limit))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index), limit))
    return found


def plant(document: Any, path: tuple, value: Any) -> Any:
    """``document`` with ``value`` at ``path``: the containers along the path are copied, the
    rest is shared (a deeply nested value would not survive ``copy.deepcopy``)."""
    if not path:
        return value
    copied = copy.copy(document)
    copied[path[0]] = plant(document[path[0]], path[1:], value)
    return copied


def mutate(document: Any, rng: random.Random, count: int = 1) -> Any:
    """``document`` with ``count`` randomly chosen places set to hostile values."""
    for _ in range(count):
        spots = paths(document)
        if not spots:
            return document
        value = rng.choice([*HOSTILE, "DEEP"])
        document = plant(document, rng.choice(spots), deep() if value == "DEEP" else value)
    return document
