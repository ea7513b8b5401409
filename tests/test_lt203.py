"""LT203 cache-writes-never-read: the premium of unread writes, and the wrong lifetime.

Savings are checked against hand arithmetic with genai-prices' own rates for Claude Sonnet 4.5
(read here with ``calc_price``, not typed): input $3/M, 5-minute write $3.75/M, 1-hour write
$6/M, read $0.30/M.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from genai_prices import Usage, calc_price

from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import conform
from llmtrace.rules.base import AuditContext
from llmtrace.rules.lt203_unread_writes import RULE, evaluate

BOOK = PriceBook()
UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)
MODEL = "claude-sonnet-4-5"


def rate(**usage: int) -> float:
    """USD per token of one usage shape of 10,000 tokens (below Sonnet's 200k-token tier)."""
    price = calc_price(Usage(**usage), model_ref=MODEL, provider_id="anthropic").total_price
    return float(price) / 10_000


def context(**params: Any) -> AuditContext:
    return AuditContext(
        since=SINCE,
        until=UNTIL,
        baseline_since=SINCE - timedelta(days=7),
        baseline_until=SINCE,
        params=params,
        accuracy_scores=(),
        price=lambda frame: price_calls(frame, BOOK),
    )


def calls(
    n: int, gap_s: float, *, prefix: int = 10_000, ttl: str = "1h", reads: bool
) -> pl.DataFrame:
    """n calls ``gap_s`` apart over the window: the first writes the prefix; the others read it
    (``reads``) or write it again; 1-hour or 5-minute writes."""
    rows = []
    for i in range(n):
        read = prefix if reads and i else 0
        write = prefix - read
        rows.append(
            {
                "trace_id": f"t{i}",
                "span_id": "01",
                "provider": "anthropic",
                "model": MODEL,
                "service": "svc",
                "prompt": "brief@v1",
                "start_time": SINCE + timedelta(seconds=60 + gap_s * i),
                "input_tokens": prefix + 500,
                "output_tokens": 100,
                "cache_read_tokens": read,
                "cache_write_tokens": write,
                "cache_write_1h_tokens": write if ttl == "1h" else 0,
                "prefix_hashes": [42, 1000 + i],
                "prefix_tokens": [prefix, prefix + 500],
            }
        )
    frame = pl.DataFrame(rows, schema_overrides={"start_time": pl.Datetime("us", "UTC")})
    return frame.with_columns(pl.col("prefix_hashes").cast(pl.List(pl.UInt64)))


def run(frame: pl.DataFrame) -> tuple[pl.DataFrame, list]:
    ctx = context()
    merged = RULE.merge([RULE.aggregate(conform(frame.lazy()), ctx).collect()], ctx)
    return evaluate(merged, ctx), RULE.decide(merged, ctx)


def test_one_hour_writes_every_two_hours_waste_the_whole_premium() -> None:
    frame = calls(84, 7200.0, reads=False)  # 7 days, every 2 h
    _, [finding] = run(frame)
    assert finding.evidence["action"] == "drop"
    assert finding.evidence["unread_share"] == 1.0
    one_hour = rate(input_tokens=10**4, cache_write_tokens=10**4, cache_write_1h_tokens=10**4)
    premium = one_hour - rate(input_tokens=10**4)
    expected = 84 * 10_000 * premium * 30 / 7
    assert finding.monthly_savings_usd == pytest.approx(expected, rel=1e-6)
    assert "Remove the cache breakpoint" in finding.fix


def test_one_hour_writes_read_seconds_later_should_be_five_minutes() -> None:
    """Calls every 30 s: every 1-hour write is read at once; 5 minutes would do."""
    frame = calls(2000, 30.0, reads=False)
    frame = frame.with_columns(  # every call reads the prefix written by the previous one
        pl.when(pl.int_range(pl.len()) > 0).then(5000).otherwise(0).alias("cache_read_tokens"),
        pl.lit(5000).alias("cache_write_tokens"),
        pl.lit(5000).alias("cache_write_1h_tokens"),
    )
    _, [finding] = run(frame)
    assert finding.evidence["action"] == "to_5m"
    assert finding.evidence["share_of_1h_writes_next_call_within_5m"] == 1999 / 2000  # last: none
    w5 = rate(input_tokens=10**4, cache_write_tokens=10**4)
    w1h = rate(input_tokens=10**4, cache_write_tokens=10**4, cache_write_1h_tokens=10**4)
    days = finding.evidence["run_rate_basis"]["days_with_data"]
    assert finding.monthly_savings_usd == pytest.approx(2000 * 5000 * (w1h - w5) * 30 / days)


def test_five_minute_writes_read_within_their_lifetime_are_not_flagged() -> None:
    table, findings = run(calls(3000, 120.0, ttl="5m", reads=True))
    assert findings == []
    [row] = table.iter_rows(named=True)
    assert row["wasted_share"] < 0.01


def test_five_minute_writes_rewritten_every_twenty_minutes_should_be_one_hour() -> None:
    frame = calls(500, 1200.0, ttl="5m", reads=False)
    _, [finding] = run(frame)
    assert finding.evidence["action"] in {"to_1h", "drop"}
    assert finding.evidence["monthly_savings_switch_to_1h_usd"] > 0


def test_aggregate_matches_a_call_by_call_replay_of_each_lineage() -> None:
    """Every cell sum against a plain loop over each lineage in time order, on lineages that
    write and read, only read (a read after a 5-60 minute gap counts there too), or never
    touch the cache; gaps on both sides of both lifetimes."""
    import random

    rng = random.Random(7)
    rows, at = [], SINCE + timedelta(seconds=30)
    for i in range(400):
        at += timedelta(seconds=rng.choice([5, 120, 299, 301, 900, 3599, 3601, 7200]) / 3)
        lineage = rng.choice(["writes", "writes", "reads", "none"])
        read = rng.choice([0, 4_000]) if lineage != "none" else 0
        write = rng.choice([0, 3_000, 6_000]) if lineage == "writes" else 0
        rows.append(
            {
                "trace_id": f"t{i}",
                "span_id": "01",
                "provider": "anthropic",
                "model": MODEL,
                "service": "svc",
                "prompt": "brief@v1",
                "start_time": at,
                "input_tokens": 10_000,
                "output_tokens": 100,
                "cache_read_tokens": read,
                "cache_write_tokens": write,
                "cache_write_1h_tokens": rng.choice([0, write]),
                "prefix_hashes": [{"writes": 1, "reads": 2, "none": 3}[lineage], 1000 + i],
                "prefix_tokens": [8_000, 10_000],
            }
        )
    frame = pl.DataFrame(rows, schema_overrides={"start_time": pl.Datetime("us", "UTC")})
    frame = frame.with_columns(pl.col("prefix_hashes").cast(pl.List(pl.UInt64)))
    expected = dict.fromkeys(
        [
            "calls",
            "read",
            "writing_calls",
            "write_5m",
            "write_1h",
            "wasted_5m",
            "wasted_1h",
            "write_1h_next_within_5m",
            "reads_after_mid_gap",
            "rewrites_after_mid_gap",
        ],
        0,
    )
    for lineage in (1, 2, 3):
        seq = [r for r in rows if r["prefix_hashes"][0] == lineage]
        for i, r in enumerate(seq):
            w1h = min(r["cache_write_1h_tokens"], r["cache_write_tokens"])
            w5 = r["cache_write_tokens"] - w1h
            prev, nxt = seq[i - 1] if i else None, seq[i + 1] if i + 1 < len(seq) else None
            gap_prev = (r["start_time"] - prev["start_time"]).total_seconds() if prev else None
            gap_next = (nxt["start_time"] - r["start_time"]).total_seconds() if nxt else None
            next_reads = nxt is not None and nxt["cache_read_tokens"] > 0
            mid = gap_prev is not None and 300 < gap_prev <= 3600
            cached = prev is not None and prev["cache_read_tokens"] + prev["cache_write_tokens"] > 0
            expected["calls"] += 1
            expected["read"] += r["cache_read_tokens"]
            expected["writing_calls"] += r["cache_write_tokens"] > 0
            expected["write_5m"] += w5
            expected["write_1h"] += w1h
            expected["wasted_5m"] += 0 if next_reads and gap_next <= 300 else w5
            expected["wasted_1h"] += 0 if next_reads and gap_next <= 3600 else w1h
            expected["write_1h_next_within_5m"] += (
                w1h if gap_next is not None and gap_next <= 300 else 0
            )
            expected["reads_after_mid_gap"] += r["cache_read_tokens"] if mid else 0
            expected["rewrites_after_mid_gap"] += w5 if mid and cached else 0
    ctx = context()
    cells = RULE.aggregate(conform(frame.lazy()), ctx).collect()
    assert expected["reads_after_mid_gap"] > 0 and expected["rewrites_after_mid_gap"] > 0
    assert {name: cells[name].sum() for name in expected} == expected
    assert (cells["first_call"].min(), cells["last_call"].max()) == (rows[0]["start_time"], at)
