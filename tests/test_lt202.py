"""LT202 conversation-history-not-cached against an independent replay written here.

The independent replay is plain Python: per conversation, per turn, a breakpoint on the last
message (read the previous prompt when it is a prefix, >= the minimum and within the TTL; write
the rest when the prompt reaches the minimum), each call priced with genai-prices'
``calc_price`` directly. The rule must agree within 1.5x (it does to a few percent).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from genai_prices import Usage, calc_price

from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import conform
from llmtrace.rules.base import AuditContext
from llmtrace.rules.lt202_history import RULE, evaluate
from tests import cache_replay_reference as ref

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
    pause_s: tuple[float, float] | None = None,
    burst: int = 4,
    steps: int = 1,
) -> pl.DataFrame:
    """n conversations resending their history; turn t's prompt = system + (u, a) * (t-1) + u.

    Message-boundary fingerprints as the importer records them: a shared system hash, then one
    hash per message of the conversation, so turn t's hashes start with turn t-1's.
    ``cached``: the app already puts a breakpoint on the last message (reads the previous
    prompt when it came within 5 minutes). ``pause_s``: every ``burst`` turns the gap is a pause
    drawn from it instead (a user who comes back). ``steps``: (answer, message) pairs added per
    turn (an agent loop's tool calls and results).
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
                paused = pause_s is not None and t % burst == 0
                at += timedelta(seconds=float(rng.uniform(*(pause_s if paused else gap_s))))
            for step in range(steps if t else 1):
                if t or step:
                    messages.append(int(rng.integers(output // 2, output * 3 // 2)))  # answer
                    hashes.append(hash((seed, c, len(messages))) & (2**63 - 1))
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


def test_lt301_prices_trimming_on_top_of_caching_and_they_add_up() -> None:
    """Long uncached chats: LT202 prices caching, LT301 trimming against the cached chats."""
    from llmtrace.config import Config
    from llmtrace.rules.engine import run_audit

    frame = conversations(150, turns=(14, 24), user=500, output=600, gap_s=(20.0, 120.0))
    result = run_audit(
        conform(frame.lazy()), since=SINCE, until=UNTIL, config=Config(), select="LT202,LT301",
        price_book=BOOK,
    )  # fmt: skip
    by_rule = {f.rule: f for f in result.findings}
    assert set(by_rule) == {"LT202", "LT301"}
    trim = by_rule["LT301"]
    assert trim.evidence["baseline"].startswith("history cached")
    assert "on top of caching the history (LT202)" in trim.message
    # both savings together never exceed what the history costs as billed
    billed = price_calls(frame, BOOK)
    history_share = 1 - (frame["prefix_tokens"].list.first().sum() / frame["input_tokens"].sum())
    monthly_input = billed["input_cost"].sum() * 30 / 7
    assert by_rule["LT202"].monthly_savings_usd + trim.monthly_savings_usd < monthly_input
    assert by_rule["LT202"].monthly_savings_usd < monthly_input * history_share


# -- a real multi-turn trace ----------------------------------------------------------------------

MOONCAKE = Path(__file__).parent / "fixtures" / "mooncake" / "conversation_trace_sample.jsonl"
BLOCK = 512


def mooncake_calls(start: datetime) -> pl.DataFrame:
    """The Mooncake sample as call records priced as Claude Sonnet 4.5.

    Fingerprints per full 512-token block (chained ids of the blocks so far): a later turn
    starts with an earlier turn's prompt when it repeats all of that prompt's full blocks (its
    partial last block grows with the next message, so its id changes). Conversation = the
    requests sharing their first two block ids (block 0 is one shared system block).
    """
    rows = []
    for i, line in enumerate(MOONCAKE.read_text().splitlines()):
        request = json.loads(line)
        ids, length = request["hash_ids"], request["input_length"]
        full = max(1, length // BLOCK)
        chain = [hash(tuple(ids[: k + 1])) & (2**63 - 1) for k in range(min(full, len(ids)))]
        tokens = [min(BLOCK * (k + 1), length) for k in range(len(chain))]
        tokens[-1] = length
        rows.append(
            {
                "trace_id": f"mooncake-{i}",
                "span_id": "01",
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "service": "mooncake-chat",
                "prompt": "chat",
                "conversation_id": f"conv-{ids[1] if len(ids) > 1 else f'single-{i}'}",
                "start_time": start + timedelta(milliseconds=request["timestamp"]),
                "input_tokens": length,
                "output_tokens": request["output_length"],
                "prefix_hashes": chain,
                "prefix_tokens": tokens,
            }
        )
    frame = pl.DataFrame(rows, schema_overrides={"start_time": pl.Datetime("us", "UTC")})
    return frame.with_columns(pl.col("prefix_hashes").cast(pl.List(pl.UInt64)))


def test_real_mooncake_conversations_priced_like_an_independent_replay() -> None:
    """1,223 real requests (a tenth of the conversations of one hour of a chat service): LT202
    prices caching the history within a few percent of a plain replay of the same mechanics.

    On this trace a breakpoint on the last message saves little: most conversations have one
    turn in the hour, and every turn pays the write premium. Measured on the whole trace
    (12,031 requests) as Claude Sonnet 4.5: history $414.26 per hour of trace as billed,
    $403.60 with the 5-minute breakpoint (saving $10.66/hour), $577.35 with 1-hour writes. The
    $23-$88/hour of block-level replays that read any earlier block are an upper range.
    """
    frame = mooncake_calls(UNTIL - timedelta(hours=2))
    assert frame.height == 1223 and frame["conversation_id"].n_unique() == 708
    table, [finding] = run(frame, context())
    assert finding.prompt == "chat"
    # the independent replay, on the raw block ids: a turn reads the previous prompt of its
    # conversation when it repeats all of that prompt's full blocks within 5 minutes
    saving = cost_cached = 0.0
    previous: dict[str, tuple[list[int], int, datetime]] = {}
    for line, row in zip(
        MOONCAKE.read_text().splitlines(), frame.iter_rows(named=True), strict=True
    ):
        ids, length, at = json.loads(line)["hash_ids"], row["input_tokens"], row["start_time"]
        conv = row["conversation_id"]
        read = 0
        if conv in previous:
            ids_before, length_before, at_before = previous[conv]
            full = max(1, length_before // BLOCK)
            if (
                ids[:full] == ids_before[:full]
                and length_before <= length
                and (at - at_before).total_seconds() <= 300
                and length_before >= 1024
            ):
                read = length_before
        write = length - read if length >= 1024 else 0
        system = row["prefix_tokens"][0]
        hist_read = max(read - system, 0)
        hist_write = max(read + write - system, 0) - hist_read
        actual = calc_price(Usage(input_tokens=length), model_ref="claude-sonnet-4-5")
        cached = calc_price(
            Usage(input_tokens=length, cache_read_tokens=hist_read, cache_write_tokens=hist_write),
            model_ref="claude-sonnet-4-5",
        )
        saving += float(actual.total_price - cached.total_price)
        # the history's part of the cached call: minus the system block, billed as before
        block = calc_price(Usage(input_tokens=system), model_ref="claude-sonnet-4-5")
        cost_cached += float(cached.total_price - block.total_price)
        previous[conv] = (ids, length, at)
    [row] = table.iter_rows(named=True)
    assert row["cost_short"] == pytest.approx(cost_cached, rel=0.01)
    assert row["saving_long"] < 0  # 1-hour writes (2x) never pay here
    # one hour of data: the run-rate basis is one day (the floor), for both
    assert finding.evidence["run_rate_basis"]["days_with_data"] == 1
    truth = saving * 30
    assert truth > 50
    assert 1 / 1.5 < finding.monthly_savings_usd / truth < 1.5


# -- every layout against the reference replay (tests/cache_replay_reference.py) ----------------


def reference_costs(frame: pl.DataFrame, model: str, minimum: int) -> dict[str, float]:
    """History cost as billed and under each layout, from the reference replay."""
    rows = list(frame.iter_rows(named=True))
    costs = {"actual": ref.history_cost(ref.turns_of(rows), model, "anthropic", cached=False)}
    for layout in ("short", "long", "mixed"):
        turns = ref.replay_explicit(ref.turns_of(rows), layout, minimum)
        costs[layout] = ref.history_cost(turns, model, "anthropic", cached=True)
    return costs


@pytest.mark.parametrize(
    ("shape", "winner"),
    [
        ({"gap_s": (20.0, 200.0)}, "short"),  # steady chats: 5 minutes is enough
        ({"gap_s": (600.0, 1800.0)}, "long"),  # every turn 10-30 minutes apart
        # bursts of quick turns, then the user comes back 10-40 minutes later: the 1-hour
        # anchor beats rewriting the history, but 1-hour writes on everything beat both
        ({"gap_s": (10.0, 60.0), "pause_s": (600.0, 2400.0), "turns": (12, 20)}, "long"),
    ],
)
def test_each_layout_is_priced_like_the_reference_replay_and_the_best_wins(
    shape: dict[str, Any], winner: str
) -> None:
    frame = conversations(250, span_days=6.0, **shape)
    table, [finding] = run(frame, context())
    [row] = table.iter_rows(named=True)
    truth = reference_costs(frame, "claude-sonnet-4-5", 1024)
    for option in ("actual", "short", "long", "mixed"):
        assert row[f"cost_{option}"] == pytest.approx(truth[option], rel=0.02), option
    assert row["best"] == winner
    savings = {o: truth["actual"] - truth[o] for o in ("short", "long", "mixed")}
    assert max(savings, key=savings.get) == winner  # type: ignore[arg-type]
    if "pause_s" in shape:
        assert savings["long"] > savings["mixed"] > savings["short"] > 0
    expected = savings[winner] * 30 / row["basis_days"]  # run-rate over the days with data
    assert finding.monthly_savings_usd == pytest.approx(expected, rel=0.02)
    # the evidence names the winner and what the other layouts would save
    options = finding.evidence["options"]
    assert set(options) == {
        "last message, 5m",
        "last message, 1h",
        "1h on the previous turn + 5m on the last message",
    }
    assert finding.evidence["recommended_option"] in options
    assert "other layouts:" in finding.message


def test_agent_steps_beyond_the_lookback_need_the_second_breakpoint() -> None:
    """Each turn adds 12 (answer, result) pairs = 24 messages: a breakpoint on the last message
    cannot reach the previous turn's entry (about 20 blocks back), one on the previous turn's
    end can."""
    frame = conversations(150, steps=12, user=120, output=120, turns=(4, 8), span_days=6.0)
    table, [finding] = run(frame, context())
    [row] = table.iter_rows(named=True)
    truth = reference_costs(frame, "claude-sonnet-4-5", 1024)
    for option in ("short", "mixed"):
        assert row[f"cost_{option}"] == pytest.approx(truth[option], rel=0.02), option
    assert row["hits_short"] == 0 < row["hits_mixed"]
    assert row["best"] == "mixed"
    assert "previous turn's last message" in finding.fix


def test_gemini_implicit_caching_is_a_potential_not_a_bankable_saving() -> None:
    """Gemini 2.5 Flash caches implicitly (from 2,048 tokens, as the docs' larger figure): the
    replay prices it from the price data's cached rate, severity info (no guaranteed hit)."""
    frame = conversations(250, model="gemini-2.5-flash", provider="google", system=2500)
    table, [finding] = run(frame, context(min_monthly_savings_usd=1.0))  # Flash is cheap
    assert finding.severity == "info"
    assert finding.evidence["cache_mode"] == "implicit"
    assert finding.evidence["min_cacheable_tokens"] == 2048
    assert "storage per token-hour" in finding.evidence["explicit_context_caching"]
    assert "not counted" in finding.message
    rows = list(frame.iter_rows(named=True))
    turns = ref.replay_automatic(ref.turns_of(rows), 2048, 1, 300.0)
    cached = ref.history_cost(turns, "gemini-2.5-flash", "google", cached=True)
    actual = ref.history_cost(ref.turns_of(rows), "gemini-2.5-flash", "google", cached=False)
    [row] = table.iter_rows(named=True)
    assert row["cost_short"] == pytest.approx(cached, rel=0.02)
    expected = (actual - cached) * 30 / row["basis_days"]
    assert finding.monthly_savings_usd == pytest.approx(expected, rel=0.02)


def test_gemini_before_2_5_is_not_modelled() -> None:
    frame = conversations(250, model="gemini-2.0-flash", provider="google", system=2500)
    _, findings = run(frame, context(min_monthly_savings_usd=0.01))
    assert findings == []


def test_real_mooncake_layouts_priced_like_the_reference_replay() -> None:
    """Every layout on the Mooncake sample, against the reference replay of the same turns.

    Measured (sample, window cost of the history as Claude Sonnet 4.5): billed $43.46; LT202 /
    reference: last message 5m $39.40 / $39.61, 1h $56.51 / $56.90, 1h previous + 5m last
    $40.47 / $40.52. The reference also reads entries older than the previous turn (branches
    of a conversation), which LT202 does not: LT202's 5-minute saving is ~5% above it.
    """
    frame = mooncake_calls(UNTIL - timedelta(hours=2))
    table, [finding] = run(frame, context())
    [row] = table.iter_rows(named=True)
    truth = reference_costs(frame, "claude-sonnet-4-5", 1024)
    for option in ("actual", "short", "long", "mixed"):
        assert row[f"cost_{option}"] == pytest.approx(truth[option], rel=0.02), option
    assert row["best"] == "short" == min(("short", "long", "mixed"), key=truth.get)
    saving = truth["actual"] - truth["short"]
    assert 1 / 1.1 < row["saving"] / saving < 1.1
    assert finding.evidence["options"]["last message, 1h"]["monthly_savings_usd"] < 0


def test_lt301_trims_on_top_of_the_cheapest_layout() -> None:
    """Turns 10-30 minutes apart: LT202 recommends the 1-hour layout, and LT301 prices trimming
    against the history cached that way (not the dearer 5-minute replay), so the two add up."""
    from llmtrace.config import Config
    from llmtrace.rules.engine import run_audit

    frame = conversations(
        150, turns=(14, 24), user=500, output=600, gap_s=(600.0, 1500.0), span_days=6.0
    )
    result = run_audit(
        conform(frame.lazy()), since=SINCE, until=UNTIL, config=Config(), select="LT202,LT301",
        price_book=BOOK,
    )  # fmt: skip
    by_rule = {f.rule: f for f in result.findings}
    assert by_rule["LT202"].evidence["recommended_ttl"] == "1h"
    trim = by_rule["LT301"]
    assert trim.evidence["baseline"].startswith("history cached with a breakpoint on the last "
                                               "message (1h)")  # fmt: skip
    billed = price_calls(frame.filter(pl.col("start_time") < UNTIL), BOOK)
    monthly_input = billed["input_cost"].sum() * 30 / 6
    assert by_rule["LT202"].monthly_savings_usd + trim.monthly_savings_usd < monthly_input


def test_coverage_names_only_models_whose_caching_is_modelled() -> None:
    """Gemini 2.5 conversations are judged; Gemini 2.0 (no implicit caching) is not LT202's."""
    from llmtrace.rules.engine import census_aggregate

    frame = pl.concat(
        [
            conversations(50, model="gemini-2.5-flash", provider="google", prompt="new@v1"),
            conversations(50, model="gemini-2.0-flash", provider="google", prompt="old@v1"),
        ]
    )
    ctx = context()
    calls = conform(frame.lazy())
    merged = RULE.merge([RULE.aggregate(calls, ctx).collect()], ctx)
    rows = RULE.coverage(merged, ctx, census_aggregate(calls).collect(), [])
    assert rows.select("prompt", "reason").to_dicts() == [{"prompt": "new@v1", "reason": None}]


def test_the_system_prompt_breakpoint_is_advised_only_when_it_can_be_written() -> None:
    """Planted chats share a 1,500-token system prompt (>= Sonnet 4.5's 1,024): keep a
    breakpoint there too. Mooncake's shared block is 512 tokens: a breakpoint there is never
    written, so the fix says so instead."""
    _, [planted] = run(conversations(300), context())
    assert planted.evidence["system_prompt_tokens_per_call"] == 1500
    assert planted.evidence["system_prompt_breakpoint"].startswith("add one")
    assert "Keep a breakpoint on the system prompt too" in planted.fix
    _, [real] = run(mooncake_calls(UNTIL - timedelta(hours=2)), context())
    # 512 per call, more where a whole one-block request counts as its system prefix
    assert 512 <= real.evidence["system_prompt_tokens_per_call"] < 1024
    assert real.evidence["system_prompt_breakpoint"].startswith("not written")
    assert "below the 1,024-token minimum" in real.fix
