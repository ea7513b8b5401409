"""The demo generator: deterministic, schema-true, and the planted audit cases as described."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace import demo
from llmtrace.cli import cli
from llmtrace.record import CALL_SCHEMA, KEY_FIELDS, PRICE_NOT_PRICED, validate
from llmtrace.store import Store

END = datetime(2026, 11, 27, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def calls() -> pl.DataFrame:
    return demo.generate(end=END)


def _prompt(calls: pl.DataFrame, prompt: str) -> pl.DataFrame:
    return calls.filter(pl.col("prompt") == prompt)


def _weeks(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    switch = demo.switch_time(END)
    return frame.filter(pl.col("start_time") < switch), frame.filter(pl.col("start_time") >= switch)


def _reasoning_ratio(calls: pl.DataFrame, prompt: str) -> float:
    before, after = _weeks(_prompt(calls, prompt))
    return after["reasoning_tokens"].mean() / before["reasoning_tokens"].mean()


def _wilson(correct: int, n: int, z: float) -> tuple[float, float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def _newcombe_upper(a: pl.DataFrame, b: pl.DataFrame, z: float = 1.645) -> float:
    """One-sided upper bound of accuracy(b) - accuracy(a) (rules-domain.md §4.2)."""
    pa, la, ua = _wilson(int(a["accuracy"].sum()), a["accuracy"].count(), z)
    pb, lb, ub = _wilson(int(b["accuracy"].sum()), b["accuracy"].count(), z)
    return pb - pa + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)


# -- shape and determinism ------------------------------------------------------------------


def test_frame_has_the_call_schema_and_unique_keys(calls: pl.DataFrame) -> None:
    validate(calls)
    assert calls.schema == CALL_SCHEMA
    assert 60_000 <= calls.height <= 140_000
    assert calls.select(pl.struct(*KEY_FIELDS).n_unique()).item() == calls.height
    assert calls["span_id"].n_unique() == calls.height
    assert calls["trace_id"].str.contains(r"^[0-9a-f]{32}$").all()
    assert calls["span_id"].str.contains(r"^[0-9a-f]{16}$").all()
    assert (calls["source"] == "demo").all() and (calls["dialect"] == "demo").all()
    assert (calls["price_status"] == PRICE_NOT_PRICED).all()
    assert calls["start_time"].min() >= END - timedelta(days=14)
    assert calls["start_time"].max() < END
    assert (calls["end_time"] > calls["start_time"]).all()


def test_variety(calls: pl.DataFrame) -> None:
    assert set(calls["provider"].unique()) == {"openai", "anthropic", "google"}
    assert {
        "o3",
        "o4-mini",
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    } <= set(calls["model"].unique())
    assert {"support-bot", "legal-api", "docs-search", "coding-agent"} <= set(calls["service"])
    assert {"contract-review", "ticket-triage", "answer-question", "agent-session"} <= set(
        calls["action"]
    )
    # an agent session is one trace of several calls; a chat turn is its own trace
    agent = _prompt(calls, "code-agent@v12")
    assert agent["trace_id"].n_unique() == agent["conversation_id"].n_unique() < agent.height
    chat = _prompt(calls, "support-answer@v7")
    assert chat["trace_id"].n_unique() == chat.height > chat["conversation_id"].n_unique()
    # a contract review is one trace with two calls (summary, then clause risk)
    review = calls.filter(pl.col("action") == "contract-review")
    assert review.group_by("trace_id").len()["len"].max() == 2


def test_same_seed_same_frame_other_seed_or_end_other_frame() -> None:
    small = {"days": 2, "scale": 0.2}
    first = demo.generate(end=END, seed=3, **small)
    assert first.equals(demo.generate(end=END, seed=3, **small))
    other = demo.generate(end=END, seed=4, **small)
    assert not first.equals(other)
    assert not set(first["span_id"]) & set(other["span_id"])
    later = demo.generate(end=END + timedelta(hours=1), seed=3, **small)
    assert not set(first["span_id"]) & set(later["span_id"])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="days"):
        demo.generate(end=END, days=0)
    with pytest.raises(ValueError, match="scale"):
        demo.generate(end=END, scale=0)


def test_token_and_fingerprint_invariants(calls: pl.DataFrame) -> None:
    ok = calls.filter(pl.col("input_tokens").is_not_null())
    assert (ok["cache_read_tokens"] + ok["cache_write_tokens"] <= ok["input_tokens"]).all()
    assert (ok["cache_write_1h_tokens"] <= ok["cache_write_tokens"]).all()
    assert (ok["reasoning_tokens"] <= ok["output_tokens"]).all()
    assert (ok["prefix_tokens"].list.last() == ok["input_tokens"]).all()
    assert ok.select(
        (pl.col("prefix_tokens").list.diff().list.drop_nulls().list.min() > 0).all()
    ).item()
    first_hex = (
        calls["prefix_hashes"]
        .list.first()
        .map_elements(lambda h: f"{h:016x}", return_dtype=pl.String)
    )
    assert (first_hex == calls["template_fingerprint"]).all()
    assert (
        calls.select(pl.col("template_fingerprint").n_unique()).item() == calls["prompt"].n_unique()
    )


def test_errors_about_one_percent_without_usage(calls: pl.DataFrame) -> None:
    errors = calls.filter(pl.col("is_error"))
    assert 0.007 < errors.height / calls.height < 0.013
    assert errors["input_tokens"].is_null().all() and errors["error_type"].is_not_null().all()
    assert errors["accuracy"].is_null().all()
    assert calls.filter(~pl.col("is_error"))["error_type"].is_null().all()


def test_diurnal_traffic(calls: pl.DataFrame) -> None:
    hours = _prompt(calls, "ticket-triage@v4").group_by(pl.col("start_time").dt.hour()).len()
    assert hours["len"].max() > 4 * hours["len"].min()


def test_labels_are_scores_and_accuracy(calls: pl.DataFrame) -> None:
    labelled = calls.filter(pl.col("accuracy").is_not_null())
    assert labelled["scores"].list.len().eq(1).all()
    value = labelled["scores"].list.first().struct.field("value")
    assert (value == labelled["accuracy"]).all()
    assert calls.filter(pl.col("accuracy").is_null())["scores"].is_null().all()


# -- planted cases --------------------------------------------------------------------------


def test_planted_list_matches_the_data(calls: pl.DataFrame) -> None:
    rules = {"LT101", "LT201", "LT202", "LT203", "LT301", "LT401", "LT501", "LT502"}
    assert {p.rule for p in demo.PLANTED} == rules
    for case in demo.PLANTED:
        rows = calls.filter(
            (pl.col("prompt") == case.prompt)
            & (pl.col("model") == case.model)
            & (pl.col("service") == case.service)
            & (pl.col("action") == case.action)
        )
        assert rows.height > 100, case
        assert case.expected in {demo.FINDING, demo.NO_FINDING, demo.INCONCLUSIVE, demo.UNVERIFIED}
    positives = {p.rule for p in demo.PLANTED if p.expected == demo.FINDING}
    assert positives == rules


def test_lt101_positive_reasoning_up_accuracy_flat_and_bounded(calls: pl.DataFrame) -> None:
    before, after = _weeks(_prompt(calls, "clause-risk@v5"))
    assert 1.7 < _reasoning_ratio(calls, "clause-risk@v5") < 1.9
    assert set(before["reasoning_effort"]) == {"medium"}
    assert set(after["reasoning_effort"]) == {"high"}
    a, b = before.drop_nulls("accuracy"), after.drop_nulls("accuracy")
    assert a.height >= 2500 and b.height >= 2500
    assert abs(a["accuracy"].mean() - 0.86) < 0.002 and abs(b["accuracy"].mean() - 0.86) < 0.002
    assert _newcombe_upper(a, b) < 0.02


def test_lt101_near_misses(calls: pl.DataFrame) -> None:
    for prompt in ("refund-policy@v6", "pr-reviewer@v4", "test-writer@v2"):
        assert 1.6 < _reasoning_ratio(calls, prompt) < 2.0, prompt  # ~1.8 (sampling noise)
    a, b = (w.drop_nulls("accuracy") for w in _weeks(_prompt(calls, "refund-policy@v6")))
    assert 0.075 < b["accuracy"].mean() - a["accuracy"].mean() < 0.085
    assert min(a.height, b.height) > 900
    a, b = (w.drop_nulls("accuracy") for w in _weeks(_prompt(calls, "pr-reviewer@v4")))
    assert 30 <= a.height <= 50 and 30 <= b.height <= 50
    assert _newcombe_upper(a, b) > 0.1  # far too few labels to bound the gain
    assert _prompt(calls, "test-writer@v2")["accuracy"].is_null().all()


def test_no_other_reasoning_rises(calls: pl.DataFrame) -> None:
    planted = {p.prompt for p in demo.PLANTED if p.rule == "LT101"}
    reasoning = calls.filter(pl.col("reasoning_tokens") > 0)["prompt"].unique()
    others = [p for p in reasoning if p not in planted]
    assert others  # a healthy reasoning workload exists to stay quiet
    for prompt in others:
        assert 0.87 < _reasoning_ratio(calls, prompt) < 1.15, prompt


def _gaps_s(frame: pl.DataFrame) -> pl.Series:
    return frame.sort("start_time")["start_time"].diff().dt.total_microseconds().drop_nulls() / 1e6


def test_lt201_positive_long_prefix_every_20_to_60_s_uncached(calls: pl.DataFrame) -> None:
    rows = _prompt(calls, "playbook-qa@v2")
    assert rows["template_fingerprint"].n_unique() == 1
    assert rows["prefix_tokens"].list.first().min() >= 6000
    gaps = _gaps_s(rows)
    daytime = gaps.filter(gaps < 3600)
    assert daytime.len() > 0.99 * gaps.len()
    assert daytime.min() >= 20 and daytime.max() <= 60
    ok = rows.drop_nulls("input_tokens")
    assert (ok["cache_read_tokens"] == 0).all() and (ok["cache_write_tokens"] == 0).all()


def test_lt201_near_misses(calls: pl.DataFrame) -> None:
    digest = _prompt(calls, "portfolio-digest@v1")
    assert digest["prefix_tokens"].list.first().min() >= 6000
    assert _gaps_s(digest).min() > 3600  # beyond the 5-minute and the 1-hour TTL
    assert digest["cache_read_tokens"].sum() == 0 and digest["cache_write_tokens"].sum() == 0

    cached = _prompt(calls, "docs-answer@v9").drop_nulls("input_tokens")
    assert cached["prefix_tokens"].list.first().min() >= 6000
    share = cached["cache_read_tokens"].sum() / cached["input_tokens"].sum()
    assert 0.85 < share < 0.95

    short = _prompt(calls, "query-rewrite@v2")
    assert short["prefix_tokens"].list.first().max() < 1024
    assert _gaps_s(short).median() < 300  # reused often: only the minimum length stops caching
    assert short["cache_read_tokens"].sum() == 0 and short["cache_write_tokens"].sum() == 0


def test_healthy_prompts_cache_their_long_prefixes(calls: pl.DataFrame) -> None:
    """Outside the LT201 cases, a long system prompt is cached as the provider would: Anthropic
    reads or writes it on every call; OpenAI reads it whenever it was used in the last 5 min."""
    planted = {p.prompt for p in demo.PLANTED if p.rule == "LT201"}
    system = pl.col("prefix_tokens").list.first()
    rows = (
        calls.filter(~pl.col("prompt").is_in(list(planted)) & (system >= 1024))
        .sort("start_time")
        .with_columns(
            system.alias("system"),
            pl.col("start_time").diff().over("template_fingerprint").alias("gap"),
        )
        .drop_nulls("input_tokens")
    )
    minimum = pl.when(pl.col("model") == "claude-haiku-4-5").then(4096).otherwise(1024)
    anthropic = rows.filter((pl.col("provider") == "anthropic") & (pl.col("system") >= minimum))
    assert anthropic["prompt"].n_unique() >= 3
    covered = anthropic["cache_read_tokens"] + anthropic["cache_write_tokens"]
    assert (covered >= anthropic["system"]).all()
    openai = rows.filter((pl.col("provider") == "openai") & (pl.col("gap") < timedelta(minutes=5)))
    assert openai["prompt"].n_unique() >= 5
    assert (openai["cache_read_tokens"] >= openai["system"] // 128 * 128).all()


def _turns(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort("conversation_id", "start_time").with_columns(
        pl.int_range(1, pl.len() + 1).over("conversation_id").alias("turn"),
        pl.len().over("conversation_id").alias("turns"),
    )


def test_lt301_positive_history_replayed(calls: pl.DataFrame) -> None:
    rows = _turns(_prompt(calls, "troubleshooter@v3"))
    whole = rows.filter(
        pl.col("start_time").min().over("conversation_id") < END - timedelta(hours=2)
    )
    assert whole["turns"].min() >= 10 and whole["turns"].max() <= 30  # late ones end at END
    grown = rows.with_columns(
        pl.col("input_tokens").diff().over("conversation_id").alias("growth"),
        pl.col("output_tokens").shift().over("conversation_id").alias("previous_output"),
        (pl.col("prefix_tokens").list.get(-1) - pl.col("prefix_tokens").list.get(-2)).alias(
            "new_user_text"
        ),
    ).drop_nulls(["growth", "previous_output"])
    assert grown.height > 5000
    assert (grown["growth"] == grown["previous_output"] + grown["new_user_text"]).all()
    assert rows["output_tokens"].median() < 200  # little output


def test_lt301_near_miss_flat_and_background_short(calls: pl.DataFrame) -> None:
    flat = _turns(_prompt(calls, "account-assistant@v5")).drop_nulls("input_tokens")
    per = flat.group_by("conversation_id").agg(
        pl.len().alias("n"),
        (pl.col("input_tokens").std() / pl.col("input_tokens").mean()).alias("cv"),
        pl.col("input_tokens").mean().alias("mean"),
    )
    assert per["n"].min() >= 9 and (per["cv"] < 0.02).all() and per["mean"].min() > 5000
    # LT202's planted chats are short too (3-8 turns) but resend their history uncached
    planted = {p.prompt for p in demo.PLANTED if p.rule in ("LT301", "LT202")}
    background = calls.filter(
        pl.col("conversation_id").is_not_null() & ~pl.col("prompt").is_in(list(planted))
    )
    assert background.group_by("conversation_id").len()["len"].max() <= 6


# -- chunks -----------------------------------------------------------------------------------


def test_chunks_exact_sizes_unique_ids_deterministic() -> None:
    chunks = list(demo.generate_chunks(25_000, chunk_size=10_000, end=END, seed=5))
    assert [c.height for c in chunks] == [10_000, 10_000, 5_000]
    combined = pl.concat(chunks)
    assert combined.schema == CALL_SCHEMA
    assert combined.select(pl.struct(*KEY_FIELDS).n_unique()).item() == 25_000
    assert combined["span_id"].n_unique() == 25_000
    again = next(demo.generate_chunks(25_000, chunk_size=10_000, end=END, seed=5))
    assert again.equals(chunks[0])
    # each chunk is its own tenant: its own prompt prefixes
    fingerprints = [set(c["template_fingerprint"]) for c in chunks]
    assert not fingerprints[0] & fingerprints[1]


def test_expected_calls_sizes_the_default(calls: pl.DataFrame) -> None:
    assert abs(demo.expected_calls() - calls.height) / calls.height < 0.05


# -- the command -------------------------------------------------------------------------------


def test_demo_command_twice_adds_nothing(tmp_path) -> None:
    pytest.importorskip("llmtrace.pricing")
    store = tmp_path / "store"
    args = ["demo", "--store", str(store), "--days", "2", "--scale", "0.2", "--end", "2026-11-20"]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    count = Store(store).scan().select(pl.len()).collect().item()
    generated = Store(store).scan().filter(pl.col("source") == "demo").select(pl.len())
    assert count > 1000
    assert f"Added {generated.collect().item():,} calls" in first.output
    # the coding-agent part: transcripts written under the store, imported as a user's are
    agents = Store(store).scan().filter(pl.col("source").is_in(["claude-code", "codex"]))
    assert agents.select(pl.col("conversation_id").n_unique()).collect().item() > 5
    assert (store / "demo-transcripts" / "claude-code" / "projects").is_dir()
    assert "Coding agents:" in first.output
    assert "llmtrace costs --by model" in first.output and "llmtrace audit" in first.output
    assert "Spend: $" in first.output
    priced = Store(store).scan().select((pl.col("price_status") == "ok").mean()).collect().item()
    assert priced > 0.98

    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "Nothing added" in second.output
    assert Store(store).scan().select(pl.len()).collect().item() == count

    fresh = runner.invoke(cli, [*args, "--fresh", "--seed", "8"])
    assert fresh.exit_code == 0, fresh.output
    rows = Store(store).scan().select(pl.len()).collect().item()
    assert rows > 1000 and "Note:" not in fresh.output
