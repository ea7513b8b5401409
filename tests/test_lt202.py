"""LT202 conversation-history-not-cached against an independent replay written here.

The independent replay is plain Python: per conversation, per turn, a breakpoint on the last
message (read the previous prompt when it is a prefix, >= the minimum and within the TTL; write
the rest when the prompt reaches the minimum), each call priced with genai-prices'
``calc_price`` directly. The rule must agree within 1.5x (it does to a few percent).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from genai_prices import Usage, calc_price

from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import conform
from llmtrace.rules.base import AuditContext
from llmtrace.rules.lt202_history import RULE, evaluate

BOOK = PriceBook()
UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)


def context(days: float = 7.0, **params: Any) -> AuditContext:
    return AuditContext(
        since=UNTIL - timedelta(days=days),
        until=UNTIL,
        baseline_since=UNTIL - timedelta(days=2 * days),
        baseline_until=UNTIL - timedelta(days=days),
        params=params,
        accuracy_scores=(),
        price=lambda frame: price_calls(frame, BOOK),
    )


def conversations(
    n: int,
    *,
    turns: tuple[int, int] = (3, 8),
    gap_s: tuple[float, float] = (20.0, 200.0),
    system: int = 1500,
    user: int = 300,
    output: int = 400,
    model: str = "claude-sonnet-4-5",
    provider: str = "anthropic",
    prompt: str = "chat@v1",
    cached: bool = False,
    seed: int = 0,
    start: datetime = SINCE,
    span_days: float = 7.0,
) -> pl.DataFrame:
    """n conversations resending their history; turn t's prompt = system + (u, a) * (t-1) + u.

    Message-boundary fingerprints as the importer records them: a shared system hash, then one
    hash per message of the conversation, so turn t's hashes start with turn t-1's.
    ``cached``: the app already puts a breakpoint on the last message (reads the previous
    prompt when it came within 5 minutes).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        begin = start + timedelta(seconds=float(rng.uniform(0, span_days * 86400 - 3600)))
        count = int(rng.integers(turns[0], turns[1] + 1))
        messages: list[int] = []
        hashes: list[int] = [7]
        at = begin
        previous = None
        for t in range(count):
            if t:
                messages.append(int(rng.integers(output // 2, output * 3 // 2)))  # answer
                hashes.append(hash((seed, c, len(messages))) & (2**63 - 1))
                at += timedelta(seconds=float(rng.uniform(*gap_s)))
            messages.append(int(rng.integers(user // 2, user * 3 // 2)))  # user message
            hashes.append(hash((seed, c, len(messages))) & (2**63 - 1))
            tokens = list(np.cumsum([system, *messages]))
            length = int(tokens[-1])
            read = write = 0
            if cached and length >= 1024:
                gap = (at - previous[1]).total_seconds() if previous else None
                read = previous[0] if gap is not None and gap <= 300 and previous[0] >= 1024 else 0
                write = length - read
            rows.append(
                {
                    "trace_id": f"{prompt}-{seed}-{c}-{t}",
                    "span_id": "01",
                    "provider": provider,
                    "model": model,
                    "service": "chat",
                    "prompt": prompt,
                    "conversation_id": f"{prompt}-{seed}-{c}",
                    "start_time": at,
                    "input_tokens": length,
                    "output_tokens": 300,
                    "cache_read_tokens": read,
                    "cache_write_tokens": write,
                    "prefix_hashes": list(hashes),
                    "prefix_tokens": [int(x) for x in tokens],
                }
            )
            previous = (length, at)
    frame = pl.DataFrame(rows, schema_overrides={"start_time": pl.Datetime("us", "UTC")})
    return frame.with_columns(pl.col("prefix_hashes").cast(pl.List(pl.UInt64)))


def run(frame: pl.DataFrame, ctx: AuditContext) -> tuple[pl.DataFrame, list]:
    calls = conform(frame.lazy())
    merged = RULE.merge([RULE.aggregate(calls, ctx).collect()], ctx)
    return evaluate(merged, ctx), RULE.decide(merged, ctx)


def independent_saving(frame: pl.DataFrame, model: str, ttl_s: float, minimum: int) -> float:
    """Window saving of a breakpoint on the last message, priced call by call with calc_price."""
    saving = 0.0
    rows = frame.sort("conversation_id", "start_time").iter_rows(named=True)
    previous: dict[str, tuple[int, datetime]] = {}
    for row in rows:
        length, at, conv = row["input_tokens"], row["start_time"], row["conversation_id"]
        system = row["prefix_tokens"][0]
        before = previous.get(conv)
        read = 0
        if before and (at - before[1]).total_seconds() <= ttl_s and before[0] >= minimum:
            read = before[0]
        write = length - read if length >= minimum else 0
        # the system prompt stays as billed (LT201's part): only the history is re-split
        hist_read = max(read - system, 0)
        hist_write = max(read + write - system, 0) - hist_read
        actual = calc_price(
            Usage(input_tokens=length), model_ref=model, provider_id="anthropic"
        ).total_price
        cached = calc_price(
            Usage(input_tokens=length, cache_read_tokens=hist_read, cache_write_tokens=hist_write),
            model_ref=model,
            provider_id="anthropic",
        ).total_price
        saving += float(actual - cached)
        previous[conv] = (length, at)
    return saving


def test_finds_uncached_history_and_prices_it_like_an_independent_replay() -> None:
    frame = conversations(300)
    ctx = context()
    table, findings = run(frame, ctx)
    [finding] = findings
    assert (finding.rule, finding.prompt) == ("LT202", "chat@v1")
    truth = independent_saving(frame, "claude-sonnet-4-5", 300.0, 1024) * 30 / 7
    assert truth > 10
    assert finding.evidence["recommended_ttl"] == "5m"
    assert finding.monthly_savings_usd == pytest.approx(truth, rel=0.05)
    assert 1 / 1.5 < finding.monthly_savings_usd / truth < 1.5
    assert finding.evidence["actual_cached_share_of_history"] == 0
    assert finding.evidence["simulated_hit_rate"] == 1.0
    assert "breakpoint on the last message" in finding.fix


def test_already_cached_conversations_are_not_flagged() -> None:
    _, findings = run(conversations(300, cached=True), context())
    assert findings == []


def test_prompts_below_the_minimum_are_not_flagged() -> None:
    """Haiku 4.5 caches from 4,096 tokens: 2-3k-token chats cannot be cached."""
    frame = conversations(300, model="claude-haiku-4-5", system=800, turns=(2, 4))
    assert frame["input_tokens"].max() < 4096
    table, findings = run(frame, context())
    assert findings == []


def test_turns_an_hour_apart_prefer_the_1h_lifetime() -> None:
    frame = conversations(300, gap_s=(600.0, 1800.0))
    _, [finding] = run(frame, context())
    assert finding.evidence["recommended_ttl"] == "1h"
    truth = independent_saving(frame, "claude-sonnet-4-5", 300.0, 1024)
    assert truth <= 0  # 5 minutes would only write
    assert finding.evidence["monthly_savings_5m_usd"] <= 0 < finding.monthly_savings_usd


def test_run_rate_does_not_depend_on_the_window() -> None:
    """Two days of conversations: the same monthly saving in a 7- and a 30-day window."""
    frame = conversations(200, start=UNTIL - timedelta(days=2), span_days=2.0)
    _, [week] = run(frame, context(7))
    _, [month] = run(frame, context(30))
    assert week.monthly_savings_usd == pytest.approx(month.monthly_savings_usd)
    assert week.evidence["run_rate_basis"]["days_with_data"] == 2


def test_partitions_by_conversation_merge_to_the_same_answer() -> None:
    frame = conversations(200)
    ctx = context()
    whole = RULE.merge([RULE.aggregate(conform(frame.lazy()), ctx).collect()], ctx)
    key = frame["conversation_id"].hash(37) % 3
    parts = RULE.merge(
        [RULE.aggregate(conform(frame.filter(key == i).lazy()), ctx).collect() for i in range(3)],
        ctx,
    )
    a = evaluate(whole, ctx).select("prompt", "monthly_savings_usd")
    b = evaluate(parts, ctx).select("prompt", "monthly_savings_usd")
    assert a["monthly_savings_usd"][0] == pytest.approx(b["monthly_savings_usd"][0])


def test_openai_automatic_caching_is_routed_not_written() -> None:
    frame = conversations(300, model="gpt-4o", provider="openai")
    _, [finding] = run(frame, context())
    assert finding.evidence["cache_mode"] == "automatic"
    assert "prompt_cache_key" in finding.fix
