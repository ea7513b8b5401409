"""LT201 on workloads with known answers, priced with the real genai-prices data.

Hand-checked list prices (genai-prices 0.2.3, shared/research/pricing.md §12):
claude-sonnet-4-5 $3/M input, $3.75/M 5-minute write, $6/M 1-hour write, $0.30/M read;
gpt-4o $2.50/M input, $1.25/M read, no write premium.
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
from llmtrace.rules.caching_model import regime_for
from llmtrace.rules.engine import run_audit
from llmtrace.rules.lt201_caching import RULE, break_even_hit_rate, evaluate
from llmtrace.store import Store

BOOK = PriceBook()  # bundled prices only: the hand-checked numbers must not see a user file
SINCE = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
M = 1e-6  # USD per token from USD per million


def context(days: float = 1.0, **params: Any) -> AuditContext:
    return AuditContext(
        since=SINCE,
        until=SINCE + timedelta(days=days),
        baseline_since=SINCE - timedelta(days=days),
        baseline_until=SINCE,
        params=params,
        accuracy_scores=(),
        price=lambda frame: price_calls(frame, BOOK),
    )


def prefix_calls(
    n: int,
    gap_s: float,
    *,
    model: str = "claude-sonnet-4-5",
    provider: str = "anthropic",
    prefix: int = 6000,
    tail: int = 500,
    system_hash: int = 111,
    cached: bool = False,
    jitter_s: float = 0.0,
    prompt: str = "support@v1",
    seed: int = 0,
) -> pl.DataFrame:
    """n calls sharing a ``prefix``-token system prefix, one every ``gap_s`` seconds (± jitter).

    Each call adds ``tail`` tokens of its own. ``cached``: the calls already cache the prefix
    (the first writes it, the others read it), as an app with a cache breakpoint reports.
    """
    rng = np.random.default_rng(seed)
    offsets = np.arange(n) * gap_s + rng.uniform(-jitter_s, jitter_s, n)
    offsets = np.clip(offsets, 0, None)
    read = [0 if not cached or i == 0 else prefix for i in range(n)]
    write = [prefix if cached and i == 0 else 0 for i in range(n)]
    frame = pl.DataFrame(
        {
            "trace_id": [f"{prompt}-{system_hash}-{seed}-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "provider": [provider] * n,
            "model": [model] * n,
            "service": ["svc"] * n,
            "prompt": [prompt] * n,
            "start_time": [SINCE + timedelta(seconds=float(s)) for s in offsets],
            "input_tokens": [prefix + tail] * n,
            "output_tokens": [200] * n,
            "cache_read_tokens": read,
            "cache_write_tokens": write,
            "prefix_hashes": [[system_hash, 10_000_000 * seed + i] for i in range(n)],
            "prefix_tokens": [[prefix, prefix + tail]] * n,
        },
        schema_overrides={"prefix_hashes": pl.List(pl.UInt64)},
    )
    return price_calls(frame, BOOK)


def run(frame: pl.DataFrame, ctx: AuditContext) -> tuple[list[Finding], pl.DataFrame]:
    """aggregate -> merge -> decide, plus the evaluated group table for near-miss checks."""
    merged = RULE.merge([RULE.aggregate(frame.lazy(), ctx).collect()], ctx)
    return RULE.decide(merged, ctx), evaluate(merged, ctx)


def only_group(table: pl.DataFrame) -> dict[str, Any]:
    assert table.height == 1
    return table.row(0, named=True)


# -- positive ------------------------------------------------------------------------------------


def test_long_prefix_every_30s_without_cache_is_flagged_with_hand_checked_saving() -> None:
    calls = prefix_calls(2880, 30.0, jitter_s=10.0)  # one day, gaps 10-50 s, all within 5 min
    findings, _ = run(calls, context())
    [finding] = findings
    # uncached: 2,880 x 6,000 x $3/M; 5-minute cache: 1 write at $3.75/M + 2,879 reads at $0.30/M
    per_day = 2880 * 6000 * 3 * M - (6000 * 3.75 * M + 2879 * 6000 * 0.30 * M)
    assert finding.monthly_savings_usd == pytest.approx(per_day * 30, rel=1e-9)
    assert finding.monthly_savings_usd == pytest.approx(1399.059, abs=1e-3)
    assert (finding.rule, finding.name) == ("LT201", "cacheable-prefix-not-cached")
    assert (finding.prompt, finding.model, finding.service) == (
        "support@v1",
        "claude-sonnet-4-5",
        "svc",
    )
    assert finding.severity == "high"
    ev = finding.evidence
    assert ev["calls"] == 2880 and ev["prefix_tokens"] == 6000 and ev["prefix_depth"] == 0
    assert ev["actual_cached_share"] == 0.0
    assert ev["simulated_hit_rate"] == pytest.approx(2879 / 2880, abs=1e-4)
    assert ev["write_multiplier"] == pytest.approx(1.25)
    assert ev["write_1h_multiplier"] == pytest.approx(2.0)
    assert ev["read_multiplier"] == pytest.approx(0.10)
    assert ev["break_even_hit_rate"] == pytest.approx(0.25 / 1.15, abs=1e-4)  # 21.7%
    assert ev["break_even_hit_rate_1h"] == pytest.approx(1.0 / 1.9, abs=1e-4)  # 52.6%
    assert ev["inter_arrival"]["share_within_short_ttl"] == 1.0
    assert ev["recommended_ttl"] == "5m"  # 1h writes cost more and buy nothing here
    assert ev["monthly_savings_1h_usd"] < ev["monthly_savings_5m_usd"]
    assert '"cache_control": {"type": "ephemeral"}' in finding.fix
    assert "break-even 21.7%" in finding.message


def test_reuse_every_20_minutes_recommends_the_one_hour_cache() -> None:
    calls = prefix_calls(72, 1200.0)  # one day, too far apart for 5 minutes
    [finding], table = run(calls, context())
    row = only_group(table)
    # 5 minutes: every call writes at $3.75/M instead of $3/M input -> a loss
    assert row["saving_short"] == pytest.approx(-72 * 6000 * 0.75 * M, rel=1e-9)
    # 1 hour: one write at $6/M, 71 reads at $0.30/M
    per_day = 72 * 6000 * 3 * M - (6000 * 6 * M + 71 * 6000 * 0.30 * M)
    assert finding.monthly_savings_usd == pytest.approx(per_day * 30, rel=1e-9)
    assert finding.evidence["recommended_ttl"] == "1h"
    assert '"ttl": "1h"' in finding.fix


def test_openai_gpt4o_automatic_cache_128_token_steps_and_50_percent_read() -> None:
    calls = prefix_calls(2880, 30.0, model="gpt-4o", provider="openai")
    [finding], _ = run(calls, context())
    cached = 6000 // 128 * 128  # 5,888 tokens: OpenAI caches in 128-token steps
    # writes cost the input price (no premium before GPT-5.6): only the reads save, 50% of $2.50/M
    per_day = 2879 * cached * (2.50 - 1.25) * M
    assert finding.monthly_savings_usd == pytest.approx(per_day * 30, rel=1e-9)
    ev = finding.evidence
    assert ev["prefix_tokens"] == cached
    assert ev["write_multiplier"] == pytest.approx(1.0)
    assert ev["read_multiplier"] == pytest.approx(0.5)
    assert ev["break_even_hit_rate"] == 0.0
    assert ev["simulated_hit_rate_1h"] is None  # no 1-hour option is modelled for OpenAI
    assert 'prompt_cache_key="support@v1"' in finding.fix


def test_shared_few_shot_block_is_found_at_its_message_depth() -> None:
    # 500-token system prompt (below the minimum) + two fixed example messages (shared), then
    # each call's own question: the cacheable prefix ends after message 2.
    n = 1440
    frame = pl.DataFrame(
        {
            "trace_id": [f"fs-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "provider": ["anthropic"] * n,
            "model": ["claude-sonnet-4-5"] * n,
            "service": ["svc"] * n,
            "prompt": ["extract@v2"] * n,
            "start_time": [SINCE + timedelta(seconds=60 * i) for i in range(n)],
            "input_tokens": [5400] * n,
            "output_tokens": [100] * n,
            "prefix_hashes": [[7, 8, 9, 1000 + i] for i in range(n)],
            "prefix_tokens": [[500, 2750, 5000, 5400]] * n,
        },
        schema_overrides={"prefix_hashes": pl.List(pl.UInt64)},
    )
    [finding], _ = run(price_calls(frame, BOOK), context())
    assert finding.evidence["prefix_depth"] == 2
    assert finding.evidence["prefix_tokens"] == 5000
    assert "message 2" in finding.fix
    per_day = n * 5000 * 3 * M - (5000 * 3.75 * M + (n - 1) * 5000 * 0.30 * M)
    assert finding.monthly_savings_usd == pytest.approx(per_day * 30, rel=1e-9)


def deep_calls(n: int, shared: int, *, branch: Any = None, prompt: str = "deep@v1") -> pl.DataFrame:
    """n calls a minute apart: a 300-token system prompt, ``shared`` fixed 200-token messages,
    then each call's own question. ``branch(i)`` may replace call i's first message hash."""
    hashes, tokens = [], []
    for i in range(n):
        chain = [7, *(100 + d for d in range(shared)), 10**9 + i]
        if branch is not None:
            chain[1] = branch(i)
        hashes.append(chain)
        tokens.append([300 + 200 * d for d in range(shared + 1)] + [300 + 200 * shared + 400])
    frame = pl.DataFrame(
        {
            "trace_id": [f"{prompt}-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "provider": ["anthropic"] * n,
            "model": ["claude-sonnet-4-5"] * n,
            "service": ["svc"] * n,
            "prompt": [prompt] * n,
            "start_time": [SINCE + timedelta(seconds=60 * i) for i in range(n)],
            "input_tokens": [t[-1] for t in tokens],
            "output_tokens": [100] * n,
            "prefix_hashes": hashes,
            "prefix_tokens": tokens,
        },
        schema_overrides={"prefix_hashes": pl.List(pl.UInt64)},
    )
    return price_calls(frame, BOOK)


def test_a_deep_shared_prefix_is_found_at_any_depth() -> None:
    """30 fixed example messages (6,300 tokens) before each question: found at depth 30, where
    the old search stopped at depth 3."""
    [finding], _ = run(deep_calls(1440, 30), context())
    assert finding.evidence["prefix_depth"] == 30
    assert finding.evidence["prefix_tokens"] == 300 + 200 * 30


def test_a_shared_prefix_that_is_neither_the_smallest_nor_largest_hash_is_found() -> None:
    """60% of calls share the examples; the rest start with their own message, some with
    hashes below the shared one, some above: the most common branch is still found."""

    def branch(i: int) -> int:
        if i % 5 == 0:
            return 1 + i  # below 100
        if i % 5 == 1:
            return 10**12 + i  # above
        return 100

    [finding], table = run(deep_calls(1440, 12, branch=branch), context())
    assert finding.evidence["prefix_depth"] == 12
    assert finding.evidence["calls"] == 1440 * 3 // 5


# -- near-misses ---------------------------------------------------------------------------------


def test_prefix_reused_only_every_two_hours_is_not_flagged() -> None:
    calls = prefix_calls(84, 7200.0)  # 7 days; a naive "repeated prefix" rule would flag it
    findings, table = run(calls, context(days=7))
    assert findings == []
    row = only_group(table)
    assert row["eligible"] and row["calls"] == 84 and row["cached_share"] == 0.0
    assert row["hits_short"] == 0 and row["hits_long"] == 0
    # every call would write: 5-minute writes cost 0.75 $/M more, 1-hour writes 3 $/M more
    assert row["saving_short"] == pytest.approx(-84 * 6000 * 0.75 * M, rel=1e-9)
    assert row["saving_long"] == pytest.approx(-84 * 6000 * 3.0 * M, rel=1e-9)


def test_prefix_already_cached_is_not_flagged() -> None:
    calls = prefix_calls(2880, 30.0, cached=True)
    findings, table = run(calls, context())
    assert findings == []
    row = only_group(table)
    assert row["cached_share"] == pytest.approx(2879 / 2880)
    assert not row["eligible"]


def test_openai_prefix_already_cached_automatically_is_not_flagged() -> None:
    calls = prefix_calls(2880, 30.0, model="gpt-4o", provider="openai", cached=True)
    findings, table = run(calls, context())
    assert findings == []
    assert not only_group(table)["eligible"]


def test_prefix_below_the_model_minimum_is_not_flagged() -> None:
    # 900 tokens on Sonnet 4.5 (minimum 1,024): caching it would "save" $200+/month on paper,
    # but Anthropic silently does not cache it.
    findings, table = run(prefix_calls(2880, 30.0, prefix=900), context())
    assert findings == []
    row = only_group(table)
    assert row["prefix_tokens"] == 900 and row["min_cacheable_tokens"] == 1024
    assert not row["eligible"]


def test_minimum_is_per_model_haiku_45_needs_4096_tokens() -> None:
    haiku = prefix_calls(2880, 30.0, prefix=3000, model="claude-haiku-4-5")
    sonnet = prefix_calls(2880, 30.0, prefix=3000, system_hash=222, seed=1)
    findings, _ = run(pl.concat([haiku, sonnet]), context())
    assert [f.model for f in findings] == ["claude-sonnet-4-5"]


# -- mergeability, engine, parameters --------------------------------------------------------------


def test_partials_split_by_prefix_key_merge_to_the_same_answer() -> None:
    ctx = context(days=7)
    a = prefix_calls(2880, 30.0)
    b = prefix_calls(84, 7200.0, system_hash=222, seed=1, prompt="rare@v1")
    c = prefix_calls(72, 1200.0, system_hash=333, seed=2, prompt="hourly@v1")
    whole = RULE.merge([RULE.aggregate(pl.concat([a, b, c]).lazy(), ctx).collect()], ctx)
    parts = RULE.merge(
        [RULE.aggregate(frame.lazy(), ctx).collect() for frame in (pl.concat([a, c]), b)], ctx
    )
    columns = ["prompt", "calls", "saving_short", "saving_long", "monthly_savings_usd"]
    expected = evaluate(whole, ctx).select(columns).sort("prompt")
    got = evaluate(parts, ctx).select(columns).sort("prompt")
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9)
    # hourly@v1 saves $1.13 in the one day its 72 calls cover: a run-rate of ~$34/month (not
    # $4.85, as if that day were spread over the 7-day window); rare@v1 never pays
    assert [f.prompt for f in RULE.decide(parts, ctx)] == ["support@v1", "hourly@v1"]


def test_engine_finds_it_in_a_real_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    store.append(prefix_calls(2880, 30.0, jitter_s=10.0))
    store.append(prefix_calls(84, 7200.0, system_hash=222, seed=1, prompt="rare@v1"))
    result = run_audit(
        store,
        since=SINCE,
        until=SINCE + DAY,
        config=Config(),
        select=["LT201"],
        price_book=BOOK,
    )
    assert result.errors == []
    [finding] = result.findings
    assert finding.prompt == "support@v1"
    assert finding.monthly_savings_usd == pytest.approx(1399.059, abs=1e-3)


def test_floor_parameter_and_bad_parameter() -> None:
    calls = prefix_calls(72, 1200.0)  # saves ~$34/month with a 1-hour cache
    assert run(calls, context(min_monthly_savings_usd=50.0))[0] == []
    with pytest.raises(ConfigError, match="min_calls"):
        run(calls, context(min_calls="many"))


def test_provider_facts_table() -> None:
    sonnet = regime_for("anthropic", "claude-sonnet-4-5-20250929")
    assert sonnet and sonnet.min_tokens == 1024 and sonnet.long_ttl_s == 3600
    bedrock = regime_for("aws", "us.anthropic.claude-haiku-4-5-20251001-v1:0")
    assert bedrock and bedrock.min_tokens == 4096 and bedrock.long_ttl_s == 3600
    bedrock_sonnet = regime_for("aws", "anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert bedrock_sonnet and bedrock_sonnet.long_ttl_s is None
    gpt = regime_for("openai", "gpt-4o")
    assert gpt and (gpt.min_tokens, gpt.step_tokens, gpt.mode) == (1024, 128, "automatic")
    assert regime_for("anthropic", "claude-future-9").min_tokens == 4096  # type: ignore[union-attr]
    assert regime_for("google", "gemini-2.5-pro") is None


def test_break_even_formula() -> None:
    assert break_even_hit_rate(1.25, 0.1) == pytest.approx(0.2174, abs=1e-4)
    assert break_even_hit_rate(2.0, 0.1) == pytest.approx(0.5263, abs=1e-4)
    assert break_even_hit_rate(1.0, 0.5) == 0.0


def mixed_depth_calls() -> pl.DataFrame:
    """Three system prefixes: one shared only at depth 0, one with a few-shot block at depth 1
    and one whose calls branch after it (depth 1 and their own messages), with 4-10 messages,
    uneven gaps and some cached tokens: every narrow column and the depth choice are used."""
    rng = np.random.default_rng(7)
    rows: dict[str, list[Any]] = {c: [] for c in ("hashes", "tokens", "start", "input", "read")}
    for _ in range(3000):
        system = int(rng.integers(1, 4))
        length = int(rng.integers(2, 11))
        chain = [system, *(int(rng.integers(10**6, 10**7)) for _ in range(length - 1))]
        if system >= 2 and rng.random() < 0.8:
            chain[1] = 50 + system  # the shared block
        tokens = [2000 * system + 300 * d + int(rng.integers(0, 5)) for d in range(length)]
        rows["hashes"].append(chain)
        rows["tokens"].append(tokens)
        rows["start"].append(SINCE + timedelta(seconds=float(rng.uniform(0, 86_000))))
        rows["input"].append(tokens[-1] + 50)
        rows["read"].append(int(tokens[0]) if rng.random() < 0.1 else 0)
    n = len(rows["start"])
    frame = pl.DataFrame(
        {
            "provider": ["anthropic"] * n,
            "model": ["claude-sonnet-4-5"] * n,
            "service": ["svc"] * n,
            "prompt": [f"p{i % 3}" for i in range(n)],
            "start_time": rows["start"],
            "input_tokens": rows["input"],
            "cache_read_tokens": rows["read"],
            "cache_write_tokens": [0] * n,
            "cache_write_1h_tokens": [0] * n,
            "prefix_hashes": rows["hashes"],
            "prefix_tokens": rows["tokens"],
        },
        schema_overrides={"prefix_hashes": pl.List(pl.UInt64)},
    )
    return frame.with_columns(pl.col("start_time").dt.cast_time_unit("us"))


@pytest.mark.parametrize("deep", [False, True])
def test_narrow_prefix_columns_give_the_cells_of_the_lists(
    deep: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cells from the narrow columns (``NARROW_DEPTH``) equal those from the whole prefix
    lists, exactly; a spine that reaches that depth (a second shared block) falls back to the
    lists, with the same cells as the lists' path."""
    from llmtrace.rules import lt201_caching

    frame = mixed_depth_calls()
    if deep:  # system prefix 3's block goes on: depth 2 and 3 shared too
        frame = frame.with_columns(
            pl.when(pl.col("prefix_hashes").list.get(1) == 53)
            .then(
                pl.concat_list(
                    pl.col("prefix_hashes").list.head(1),
                    pl.lit([53, 61, 62], dtype=pl.List(pl.UInt64)),
                    pl.col("prefix_hashes").list.slice(4),
                )
            )
            .otherwise(pl.col("prefix_hashes"))
            .alias("prefix_hashes")
        )
    ctx = context()
    used: list[bool] = []
    narrow = lt201_caching._assign_narrow

    def spy(calls: pl.DataFrame, params: Any) -> Any:
        grouped = narrow(calls, params)
        used.append(grouped is not None)
        return grouped

    monkeypatch.setattr(lt201_caching, "_assign_narrow", spy)
    got = RULE.aggregate(frame.lazy(), ctx).collect()
    assert used == [not deep]
    monkeypatch.setattr(lt201_caching, "_assign_narrow", lambda calls, params: None)
    expected = RULE.aggregate(frame.lazy(), ctx).collect()
    keys = ["prefix_hash", "depth", "prompt", "day", "band"]
    assert got.height > 10 and set(got["depth"]) == ({0, 1, 3} if deep else {0, 1})
    assert_frame_equal(got.sort(keys), expected.sort(keys))


@pytest.mark.parametrize("select", [["LT201", "LT203"], ["LT201", "LT202"]])
def test_a_spine_that_needs_the_lists_runs_again_over_a_spill_of_every_column(
    select: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spill writes no prefix lists for LT201 (``rare_columns``; the session family's
    LT202 reads only its conversation calls' hashes, ``_hc``); a part holding a spine 30 messages deep makes LT201
    run again over one more spill, of every column, and the audit in parts finds exactly what
    one pass finds."""
    from llmtrace.rules import partition

    store = Store(tmp_path / "store")
    store.append(deep_calls(1440, 30))
    store.append(prefix_calls(2880, 30.0, jitter_s=10.0, system_hash=222))
    store.append(prefix_calls(1440, 60.0, system_hash=333, seed=2, prompt="other@v1"))
    kept: list[list[str] | None] = []
    spill_grid, spill = partition.spill_grid, partition.spill

    def grid(calls: Any, keys: Any, parts: int, directory: Path, keep: Any = None) -> Any:
        kept.append(list(keep))
        return spill_grid(calls, keys, parts, directory, keep)

    def one_key(calls: Any, key: Any, parts: int, directory: Path, keep: Any = None) -> Any:
        kept.append(None if keep is None else list(keep))
        return spill(calls, key, parts, directory, keep)

    monkeypatch.setattr(partition, "spill_grid", grid)
    monkeypatch.setattr(partition, "spill", one_key)
    audit = {"since": SINCE, "until": SINCE + DAY, "config": Config(), "price_book": BOOK}
    parts = run_audit(store, select=select, rows_per_part=2500, **audit)
    assert len(kept) == 2 and kept[1] is None  # spilled, then once more with every column
    assert kept[0] is not None and "prefix_tokens" not in kept[0]
    assert "prefix_hashes" not in kept[0]
    assert ("_hc" in kept[0]) == ("LT202" in select)
    one = run_audit(store, select=select, **audit)
    assert parts.errors == one.errors == []
    deep = [f for f in one.findings if f.rule == "LT201" and f.evidence["prefix_depth"] == 30]
    assert len(deep) == 1
    assert [f.to_dict() for f in parts.findings] == [f.to_dict() for f in one.findings]
