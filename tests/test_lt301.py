"""LT301 on workloads with known answers, priced with the real genai-prices data.

Hand-checked list prices (genai-prices 0.2.3): claude-sonnet-4-5 $3/M input, $15/M output,
$3.75/M 5-minute cache write, $0.30/M cache read.

The growing workload: 100 conversations a day of 20 turns; a 1,000-token system prompt; each
turn adds a 200-token question and the previous 300-token answer, so turn t sends
I_t = 1,200 + 500·t input tokens (1,200 ... 10,700).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from llmtrace.config import Config, ConfigError
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.rules.base import AuditContext, Finding
from llmtrace.rules.engine import run_audit
from llmtrace.rules.lt301_context import RULE, evaluate
from llmtrace.store import Store

BOOK = PriceBook()  # bundled prices only: the hand-checked numbers must not see a user file
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
M = 1e-6  # USD per token from USD per million


def context(**params: Any) -> AuditContext:
    return AuditContext(
        since=SINCE,
        until=SINCE + timedelta(days=1),
        baseline_since=SINCE - timedelta(days=1),
        baseline_until=SINCE,
        params=params,
        accuracy_scores=(),
        price=lambda frame: price_calls(frame, BOOK),
    )


def conversations(
    count: int = 100,
    turns: int = 20,
    *,
    growth: int = 500,
    first: int = 1200,
    system: int = 1000,
    output: int = 300,
    cached: bool = False,
    jitter: int = 0,
    prompt: str = "chat@v1",
    seed: int = 0,
) -> pl.DataFrame:
    """``count`` conversations whose turn t sends ``first + growth·t`` input tokens.

    ``cached``: the app caches the conversation as it goes (Anthropic breakpoint on the last
    message): turn t reads turn t-1's prompt and writes the rest. Turns are 20 s apart, in the
    order the rows are listed shuffled (the rule must order by time itself).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(count):
        start = SINCE + timedelta(minutes=10 * c)
        for t in range(turns):
            size = first + growth * t + int(rng.integers(-jitter, jitter + 1))
            previous = first + growth * (t - 1)
            rows.append(
                {
                    "trace_id": f"{prompt}-{seed}-{c}-{t}",
                    "span_id": "01",
                    "provider": "anthropic",
                    "model": "claude-sonnet-4-5",
                    "service": "svc",
                    "prompt": prompt,
                    "conversation_id": f"{prompt}-{seed}-{c}",
                    "start_time": start + timedelta(seconds=20 * t),
                    "input_tokens": size,
                    "output_tokens": output,
                    "cache_read_tokens": previous if cached and t > 0 else 0,
                    "cache_write_tokens": (size - previous if t > 0 else size) if cached else 0,
                    "prefix_tokens": [system, size],
                }
            )
    order = rng.permutation(len(rows))
    return price_calls(pl.DataFrame([rows[i] for i in order]), BOOK)


def single_calls(n: int, *, input_tokens: int, output: int, prompt: str = "classify@v1"):
    frame = pl.DataFrame(
        {
            "trace_id": [f"{prompt}-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "provider": ["anthropic"] * n,
            "model": ["claude-sonnet-4-5"] * n,
            "service": ["svc"] * n,
            "prompt": [prompt] * n,
            "start_time": [SINCE + timedelta(seconds=400 * i) for i in range(n)],
            "input_tokens": [input_tokens] * n,
            "output_tokens": [output] * n,
            "prefix_tokens": [[1000, input_tokens]] * n,
        }
    )
    return price_calls(frame, BOOK)


def run(frame: pl.DataFrame, ctx: AuditContext) -> tuple[list[Finding], pl.DataFrame]:
    merged = RULE.merge([RULE.aggregate(frame.lazy(), ctx).collect()], ctx)
    return RULE.decide(merged, ctx), evaluate(merged, ctx)


def row_of(table: pl.DataFrame, kind: str, prompt: str) -> dict[str, Any]:
    rows = table.filter((pl.col("kind") == kind) & (pl.col("prompt") == prompt))
    assert rows.height == 1
    return rows.row(0, named=True)


# Per conversation, by hand (uncached):
# budget 8,000: turns 14..19 send 8,200 ... 10,700 -> 200+700+1,200+1,700+2,200+2,700 = 8,700
# tokens fewer at $3/M.
BUDGET_PER_CONVERSATION = 8700 * 3 * M
# summary every 10 turns, 500 tokens: turns 10..19 drop I_9 - system - summary = 5,700 - 1,000 -
# 500 = 4,200 tokens each (42,000 at $3/M); one summary call reads turn 9's prompt and answer
# (6,000 tokens at $3/M) and writes 500 tokens at $15/M.
SUMMARY_PER_CONVERSATION = 42_000 * 3 * M - (6000 * 3 * M + 500 * 15 * M)


def test_history_replaying_conversations_are_flagged_with_hand_checked_saving() -> None:
    [finding], table = run(conversations(), context())
    assert (finding.rule, finding.name) == ("LT301", "growing-conversation-context")
    assert (finding.prompt, finding.model, finding.service) == (
        "chat@v1",
        "claude-sonnet-4-5",
        "svc",
    )
    assert finding.monthly_savings_usd == pytest.approx(
        100 * SUMMARY_PER_CONVERSATION * 30, rel=1e-9
    )
    assert finding.monthly_savings_usd == pytest.approx(301.50, abs=1e-6)
    ev = finding.evidence
    assert ev["check"] == "growing_conversation" and ev["recommended"] == "summarize"
    assert ev["conversations"] == ev["growing_conversations"] == 100
    assert ev["growth_tokens_per_turn"] == pytest.approx(500.0)
    assert ev["fit_r2"] == pytest.approx(1.0)
    assert ev["output_tokens_per_turn"] == 300.0
    assert ev["growth_to_output_ratio"] == pytest.approx(500 / 300, abs=0.01)
    assert ev["max_input_tokens"] == 10_700
    assert ev["summary_calls"] == 100
    assert ev["monthly_savings_budget_usd"] == pytest.approx(100 * BUDGET_PER_CONVERSATION * 30)
    assert finding.severity == "medium"
    assert "every 10 turns" in finding.message


def test_policies_are_parameters() -> None:
    # a 6,000-token budget trims turns 10..19 (6,200 ... 10,700): 200 + 700 + ... + 4,700
    trimmed = sum(1200 + 500 * t - 6000 for t in range(10, 20))
    [finding], _ = run(conversations(), context(budget_tokens=6000, summarize_after_turns=100))
    assert finding.evidence["recommended"] == "budget"  # no turn reaches 100: nothing to summarise
    assert finding.monthly_savings_usd == pytest.approx(100 * trimmed * 3 * M * 30, rel=1e-9)


def test_cached_history_saves_only_the_read_price_and_is_not_flagged() -> None:
    # The same conversations with the app caching them. Summarising saves 4,200 cached tokens on
    # turns 11..19 at the read price (9 x 4,200 x $0.30/M), but breaks the cache at turn 10
    # (reads 1,000 + writes 1,000 instead of reading 5,700 + writing 500) and costs a summary
    # call (reads 5,700, 300 uncached, 500 output). Net 765 micro-dollars per conversation:
    # $2.30/month, below the $5 floor, where the uncached estimate said $301.50.
    turn10 = (1000 * 0.30 + 1000 * 3.75) - (5700 * 0.30 + 500 * 3.75)
    call = 5700 * 0.30 + 300 * 3 + 500 * 15
    per_conversation = (9 * 4200 * 0.30 - turn10 - call) * M
    findings, table = run(conversations(cached=True), context())
    assert findings == []
    row = row_of(table, "conv", "chat@v1")
    assert row["eligible"]  # it does replay its history ...
    assert row["saving_summary"] == pytest.approx(100 * per_conversation, rel=1e-9)
    assert row["monthly_savings_usd"] == pytest.approx(2.295, abs=1e-6)  # ... but it is cheap
    # trimming to the budget slides the window every turn: 7,000 tokens rewritten per turn
    assert row["saving_budget"] < 0


def test_long_but_flat_conversation_is_not_flagged() -> None:
    # 20 turns of 30,000 -> 30,380 tokens: long, steady (r² = 1), far over the budget, but
    # growing by only 20 tokens a turn: the history is not being replayed
    flat = conversations(growth=20, first=30_000)
    findings, table = run(flat, context())
    assert findings == []
    row = row_of(table, "conv", "chat@v1")
    assert row["conversations"] == 100 and row["flagged"] == 0
    assert not row["eligible"]


def test_big_input_for_tiny_output_is_flagged() -> None:
    # 216 calls a day of 20,000 input tokens for 5 output tokens; trimmed to 8,000 tokens:
    # 12,000 tokens fewer per call at $3/M
    [finding], _ = run(single_calls(216, input_tokens=20_000, output=5), context())
    assert finding.evidence["check"] == "oversized_input"
    assert finding.monthly_savings_usd == pytest.approx(216 * 12_000 * 3 * M * 30, rel=1e-9)
    assert finding.evidence["p90_output_tokens"] <= 50
    assert finding.evidence["p50_input_tokens"] == pytest.approx(20_000, rel=0.05)


def test_big_input_with_real_answers_is_not_flagged() -> None:
    findings, table = run(single_calls(216, input_tokens=20_000, output=400), context())
    assert findings == []
    assert not row_of(table, "single", "classify@v1")["eligible"]


def test_partials_split_by_conversation_merge_to_the_same_answer() -> None:
    ctx = context()
    calls = pl.concat(
        [
            conversations(),
            conversations(prompt="flat@v1", growth=0, first=30_000, seed=1),
            single_calls(216, input_tokens=20_000, output=5),
        ],
        how="vertical_relaxed",
    )
    whole = RULE.merge([RULE.aggregate(calls.lazy(), ctx).collect()], ctx)
    odd = pl.col("trace_id").str.extract(r"-(\d+)-\d+$").cast(pl.Int64) % 2 == 1
    parts = [
        RULE.aggregate(calls.filter(part).lazy(), ctx).collect()
        for part in (odd.fill_null(False), ~odd.fill_null(False))
    ]
    columns = ["kind", "prompt", "calls", "flagged", "saving_budget", "monthly_savings_usd"]
    expected = evaluate(whole, ctx).select(columns).sort("kind", "prompt")
    got = evaluate(RULE.merge(parts, ctx), ctx).select(columns).sort("kind", "prompt")
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9)


def test_engine_finds_it_in_a_real_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append(conversations())
    store.append(conversations(prompt="flat@v1", growth=0, first=30_000, seed=1))
    result = run_audit(
        store,
        since=SINCE,
        until=SINCE + timedelta(days=1),
        config=Config(),
        select=["LT301"],
        price_book=BOOK,
    )
    assert result.errors == []
    [finding] = result.findings
    assert finding.prompt == "chat@v1"
    assert finding.monthly_savings_usd == pytest.approx(301.50, abs=1e-6)


def test_bad_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="summarize_after_turns"):
        run(conversations(count=2), context(summarize_after_turns=0))


def test_conversation_sums_are_exact_past_int64_running_sums() -> None:
    """A conversation's sums are differences of running sums over the whole part; those pass
    2^63 here (inputs of 2e9 tokens, squared) while each conversation's own sums fit."""
    from llmtrace.rules.lt301_cells import ON_TOP_KINDS, _conversation_sums

    inputs = [[3, 5, 8], [2_000_000_000], [2_000_000_000, 7], [2_000_000_000], [1, 2]]
    rows = pl.DataFrame(
        {
            "_c": [c for c, turns in enumerate(inputs) for _ in turns],
            "input": [y for turns in inputs for y in turns],
            "output": [1] * sum(map(len, inputs)),
            "read": [0] * sum(map(len, inputs)),
            "write": [0] * sum(map(len, inputs)),
            "minimum": [None] * sum(map(len, inputs)),
            "long_ok": [False] * sum(map(len, inputs)),
            **{
                f"cf_{name}_{layout}": [0] * sum(map(len, inputs))
                for layout in ON_TOP_KINDS
                for name in ("read", "write")
            },
        },
        schema_overrides={"_c": pl.UInt64, "minimum": pl.Int64},
    )
    got = _conversation_sums(rows)
    for c, turns in enumerate(inputs):
        mine = got.filter(pl.col("_c") == c)
        assert mine["turn"].to_list() == list(range(len(turns)))
        assert mine["_n"].to_list() == [float(len(turns))] * len(turns)
        assert mine["_sxx"][0] == float(sum(x * x for x in range(len(turns))))
        assert mine["_sxy"][0] == float(sum(x * y for x, y in enumerate(turns)))
        assert mine["_syy"][0] == float(sum(y * y for y in turns))
        assert mine["_sy"][0] == float(sum(turns))
