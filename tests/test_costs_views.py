"""``llmtrace costs`` views: group keys, order, ``--by a,b``, ``--sort``, glob filters (shared
with ``audit``), and a per-action table whose columns add up."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.costs import GROUP_KEY_TABLE, GROUP_KEYS, summarize
from llmtrace.filters import filter_expr
from llmtrace.store import Store

END = "2026-11-20"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("views") / "store"
    args = ["demo", "--store", str(path), "--days", "5", "--end", END, "--scale", "0.3"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


def costs(store: Path, *args: str) -> list[dict]:
    window = ["--since", "2026-11-01", "--until", END]
    result = CliRunner().invoke(
        cli, ["costs", "--store", str(store), *window, "--format", "json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_time_keys_sort_by_time_and_the_rest_by_cost(store: Path) -> None:
    days = costs(store, "--by", "day")
    assert [r["day"] for r in days] == sorted(r["day"] for r in days)
    assert len(days) == 5
    by_day_model = costs(store, "--by", "day,model")
    firsts = [r["day"] for r in by_day_model]
    assert firsts == sorted(firsts)  # days in order, models by cost within each day
    for day in set(firsts):
        spend = [r["total_cost"] or 0 for r in by_day_model if r["day"] == day]
        assert spend == sorted(spend, reverse=True)
    models = costs(store, "--by", "model")
    spend = [r["total_cost"] or 0 for r in models]
    assert spend == sorted(spend, reverse=True)


def test_sort_option(store: Path) -> None:
    by_calls = costs(store, "--by", "model", "--sort", "calls")
    assert [r["calls"] for r in by_calls] == sorted((r["calls"] for r in by_calls), reverse=True)
    by_name = costs(store, "--by", "model", "--sort", "model")
    assert [r["model"] for r in by_name] == sorted(r["model"] for r in by_name)
    bad = CliRunner().invoke(cli, ["costs", "--store", str(store), "--sort", "colour"])
    assert bad.exit_code == 2 and "choose from cost, calls, tokens, model" in bad.output


def _rounded(rows: list[dict]) -> list[dict]:
    """Float sums differ in the last bits with Polars' parallel summation order."""
    return [{k: round(v, 9) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


def test_comma_and_repeated_by_are_the_same(store: Path) -> None:
    one = costs(store, "--by", "prompt,model")
    assert _rounded(one) == _rounded(costs(store, "--by", "prompt", "--by", "model"))
    assert list(costs(store, "--by", "service, action")[0])[:2] == ["service", "action"]


@pytest.mark.parametrize(
    ("key", "field"), [("user", "user_id"), ("conversation", "conversation_id")]
)
def test_user_conversation_environment_keys(store: Path, key: str, field: str) -> None:
    rows = costs(store, "--by", key)
    calls = Store(store).scan().filter(pl.col("start_time") < pl.lit(date(2026, 11, 20)))
    expected = calls.group_by(field).len().collect()
    assert len(rows) == expected.height
    assert sum(r["calls"] for r in rows) == expected["len"].sum()
    assert costs(store, "--by", "environment")[0]["environment"] is not None


def test_week_and_month_buckets_add_up_to_the_days(store: Path) -> None:
    total = sum(r["calls"] for r in costs(store, "--by", "day"))
    for key in ("hour", "week", "month"):
        rows = costs(store, "--by", key)
        assert sum(r["calls"] for r in rows) == total
        assert [r[key] for r in rows] == sorted(r[key] for r in rows)


def test_group_keys_are_a_table_whose_fields_exist() -> None:
    assert {"user", "conversation", "environment", "day"} <= set(GROUP_KEYS)
    from llmtrace.record import CALL_SCHEMA

    assert all(key.field in CALL_SCHEMA for key in GROUP_KEY_TABLE.values())
    assert ("service_tier" in GROUP_KEYS) == ("service_tier" in CALL_SCHEMA)


def test_glob_filters_on_costs(store: Path) -> None:
    everything = costs(store, "--by", "model")
    gpt = costs(store, "--by", "model", "--model", "gpt-4o*")
    assert {r["model"] for r in gpt} == {r["model"] for r in everything} & {"gpt-4o", "gpt-4o-mini"}
    both = costs(store, "--by", "model", "--model", "gpt-4o-mini", "--model", "o3")
    assert {r["model"] for r in both} == {"gpt-4o-mini", "o3"}
    assert costs(store, "--by", "model", "--model", "gpt-4o-mini,o3") == both
    # services whose calls carry an environment (the demo's coding-agent transcripts have none)
    services = {r["service"] for r in costs(store, "--by", "service", "--environment", "*")}
    one = sorted(services)[0]
    rows = costs(store, "--by", "service,model", "--service", one, "--environment", "*")
    assert {r["service"] for r in rows} == {one}


def test_filters_that_match_nothing_explain_themselves(store: Path) -> None:
    result = CliRunner().invoke(
        cli, ["costs", "--store", str(store), "--since", "2026-11-01", "--model", "nothing*"]
    )
    assert result.exit_code == 0
    assert "matching model=nothing*" in " ".join(result.output.split())


def test_glob_semantics() -> None:
    frame = pl.DataFrame({"model": ["gpt-4o", "gpt-4o-mini", "o3", "a.b", None]})

    def match(*patterns: str) -> list[str | None]:
        expr = filter_expr({"model": patterns})
        assert expr is not None
        return frame.filter(expr)["model"].to_list()

    assert match("gpt-4o") == ["gpt-4o"]  # anchored: no substring match
    assert match("gpt-4o*") == ["gpt-4o", "gpt-4o-mini"]
    assert match("?3") == ["o3"]
    assert match("a.b") == ["a.b"]  # a dot is a dot
    assert match("[!g]*") == ["o3", "a.b"]
    assert filter_expr({"model": ()}) is None


def test_audit_takes_the_same_filters(store: Path) -> None:
    base = ["audit", "--store", str(store), "--until", END, "--since", "2026-11-15"]
    everything = json.loads(CliRunner().invoke(cli, [*base, "--format", "json"]).stdout)
    some = json.loads(
        CliRunner().invoke(cli, [*base, "--format", "json", "--service", "legal*"]).stdout
    )
    assert 0 < some["calls_scanned"] < everything["calls_scanned"]


def test_summarize_library_keeps_its_contract(store: Path) -> None:
    calls = Store(store).scan()
    assert summarize(calls, ["day"])["day"].is_sorted()
    assert summarize(calls, ["model,provider"]).columns[:2] == ["model", "provider"]
