"""``llmtrace reprice`` and ``costs --prices``, through the CLI on real stores: overrides reach
stored calls, list prices come back without them, windows hold, reruns change nothing, and a
reprice killed at any moment leaves every call exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path

import genai_prices
import polars as pl
import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.store import Store

SOURCE = f"genai-prices {genai_prices.__version__}"
# calls start at 06:00 on days from ten days ago, so no day's calls cross midnight
START = datetime.combine((datetime.now(UTC) - timedelta(days=10)).date(), dt_time(6), UTC)
# claude-sonnet-4-5, 10,000 input + 500 output tokens: $0.03 + $0.0075 at list prices
SONNET = 0.0375
# gpt-4o, 1,000 input + 100 output tokens: $0.0025 + $0.001
GPT4O = 0.0035
HALF_CLAUDE = """
[[price]]
provider = "anthropic"
model = "claude-*"
multiplier = 0.5
"""


def _calls(days: int, per_day: int, *, start: datetime) -> pl.DataFrame:
    """Alternating Sonnet 4.5 and gpt-4o calls, ``per_day`` on each of ``days`` days."""
    n = days * per_day
    claude = [i % 2 == 0 for i in range(n)]
    return pl.DataFrame(
        {
            "trace_id": [f"{i:032x}" for i in range(n)],
            "span_id": [f"{i:016x}" for i in range(n)],
            "start_time": [
                start + timedelta(days=i // per_day, minutes=i % per_day) for i in range(n)
            ],
            "provider": ["anthropic" if c else "openai" for c in claude],
            "model": ["claude-sonnet-4-5" if c else "gpt-4o" for c in claude],
            "input_tokens": [10_000 if c else 1_000 for c in claude],
            "output_tokens": [500 if c else 100 for c in claude],
        }
    )


def _store(path: Path, days: int = 3, per_day: int = 4) -> Store:
    """A store with one file per day, priced at list prices (whatever the config says)."""
    store = Store(path)
    frame = price_calls(_calls(days, per_day, start=START), PriceBook())
    for part in frame.partition_by("day", maintain_order=True):
        store.append(part)
    return store


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _costs(store: Store) -> dict[str, float]:
    """Total cost per model, as `llmtrace costs --format json` reports it."""
    out = _invoke("costs", "--store", str(store.path), "--since", "90d", "--format", "json")
    return {row["model"]: row["total_cost"] for row in json.loads(out)}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory as a new user sets it up: llmtrace.toml naming prices.toml."""
    (tmp_path / "prices.toml").write_text(HALF_CLAUDE)
    (tmp_path / "llmtrace.toml").write_text('prices = "prices.toml"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    monkeypatch.delenv("LLMTRACE_PRICES", raising=False)
    return tmp_path


def test_reprice_applies_the_configured_override_and_restores_list_prices(project: Path) -> None:
    store = _store(project / ".llmtrace")
    listed = {"claude-sonnet-4-5": 6 * SONNET, "gpt-4o": 6 * GPT4O}
    assert _costs(store) == pytest.approx(listed)
    # `prices` shows the override, yet stored costs are those of import time
    shown = json.loads(_invoke("prices", "claude-sonnet-4-5", "--format", "json"))
    assert shown["rates"]["input"]["base"] == pytest.approx(1.5)
    assert _costs(store) == pytest.approx(listed)

    out = _invoke("reprice")
    assert "Repriced 12 calls" in out
    assert "changed: 6 calls in 3 of 3 files" in out
    assert f"total: ${12 * 0.0:,.2f}" not in out
    before, after = 6 * SONNET + 6 * GPT4O, 3 * SONNET + 6 * GPT4O
    assert f"total: ${before:,.2f} -> ${after:,.2f} (-${before - after:,.2f})" in out
    assert _costs(store) == pytest.approx({"claude-sonnet-4-5": 3 * SONNET, "gpt-4o": 6 * GPT4O})
    stored = store.scan().collect()
    digest = out.split("overrides prices.toml@")[1][:8]
    claude = stored.filter(pl.col("provider") == "anthropic")
    assert set(claude["price_source"]) == {f"{SOURCE} + prices.toml@{digest}#1"}
    assert set(stored.filter(pl.col("provider") == "openai")["price_source"]) == {SOURCE}
    assert claude["total_cost"].to_list() == pytest.approx([SONNET / 2] * 6)
    assert claude["input_cost"].to_list() == pytest.approx([0.015] * 6)

    files = sorted(p.name for p in store.files())
    again = _invoke("reprice")
    assert "changed: 0 calls in 0 of 3 files" in again
    assert sorted(p.name for p in store.files()) == files  # idempotent: nothing rewritten

    (project / "llmtrace.toml").write_text("")
    restored = _invoke("reprice")
    assert "changed: 6 calls in 3 of 3 files" in restored
    assert _costs(store) == pytest.approx(listed)
    assert set(store.scan().collect()["price_source"]) == {SOURCE}


def test_reprice_reads_prices_from_the_option_and_the_environment(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(project / "store")
    (project / "llmtrace.toml").write_text("")
    (project / "gpt.toml").write_text('[[price]]\nmodel = "gpt-4o"\nmultiplier = 2.0\n')
    monkeypatch.setenv("LLMTRACE_PRICES", str(project / "gpt.toml"))
    _invoke("reprice", "--store", str(store.path))
    assert _costs(store) == pytest.approx({"claude-sonnet-4-5": 6 * SONNET, "gpt-4o": 12 * GPT4O})
    _invoke("reprice", "--store", str(store.path), "--prices", str(project / "prices.toml"))
    assert _costs(store) == pytest.approx({"claude-sonnet-4-5": 3 * SONNET, "gpt-4o": 6 * GPT4O})


def test_reprice_touches_only_the_window(project: Path) -> None:
    store = _store(project / ".llmtrace", days=3, per_day=4)
    first_day = START.date()
    since = (first_day + timedelta(days=1)).isoformat()
    out = _invoke(
        "reprice", "--since", since, "--until", (first_day + timedelta(days=2)).isoformat()
    )
    assert "Repriced 4 calls" in out and "changed: 2 calls in 1 of 1 files" in out
    stored = store.scan().collect().filter(pl.col("provider") == "anthropic")
    by_day = dict(stored.group_by("day").agg(pl.col("total_cost").sum()).iter_rows())
    assert by_day == pytest.approx(
        {
            first_day: 2 * SONNET,
            first_day + timedelta(days=1): SONNET,
            first_day + timedelta(days=2): 2 * SONNET,
        }
    )
    # a window that starts inside a day: the day's earlier calls keep their price
    mid = START + timedelta(minutes=1, seconds=30)
    out = _invoke("reprice", "--since", mid.isoformat(), "--until", since)
    assert "Repriced 2 calls" in out and "changed: 1 calls in 1 of 1 files" in out


def test_dry_run_writes_nothing(project: Path) -> None:
    store = _store(project / ".llmtrace")
    files = sorted(p.name for p in store.files())
    out = _invoke("reprice", "--dry-run")
    assert "Would reprice 12 calls" in out and "changed: 6 calls" in out
    assert sorted(p.name for p in store.files()) == files


def test_costs_what_if_prices_on_the_fly_and_writes_nothing(project: Path) -> None:
    store = _store(project / ".llmtrace")
    (project / "llmtrace.toml").write_text("")
    files = sorted(p.name for p in store.files())
    out = _invoke(
        "costs", "--since", "90d", "--format", "json", "--prices", str(project / "prices.toml")
    )
    rows = {row["model"]: row["total_cost"] for row in json.loads(out)}
    assert rows == pytest.approx({"claude-sonnet-4-5": 3 * SONNET, "gpt-4o": 6 * GPT4O})
    table = _invoke("costs", "--since", "90d", "--prices", str(project / "prices.toml"))
    assert "What-if prices:" in table and "nothing written" in table
    assert sorted(p.name for p in store.files()) == files
    assert _costs(store) == pytest.approx({"claude-sonnet-4-5": 6 * SONNET, "gpt-4o": 6 * GPT4O})


def test_bad_price_file_and_empty_store_are_errors(project: Path) -> None:
    (project / "bad.toml").write_text('[[price]]\nmodel = "x"\nmultipler = 2\n')
    _store(project / ".llmtrace")
    result = CliRunner().invoke(cli, ["reprice", "--prices", str(project / "bad.toml")])
    assert result.exit_code != 0 and "bad.toml" in result.output and "multipler" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["reprice", "--store", str(project / "nothing")])
    assert result.exit_code == 2 and f"no store at {project / 'nothing'}" in result.output
    (project / "empty").mkdir()
    result = CliRunner().invoke(cli, ["reprice", "--store", str(project / "empty")])
    assert result.exit_code == 2 and "holds no calls" in result.output


# -- crash safety ------------------------------------------------------------------------------


def _kill_mid_reprice(store: Store, prices: Path, trigger: str) -> bool:
    """Start `llmtrace reprice` in a process and SIGKILL it once a first file was replaced and
    then either a journal is open ("journal": a file is being replaced right now) or not
    ("between": between two files). Returns whether the trigger was seen before the end."""
    before = {p.name for p in store.files()}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmtrace.cli",
            "reprice",
            "--store",
            str(store.path),
            "--prices",
            str(prices),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    seen = False
    try:
        while process.poll() is None and time.monotonic() < deadline:
            files = list(store.calls_dir.glob("day=*/*.parquet"))
            journal = any(store.calls_dir.glob("day=*/compaction.json"))
            if any(p.name not in before for p in files) and journal == (trigger == "journal"):
                seen = True
                break
            time.sleep(0.0002)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return seen


@pytest.mark.parametrize("trigger", ["journal", "between"])
def test_a_reprice_killed_midway_leaves_every_call_once(tmp_path: Path, trigger: str) -> None:
    days = 60
    store = _store(tmp_path / "store", days=days, per_day=2)
    prices = tmp_path / "prices.toml"
    prices.write_text(HALF_CLAUDE)
    keys = store.scan().select("trace_id", "span_id").collect().sort("span_id")

    assert _kill_mid_reprice(store, prices, trigger), "the reprice ended before the kill"

    stored = store.scan().collect()
    assert stored.height == days * 2
    assert stored.select("trace_id", "span_id").sort("span_id").equals(keys)  # each call once
    claude = stored.filter(pl.col("provider") == "anthropic")["total_cost"]
    halved = int((claude - SONNET / 2).abs().lt(1e-12).sum())
    listed = int((claude - SONNET).abs().lt(1e-12).sum())
    assert halved + listed == days  # each call has the old price or the new, nothing else
    assert 0 < halved < days, "the kill did not land mid-reprice"

    out = _invoke("reprice", "--store", str(store.path), "--prices", str(prices))
    assert f"changed: {listed} calls" in out  # the rerun finishes exactly the rest
    final = store.scan().collect()
    assert final.height == days * 2 and final.select("trace_id", "span_id").n_unique() == days * 2
    assert final.filter(pl.col("provider") == "anthropic")["total_cost"].to_list() == pytest.approx(
        [SONNET / 2] * days
    )
    assert not list(store.calls_dir.glob("day=*/compaction.json"))
