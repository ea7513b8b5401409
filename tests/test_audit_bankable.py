"""Savings you can bank: run-rate savings, the audit's coverage, and audits of nothing.

On the demo (real store, real prices): the same data gives the same monthly saving whatever
window covers it; a 1-day store with the default 7-day window still finds the caching case; a
missing store, an empty store and a window without calls exit 2 naming the store and its dates;
the report says which prompts were checked and which could not be judged.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.config import CONFIG_ENV
from llmtrace.rules import runrate
from llmtrace.rules.lt101_reasoning import _one_per_key
from llmtrace.store import Store

demo = pytest.importorskip("llmtrace.demo")
pricing = pytest.importorskip("llmtrace.pricing")

END = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bankable") / "store"
    calls = pricing.price_calls(demo.generate(days=14, end=END), pricing.PriceBook())
    Store(path).append(calls)
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("LLMTRACE_PRICES", raising=False)
    monkeypatch.delenv("LLMTRACE_STORE", raising=False)


def run(*args: str):
    return CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)


def savings(store: Path, *args: str) -> dict[tuple[str, str], float]:
    result = run("--store", str(store), "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return {
        (f["rule"], f["prompt"]): f["monthly_savings_usd"]
        for f in json.loads(result.stdout)["findings"]
    }


# -- run-rates -------------------------------------------------------------------------------


def test_monthly_savings_agree_across_windows(demo_store: Path) -> None:
    """7, 14 and 30 days over the same 14 days of data: each finding's monthly saving is the
    same run-rate within noise (before, the 30-day window divided 7 days of a change by 30)."""
    until = "2026-11-20"
    by_window = {
        days: savings(
            demo_store, "--since", (END - timedelta(days=days)).isoformat(), "--until", until
        )
        for days in (7, 14, 30)
    }
    for key in [("LT201", "playbook-qa@v2"), ("LT101", "clause-risk@v5")]:
        values = [by_window[days][key] for days in (7, 14, 30)]
        assert max(values) / min(values) < 1.1, (key, values)
    lt301 = [by_window[days][("LT301", "troubleshooter@v3")] for days in (7, 14, 30)]
    assert max(lt301) / min(lt301) < 1.5, lt301


def test_one_day_store_with_the_default_window_finds_the_caching_case(tmp_path: Path) -> None:
    """`llmtrace demo --days 1 && llmtrace audit`: one day of calls runs at a daily rate."""
    store = tmp_path / "one-day"
    made = CliRunner().invoke(cli, ["demo", "--store", str(store), "--days", "1"])
    assert made.exit_code == 0, made.output
    found = savings(store)
    assert ("LT201", "playbook-qa@v2") in found
    # the same case over 14 days of data in a 7-day window: the same run-rate within noise
    fourteen = tmp_path / "fourteen"
    CliRunner().invoke(cli, ["demo", "--store", str(fourteen), "--days", "14"])
    week = savings(fourteen)[("LT201", "playbook-qa@v2")]
    assert found[("LT201", "playbook-qa@v2")] == pytest.approx(week, rel=0.1)


def test_evidence_states_the_basis(demo_store: Path) -> None:
    result = run("--store", str(demo_store), "--since", "2026-10-21", "--until", "2026-11-20",
                 "--format", "json")  # fmt: skip
    findings = json.loads(result.stdout)["findings"]
    lt101 = next(f for f in findings if f["prompt"] == "clause-risk@v5")
    basis = lt101["evidence"]["run_rate_basis"]
    # the effort switch 7 days before the end: the rate since the change, not over 30 days
    assert basis["days_with_data"] == 7
    assert basis["since"].startswith("2026-11-13")
    assert basis["calls_per_day"] > 100
    lt201 = next(f for f in findings if f["rule"] == "LT201")
    assert lt201["evidence"]["run_rate_basis"]["days_with_data"] == 14


def test_basis_days() -> None:
    t0 = datetime(2026, 1, 1, 6, tzinfo=UTC)
    assert runrate.basis_days_value(t0, t0 + timedelta(hours=3), 7.0) == 1.0
    assert runrate.basis_days_value(t0, t0 + timedelta(days=6, hours=16), 30.0) == 7.0
    assert runrate.basis_days_value(t0, t0 + timedelta(days=7, minutes=20), 30.0) == 7.0
    assert runrate.basis_days_value(t0, t0 + timedelta(days=40), 30.0) == 30.0
    assert runrate.basis_days_value(t0, t0 + timedelta(hours=1), 0.25) == 0.25
    frame = pl.DataFrame({"a": [t0], "b": [t0 + timedelta(days=2, hours=20)]})
    ctx = SimpleNamespace(window_days=30.0, data_until=None)
    days = frame.select(runrate.basis_days("a", "b", ctx)).item()  # type: ignore[arg-type]
    assert days == 3.0
    assert runrate.monthly_value(10.0, days) == pytest.approx(100.0)
    # measured to the end of the audit's data: a one-off burst 4 days before it is not daily
    ctx = SimpleNamespace(window_days=7.0, data_until=t0 + timedelta(days=4))
    burst = pl.DataFrame({"a": [t0], "b": [t0 + timedelta(minutes=3)]})
    assert burst.select(runrate.basis_days("a", "b", ctx)).item() == 4.0  # type: ignore[arg-type]
    assert runrate.basis_days_value(t0, t0, 7.0, t0 + timedelta(days=4)) == 4.0


# -- LT101: the most informative verdict wins -----------------------------------------------------


def test_inconclusive_beats_unverified_for_one_prompt() -> None:
    tests = pl.DataFrame(
        {
            "prompt": ["p", "p"],
            "model": ["m", "m"],
            "service": ["s", "s"],
            "comparison": ["version", "window"],
            "arm_a": ["v1", "baseline"],
            "arm_b": ["v2", "current"],
            "verdict": ["unverified", "inconclusive"],
            "monthly_savings_usd": [90.0, 50.0],
            "labelled_a": [0, 40],
            "labelled_b": [0, 40],
        }
    )
    [row] = _one_per_key(tests).iter_rows(named=True)
    assert (row["verdict"], row["comparison"], row["labelled_a"]) == ("inconclusive", "window", 40)
    assert row["also"] == ["version v1->v2"]


# -- audits of nothing ---------------------------------------------------------------------------


def test_missing_store_exits_2_even_with_fail_on_savings(tmp_path: Path) -> None:
    result = run("--store", str(tmp_path / "typo"), "--format", "json", "--fail-on-savings", "100")
    assert result.exit_code == 2
    assert f"no store at {tmp_path / 'typo'}" in "".join(result.stderr.split("\n"))
    assert result.stdout == ""


def test_empty_store_exits_2(tmp_path: Path) -> None:
    (tmp_path / "empty" / "calls").mkdir(parents=True)
    result = run("--store", str(tmp_path / "empty"), "--fail-on-savings", "0")
    assert result.exit_code == 2
    assert "holds no calls" in result.stderr


def test_window_without_calls_names_the_dates_the_store_holds(demo_store: Path) -> None:
    result = run("--store", str(demo_store), "--since", "2025-01-01", "--until", "2025-02-01",
                 "--fail-on-savings", "0")  # fmt: skip
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert "no calls in the window 2025-01-01 00:00 to 2025-02-01 00:00 UTC" in message
    assert "holds calls from 2026-11-06 to 2026-11-19" in message


# -- coverage ----------------------------------------------------------------------------------


def test_report_tells_checked_from_not_judged(demo_store: Path, tmp_path: Path) -> None:
    """A prompt with three calls and no fingerprints beside the demo: listed as not judged."""
    store = tmp_path / "store"
    calls = Store(demo_store).scan().collect()
    recent = pl.col("start_time") >= END - timedelta(days=2)
    rare = calls.filter((pl.col("prompt") == "ticket-triage@v4") & recent).head(3)
    rare = rare.with_columns(
        pl.lit("rare@v1").alias("prompt"),
        (pl.col("trace_id") + "-rare").alias("trace_id"),
        pl.lit(None, dtype=pl.List(pl.UInt64)).alias("prefix_hashes"),
    )
    Store(store).append(pl.concat([calls, rare]))
    result = run("--store", str(store), "--until", "2026-11-20", "--format", "json")
    cover = json.loads(result.stdout)["coverage"]
    assert cover["prompts_not_judged"] == 1
    [entry] = cover["not_judged"]
    assert entry["prompt"] == "rare@v1"
    assert entry["reasons"] == ["no fingerprints", "too few calls"]
    assert cover["prompts_checked_no_waste"] >= 8
    planted = {
        (p.prompt, p.model, p.service) for p in demo.PLANTED if p.expected != demo.NO_FINDING
    }
    assert cover["prompts_with_findings"] == len(planted)
    assert {"LT101", "LT201", "LT301"} <= set(cover["by_rule"])
    # the store's first day: nothing before it to compare with
    no_baseline = run("--store", str(store), "--since", "2026-11-06", "--until", "2026-11-07",
                      "--select", "LT101", "--format", "json")  # fmt: skip
    reasons = {
        e["prompt"]: e["reason"]
        for e in json.loads(no_baseline.stdout)["coverage"]["by_rule"]["LT101"]["not_judged"]
    }
    text = run("--store", str(store), "--until", "2026-11-20").stdout
    assert "prompts checked, no waste found" in " ".join(text.split())
    assert "rare@v1" in text
    assert reasons["clause-risk@v5"] == "no baseline"
    assert set(reasons.values()) == {"no baseline"}


# -- the demo's LT202 and LT203 plants -------------------------------------------------------------


def test_demo_audit_finds_exactly_the_planted_cases(demo_store: Path) -> None:
    """Every planted finding found, no near-miss flagged, nothing else (all rules)."""
    result = run("--store", str(demo_store), "--until", "2026-11-20", "--format", "json")
    found = {(f["rule"], f["prompt"], f["model"]) for f in json.loads(result.stdout)["findings"]}
    planted = {(p.rule, p.prompt, p.model) for p in demo.PLANTED if p.expected != demo.NO_FINDING}
    misses = {(p.rule, p.prompt, p.model) for p in demo.PLANTED if p.expected == demo.NO_FINDING}
    assert found == planted
    assert not found & misses
    assert {"LT202", "LT203"} <= {rule for rule, _, _ in found}


def test_demo_history_caching_priced_like_an_independent_replay(demo_store: Path) -> None:
    from test_lt202 import independent_saving

    since = END - timedelta(days=7)
    result = run("--store", str(demo_store), "--until", "2026-11-20", "--select", "LT202",
                 "--format", "json")  # fmt: skip
    [finding] = json.loads(result.stdout)["findings"]
    calls = (
        Store(demo_store)
        .scan(since, END)
        .filter(pl.col("prompt") == "helpdesk-chat@v2", pl.col("input_tokens").is_not_null())
        .collect()
    )
    days = finding["evidence"]["run_rate_basis"]["days_with_data"]
    truth = independent_saving(calls, "claude-sonnet-4-5", 300.0, 1024) * 30 / days
    assert truth > 20
    assert 1 / 1.5 < finding["monthly_savings_usd"] / truth < 1.5
    assert finding["monthly_savings_usd"] == pytest.approx(truth, rel=0.1)
