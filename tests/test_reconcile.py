"""``llmtrace reconcile`` against a loopback provider billing the same calls as the store.

The provider side is ``tests/billing_server.py``: the four report endpoints in the providers'
documented shapes, paged, fed from the calls the store holds (or from a changed copy: calls the
store never saw, calls stored twice, another rate). The client is the real one (httpx), through
the real CLI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace import demo
from llmtrace.cli import cli
from llmtrace.pricing import price_calls
from llmtrace.reconcile.compare import (
    MATCH,
    PRICE_GAP,
    SEEN_TWICE,
    UNINSTRUMENTED,
    UNPRICED,
    model_key,
)
from llmtrace.reconcile.providers import parse_openai_line_item
from llmtrace.store import Store
from tests.billing_server import BillingServer

END = datetime(2026, 11, 20, tzinfo=UTC)
KEY = "sk-admin-test-0123456789abcdef"
WINDOW = ["--since", "2026-11-15", "--until", "2026-11-20"]


@pytest.fixture(scope="module")
def calls() -> pl.DataFrame:
    """Five days of demo traffic, priced (about 9k calls)."""
    return price_calls(demo.generate(days=5, end=END, scale=0.3))


def _store(tmp_path, frame: pl.DataFrame) -> str:
    store = Store(tmp_path / "store")
    store.append(frame)
    return str(store.path)


def _run(store: str, provider: str, server: BillingServer, *extra: str, key: str = KEY):
    env = {
        "OPENAI_ADMIN_KEY": key if provider == "openai" else "",
        "ANTHROPIC_ADMIN_KEY": key if provider == "anthropic" else "",
    }
    args = ["reconcile", provider, "--store", store, "--base-url", server.base_url, *WINDOW]
    return CliRunner().invoke(cli, [*args, "--format", "json", *extra], env=env)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_zero_drift_on_the_demo(tmp_path, calls, provider) -> None:
    store = _store(tmp_path, calls)
    with BillingServer(calls, provider) as server:
        result = _run(store, provider, server)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["rows"]
    assert {row["cause"] for row in report["rows"]} == {MATCH}
    assert {row["tiers"] for row in report["rows"]} == {""}  # "default"/"standard" are no tier
    totals = report["totals"]
    ours = calls.filter(pl.col("provider") == provider)["total_cost"].sum()
    assert totals["llmtrace_cost_usd"] == pytest.approx(ours, rel=1e-12)
    assert totals["provider_cost_usd"] == pytest.approx(ours, rel=1e-9)
    assert all(abs(row["drift"]) < 1e-9 for row in report["rows"])
    # the report names dated snapshots; rows still pair with the store's alias
    assert any("-20" in (row["provider_models"] or "") for row in report["rows"])
    # five daily buckets, three per page: each report took two pages
    pages = [q for path, q, _ in server.requests if "page" in q]
    assert len(pages) == 2
    assert all(KEY not in line for line in result.output.splitlines())


def test_uninstrumented_traffic_is_named(tmp_path, calls) -> None:
    """The provider bills a service llmtrace never saw (its calls are not in the store)."""
    hidden = (pl.col("service") == "support-bot") & (pl.col("model") == "gpt-4o-mini")
    store = _store(tmp_path, calls.filter(~hidden))
    with BillingServer(calls, "openai") as server:
        result = _run(store, "openai", server)
    assert result.exit_code == 1, result.output
    rows = json.loads(result.stdout)["rows"]
    mini = [r for r in rows if r["model"] == "gpt-4o-mini"]
    assert mini and {r["cause"] for r in mini} == {UNINSTRUMENTED}
    assert all(r["over_threshold"] and "never saw" in r["detail"] for r in mini)
    assert {r["cause"] for r in rows if r["model"] != "gpt-4o-mini"} == {MATCH}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_calls_seen_twice_are_named(tmp_path, calls, provider) -> None:
    """One model's calls are stored twice (another span id, the same response id)."""
    model = "o3" if provider == "openai" else "claude-haiku-4-5"
    chosen = calls.filter(pl.col("model") == model).with_columns(
        pl.format("resp-{}", pl.col("span_id")).alias("response_id")
    )
    twins = chosen.with_columns(pl.format("{}-twin", pl.col("span_id")).alias("span_id"))
    store = _store(tmp_path, pl.concat([calls.filter(pl.col("model") != model), chosen, twins]))
    with BillingServer(calls, provider) as server:
        result = _run(store, provider, server)
    assert result.exit_code == 1, result.output
    rows = [r for r in json.loads(result.stdout)["rows"] if r["model"] == model]
    assert rows and {r["cause"] for r in rows} == {SEEN_TWICE}
    assert all("repeat another's response id" in r["detail"] for r in rows)
    assert all(r["drift"] == pytest.approx(1.0, abs=1e-9) for r in rows)


def test_tier_or_discount_is_named_and_a_price_file_closes_it(tmp_path, calls) -> None:
    """The provider bills Anthropic at half the list price (a tier the price data lacks)."""
    store = _store(tmp_path, calls)
    with BillingServer(calls, "anthropic", cost_factor=0.5, tier="batch") as server:
        result = _run(store, "anthropic", server)
        assert result.exit_code == 1, result.output
        rows = json.loads(result.stdout)["rows"]
        assert {r["cause"] for r in rows} == {PRICE_GAP}
        assert all("tier(s) batch;" in r["detail"] and "0.5x" in r["detail"] for r in rows)
        prices = tmp_path / "prices.toml"
        prices.write_text(
            '[[price]]\nprovider = "anthropic"\nmodel = "claude-*"\nmultiplier = 0.5\n'
        )
        closed = _run(store, "anthropic", server, "--prices", str(prices))
    assert closed.exit_code == 0, closed.output
    assert {r["cause"] for r in json.loads(closed.stdout)["rows"]} == {MATCH}


def test_unpriced_model_is_named(tmp_path, calls) -> None:
    """The store holds a model's calls without prices (a model the price data does not know)."""
    unpriced = calls.with_columns(
        pl.when(pl.col("model") == "gpt-4o")
        .then(pl.lit("unknown_model"))
        .otherwise(pl.col("price_status"))
        .alias("price_status"),
        *(
            pl.when(pl.col("model") == "gpt-4o").then(None).otherwise(pl.col(c)).alias(c)
            for c in ("input_cost", "cache_read_cost", "output_cost", "total_cost")
        ),
    )
    store = _store(tmp_path, unpriced)
    with BillingServer(calls, "openai") as server:
        result = _run(store, "openai", server)
    assert result.exit_code == 1
    rows = [r for r in json.loads(result.stdout)["rows"] if r["model"] == "gpt-4o"]
    assert rows and {r["cause"] for r in rows} == {UNPRICED}
    assert all("unknown_model" in r["detail"] for r in rows)


def test_table_output_and_max_drift(tmp_path, calls) -> None:
    store = _store(tmp_path, calls)
    with BillingServer(calls, "openai", cost_factor=1.01) as server:
        env = {"OPENAI_ADMIN_KEY": KEY, "COLUMNS": "200"}
        args = ["reconcile", "openai", "--store", store, "--base-url", server.base_url, *WINDOW]
        within = CliRunner().invoke(cli, args, env=env)
        over = CliRunner().invoke(cli, [*args, "--max-drift", "0.5%"], env=env)
    assert within.exit_code == 0, within.output
    assert "tier or discount" in within.output and "-1.0%" in within.output
    assert over.exit_code == 1


def test_missing_or_refused_key_is_a_config_error(tmp_path, calls) -> None:
    store = _store(tmp_path, calls)
    with BillingServer(calls, "anthropic") as server:
        missing = _run(store, "anthropic", server, key="")
        wrong_key = "sk-ant-admin-wrong-9876543210fedcba"
        refused = _run(store, "anthropic", server, key=wrong_key)
    assert missing.exit_code == 2 and "ANTHROPIC_ADMIN_KEY is not set" in missing.output
    assert refused.exit_code == 2 and "authentication_error" in refused.output
    assert wrong_key not in refused.output and "Traceback" not in refused.output


def test_unreachable_provider_is_an_error_without_traceback(tmp_path, calls) -> None:
    store = _store(tmp_path, calls)
    env = {"OPENAI_ADMIN_KEY": KEY}
    args = ["reconcile", "openai", "--store", store, "--base-url", "http://127.0.0.1:9/v1"]
    result = CliRunner().invoke(cli, [*args, *WINDOW], env=env)
    assert result.exit_code == 2 and "127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_line_items_and_model_keys() -> None:
    assert parse_openai_line_item("gpt-4o-mini-2024-07-18, input") == (
        "gpt-4o-mini-2024-07-18",
        "input",
        None,
    )
    assert parse_openai_line_item("priority | gpt-4o, output, long context") == (
        "gpt-4o",
        "output, long context",
        "priority",
    )
    assert parse_openai_line_item("web search tool calls") == (None, "web search tool calls", None)
    keys = pl.select(
        model_key(pl.Series(["openai/GPT-4o-2024-08-06", "claude-sonnet-4-5-20250929", "o3"]))
    ).to_series()
    assert keys.to_list() == ["gpt-4o", "claude-sonnet-4-5", "o3"]
