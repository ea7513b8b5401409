"""Cost summaries and cost per action, against hand-computed figures and the real store."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.costs import (
    PER_ACTION_FIELDS,
    SUMMARY_FIELDS,
    format_usd,
    load_action_prices,
    parse_action_price,
    per_action,
    summarize,
    total_row,
)
from llmtrace.record import PRICE_OK, PRICE_UNKNOWN_MODEL, conform
from llmtrace.store import Store

NOW = datetime.now(UTC).replace(microsecond=0)


def _call(i: int, **fields) -> dict:
    """A call record with costs set by hand (so aggregation is tested without pricing)."""
    base = {
        "trace_id": f"t{i}",
        "span_id": f"s{i}",
        "start_time": NOW - timedelta(days=1, minutes=i),
        "provider": "openai",
        "model": "gpt-4o",
        "prompt": "p@1",
        "action": "a",
        "service": "svc",
        "input_tokens": 100,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 10,
        "reasoning_tokens": 0,
        "input_cost": 0.25,
        "cache_read_cost": 0.0,
        "cache_write_cost": 0.0,
        "output_cost": 0.1,
        "reasoning_cost": 0.0,
        "total_cost": 0.35,
        "price_status": PRICE_OK,
    }
    return base | fields


def _unpriced(i: int, **fields) -> dict:
    costs = dict.fromkeys(
        ("input_cost", "cache_read_cost", "cache_write_cost", "output_cost", "reasoning_cost"),
        None,
    )
    return _call(i, **costs, total_cost=None, price_status=PRICE_UNKNOWN_MODEL, **fields)


def _frame(rows: list[dict]) -> pl.LazyFrame:
    return conform(pl.DataFrame(rows, infer_schema_length=None))


# -- summarize ---------------------------------------------------------------------------------


def test_summary_by_model_matches_hand_sums() -> None:
    calls = _frame(
        [
            _call(1),
            _call(2, input_tokens=1000, cache_read_tokens=400, input_cost=1.5, total_cost=1.6),
            _call(
                3,
                model="o3",
                reasoning_tokens=5,
                output_tokens=20,
                reasoning_cost=0.04,
                total_cost=0.39,
            ),
            _unpriced(4, model="o3", input_tokens=7),
            _unpriced(5, model="mystery-1"),
        ]
    )
    result = summarize(calls, ["model"])
    assert result.columns == ["model", *SUMMARY_FIELDS]
    assert result["model"].to_list() == ["gpt-4o", "o3", "mystery-1"]  # costliest first
    gpt = result.row(0, named=True)
    assert gpt["calls"] == 2 and gpt["unpriced_calls"] == 0
    assert gpt["input_tokens"] == 1100 and gpt["cache_read_tokens"] == 400
    assert gpt["input_cost"] == pytest.approx(1.75)
    assert gpt["total_cost"] == pytest.approx(1.95)
    o3 = result.row(1, named=True)
    assert o3["calls"] == 2 and o3["unpriced_calls"] == 1
    assert o3["input_tokens"] == 107  # the unpriced call's tokens count
    assert o3["total_cost"] == pytest.approx(0.39)  # ...its cost is not invented
    assert o3["reasoning_tokens"] == 5 and o3["reasoning_cost"] == pytest.approx(0.04)
    mystery = result.row(2, named=True)
    assert mystery["unpriced_calls"] == 1 and mystery["total_cost"] is None
    assert mystery["input_cost"] is None  # null, never $0
    for name in ("calls", "input_tokens", "reasoning_tokens"):
        assert result.schema[name] == pl.Int64
    for name in ("input_cost", "total_cost"):
        assert result.schema[name] == pl.Float64
    total = total_row(result)
    assert total["calls"] == 5 and total["unpriced_calls"] == 2
    assert total["total_cost"] == pytest.approx(2.34)


def test_summary_with_several_keys_and_without_keys() -> None:
    calls = _frame(
        [
            _call(1, service="a", action="x"),
            _call(2, service="a", action="y", total_cost=1.0),
            _call(3, service="b", action="x"),
        ]
    )
    two = summarize(calls, ["service", "action", "service"])
    assert two.columns[:2] == ["service", "action"]
    assert two.rows()[0][:3] == ("a", "y", 1)
    everything = summarize(calls, [])
    assert everything.height == 1 and everything["calls"][0] == 3
    assert everything["total_cost"][0] == pytest.approx(1.7)
    by_day = summarize(calls, ["day"])
    assert by_day.schema["day"] == pl.Date
    with pytest.raises(ValueError, match="cannot group by nope"):
        summarize(calls, ["nope"])


# -- per action ------------------------------------------------------------------------------


def test_per_action_hand_computed() -> None:
    calls = _frame(
        [
            _call(1, trace_id="r1", total_cost=0.1),
            _call(2, trace_id="r1", total_cost=0.2),
            _call(3, trace_id="r2", total_cost=0.5),
            _call(4, trace_id="r3", total_cost=0.2),
            _call(5, trace_id="o1", action="other", total_cost=9.0),
            _call(6, trace_id="n1", action=None, total_cost=5.0),
        ]
    )
    result = per_action(calls, {"a": 0.25})
    assert result.columns == list(PER_ACTION_FIELDS)
    assert result["action"].to_list() == ["other", "a"]  # no-action calls left out
    row = result.row(1, named=True)
    costs = [0.3, 0.5, 0.2]
    mean = sum(costs) / 3
    sd = math.sqrt(sum((c - mean) ** 2 for c in costs) / 2)
    assert row["instances"] == 3 and row["calls"] == 4 and row["unpriced_instances"] == 0
    assert row["token_cost"] == pytest.approx(1.0)
    assert row["mean_cost"] == pytest.approx(mean)
    assert row["p50_cost"] == pytest.approx(0.3)
    assert row["p95_cost"] == pytest.approx(0.3 + 0.9 * (0.5 - 0.3))  # linear interpolation
    assert row["max_cost"] == pytest.approx(0.5)
    assert row["cost_cv"] == pytest.approx(sd / mean)
    assert row["action_price"] == 0.25
    assert row["action_plan_cost"] == pytest.approx(0.75)
    assert row["difference"] == pytest.approx(-0.25)
    assert row["break_even_price"] == pytest.approx(mean)
    other = result.row(0, named=True)
    assert other["action_price"] is None and other["action_plan_cost"] is None
    assert other["cost_cv"] is None  # one instance: no spread


def test_per_action_unpriced_instance_is_unknown_not_free() -> None:
    calls = _frame(
        [
            _call(1, trace_id="r1", total_cost=0.4),
            _call(2, trace_id="r2", total_cost=0.2),
            _unpriced(3, trace_id="r2"),
            _unpriced(4, trace_id="r3"),
        ]
    )
    row = per_action(calls, {"a": 1.0}).row(0, named=True)
    assert row["instances"] == 3 and row["unpriced_instances"] == 2
    assert row["token_cost"] == pytest.approx(0.4)  # only the fully priced instance
    assert row["mean_cost"] == pytest.approx(0.4)
    assert row["difference"] == pytest.approx(3.0 - 3 * 0.4)  # per-token side estimated
    with pytest.raises(ValueError, match=">= 0"):
        per_action(calls, {"a": -1.0})


# -- money, prices files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234.567, "$1,234.57"),
        (37.5, "$37.50"),
        (100.0, "$100.00"),
        (0.0375, "$0.0375"),
        (0.1, "$0.10"),
        (0.000123456, "$0.0001235"),
        (0.0, "$0.00"),
        (-62.5, "-$62.50"),
        (None, "—"),
    ],
)
def test_format_usd(value: float | None, text: str) -> None:
    assert format_usd(value) == text


def test_action_prices_from_flags_toml_and_csv(tmp_path) -> None:
    assert parse_action_price("contract-review=$0.10") == ("contract-review", 0.10)
    with pytest.raises(ValueError, match="ACTION=USD"):
        parse_action_price("contract-review")
    toml = tmp_path / "prices.toml"
    toml.write_text('contract-review = 0.10\n"agent session" = 2\n')
    assert load_action_prices(toml) == {"contract-review": 0.10, "agent session": 2.0}
    toml.write_text('contract-review = "cheap"\n')
    with pytest.raises(ValueError, match=r"prices\.toml: 'contract-review' must be a price"):
        load_action_prices(toml)
    table = tmp_path / "prices.csv"
    table.write_text("action,price\ncontract-review,0.10\n\nagent-session,$1.5\n")
    assert load_action_prices(table) == {"contract-review": 0.10, "agent-session": 1.5}
    table.write_text("action,price\ncontract-review,0.10\nagent-session,lots\n")
    with pytest.raises(ValueError, match=r"prices\.csv:3: field 'price': 'lots'"):
        load_action_prices(table)


# -- the command, on a real store --------------------------------------------------------------


@pytest.fixture(scope="module")
def contract_store(tmp_path_factory) -> Store:
    """The article's example: 1,000 contract reviews of 10,000 input + 500 output tokens on
    claude-sonnet-4-5, priced by the real price book."""
    from llmtrace.pricing import price_calls

    n = 1000
    calls = pl.DataFrame(
        {
            "trace_id": [f"{i:032x}" for i in range(n)],
            "span_id": [f"{i:016x}" for i in range(n)],
            "start_time": [NOW - timedelta(days=2, minutes=i) for i in range(n)],
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "prompt": "contract-review@v1",
            "action": "contract-review",
            "service": "legal-api",
            "input_tokens": 10_000,
            "output_tokens": 500,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
        }
    )
    store = Store(tmp_path_factory.mktemp("contracts"))
    assert store.append(price_calls(calls)).added == n
    return store


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["costs", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_worked_example_per_action_json(contract_store: Store) -> None:
    out = _run(
        "--store",
        str(contract_store.path),
        "--per-action-price",
        "contract-review=0.10",
        "--format",
        "json",
    )
    rows = json.loads(out)
    assert [sorted(r) for r in rows] == [sorted(PER_ACTION_FIELDS)]
    row = rows[0]
    assert row["instances"] == 1000 and row["unpriced_instances"] == 0
    assert row["token_cost"] == pytest.approx(37.50, abs=1e-9)
    assert row["action_plan_cost"] == pytest.approx(100.00, abs=1e-9)
    assert row["difference"] == pytest.approx(62.50, abs=1e-9)
    assert row["break_even_price"] == pytest.approx(0.0375, abs=1e-12)
    assert row["cost_cv"] == pytest.approx(0.0, abs=1e-9)


def test_worked_example_table(contract_store: Store, tmp_path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("action,price\ncontract-review,0.10\n")
    out = _run("--store", str(contract_store.path), "--per-action-prices", str(prices))
    for text in ("contract-review", "1,000", "$37.50", "$100.00", "$0.0375"):
        assert text in out
    assert "per-token is cheaper by $62.50" in " ".join(out.split())  # rich wraps lines


def test_summary_json_csv_and_table(contract_store: Store) -> None:
    store = str(contract_store.path)
    rows = json.loads(_run("--store", store, "--by", "model", "--by", "action", "--format", "json"))
    assert len(rows) == 1 and list(rows[0]) == ["model", "action", *SUMMARY_FIELDS]
    assert rows[0]["input_cost"] == pytest.approx(30.0) and rows[0]["output_cost"] == pytest.approx(
        7.5
    )
    assert rows[0]["total_cost"] == pytest.approx(37.5) and rows[0]["calls"] == 1000
    table = list(csv.reader(io.StringIO(_run("--store", store, "--by", "day", "--format", "csv"))))
    assert table[0] == ["day", *SUMMARY_FIELDS]
    assert sum(int(r[1]) for r in table[1:]) == 1000
    text = _run("--store", store)
    assert "claude-sonnet-4-5" in text and "$37.50" in text and "Total" in text
    assert "unpriced" not in text


def test_table_flags_unpriced_calls_with_reasons(tmp_path) -> None:
    store = Store(tmp_path / "s")
    store.append(_frame([_call(1), _unpriced(2, model="mystery-1")]))
    out = _run("--store", str(store.path), "--by", "model")
    assert "1 call(s) unpriced" in out and "unknown_model: 1 (e.g. mystery-1)" in out
    assert "$0.35" in out


def test_empty_store_and_empty_window(tmp_path, monkeypatch) -> None:
    # --store naming a folder that does not exist is a typo: exit 2, one line naming it
    result = CliRunner().invoke(cli, ["costs", "--store", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"llmtrace: error: no store at {tmp_path / 'none'} (check --store)"
    ]
    # the default store missing is a first run: the friendly hint, exit 0, valid empty JSON
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_STORE", raising=False)
    result = CliRunner().invoke(cli, ["costs"])
    assert result.exit_code == 0
    assert "llmtrace demo" in result.output and "llmtrace import otlp" in result.output
    result = CliRunner().invoke(cli, ["costs", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    # an existing but empty --store is not a typo: the same hint
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["costs", "--store", str(tmp_path / "empty")])
    assert result.exit_code == 0 and "llmtrace demo" in result.output
    store = Store(tmp_path / "s")
    store.append(_frame([_call(1)]))
    window = ["--since", "2020-01-01", "--until", "2020-02-01"]
    result = CliRunner().invoke(cli, ["costs", "--store", str(store.path), *window])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 0 and "No calls from 2020-01-01" in text
    day = store.days()[0]
    assert f"which holds calls from {day}" in text and f"--since {day}" in text  # not a circle


def test_bad_per_action_price_is_a_usage_error(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["costs", "--store", str(tmp_path), "--per-action-price", "contract-review=abc"]
    )
    assert result.exit_code == 2
    assert "'abc' is not a price in USD" in result.output
