"""The live processor's memory of recent calls finds exactly the twins its plain scan found.

``RecentCalls.find`` keeps the calls without a response id apart, so a call with an id (every
OpenAI or Anthropic call) no longer walks the 64 most recent calls to skip them one by one. The
plain scan is kept here as the reference; random sequences of remembered and looked-up calls
(response ids from a small pool so some repeat, times within and beyond the tolerance, two
emitters) must give the same twin, or none, at every step.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from llmtrace import twins


class ReferenceRecent:
    """``RecentCalls`` before the change: one scan over the ``scan`` most recent calls."""

    def __init__(self, size: int, scan: int) -> None:
        self.recent: deque[Mapping[str, Any]] = deque(maxlen=size)
        self.by_id: dict[str, Mapping[str, Any]] = {}
        self.paired: set[str] = set()
        self.scan = scan

    def remember(self, call: Mapping[str, Any]) -> None:
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            if self.by_id.get(old.get("response_id")) is old:  # type: ignore[arg-type]
                del self.by_id[old["response_id"]]
            self.paired.discard(old.get("span_id"))  # type: ignore[arg-type]
        self.recent.append(call)
        if call.get("response_id") is not None:
            self.by_id.setdefault(call["response_id"], call)

    def find(self, call: Mapping[str, Any]) -> Mapping[str, Any] | None:
        response_id = call.get("response_id")
        if response_id is not None:
            same = self.by_id.get(response_id)
            if same is not None and twins.are_twins(call, same):
                return same
        best, best_distance = None, None
        for index, other in enumerate(reversed(self.recent)):
            if index >= self.scan:
                break
            if other.get("span_id") in self.paired:
                continue
            if response_id is not None and other.get("response_id") is not None:
                continue
            if twins.are_twins(call, other):
                gap = twins.distance(call, other)
                if best_distance is None or gap < best_distance:
                    best, best_distance = other, gap
        if best is not None:
            self.paired.add(best.get("span_id"))  # type: ignore[arg-type]
            self.paired.add(call.get("span_id"))  # type: ignore[arg-type]
        return best


def random_call(rng: random.Random, number: int, base: datetime) -> dict[str, Any]:
    start = base + timedelta(milliseconds=number * 7 + rng.choice((0, 3, 20, 80)))
    return {
        "span_id": f"s{number}",
        "trace_id": f"t{rng.randrange(4)}",
        "response_id": rng.choice((None, None, f"r{rng.randrange(30)}")),
        "service": "shop",
        "provider": "openai",
        "model": rng.choice(("gpt-4o", "gpt-4o-mini")),
        "request_model": None,
        "input_tokens": rng.choice((None, 100, 200)),
        "output_tokens": rng.choice((None, 10)),
        "start_time": start,
        "end_time": start + timedelta(milliseconds=rng.choice((0, 5, 30))),
        twins.EMITTER: rng.choice(("sdk|chat", "openllmetry|openai.chat")),
        # fields of a real record the twin rules never read (not kept by RecentCalls)
        "prefix_hashes": [rng.getrandbits(64) for _ in range(3)],
        "total_cost": 0.001,
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("size", "scan"), [(4096, 64), (40, 8), (10, 16)])
def test_find_agrees_with_the_plain_scan(seed: int, size: int, scan: int) -> None:
    rng = random.Random(seed)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    fast, reference = twins.RecentCalls(size=size, scan=scan), ReferenceRecent(size, scan)
    found = 0
    for number in range(1500):
        call = random_call(rng, number, base)
        got, expected = fast.find(call), reference.find(call)
        assert (got or {}).get("span_id") == (expected or {}).get("span_id"), number
        found += expected is not None
        if expected is None or rng.random() < 0.3:
            fast.remember(call)
            reference.remember(call)
        if rng.random() < 0.002:
            fast.clear()
            reference = ReferenceRecent(size, scan)
    assert found > 50  # the sequences do exercise matches, by id and by time


def test_only_the_fields_the_twin_rules_read_are_kept() -> None:
    """The processor remembers 4,096 calls: whole records (~45 fields, fingerprint lists) were
    megabytes an app kept for nothing."""
    rng = random.Random(1)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    recent = twins.RecentCalls()
    call = random_call(rng, 0, base)
    recent.remember(call)
    twin = {**call, "span_id": "other", twins.EMITTER: "another|emitter", "response_id": None}
    found = recent.find(twin)
    assert found is not None and found["span_id"] == call["span_id"]
    assert set(found) == set(twins.TWIN_FIELDS)
    assert "prefix_hashes" not in found
