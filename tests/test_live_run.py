"""End to end: ``llmtrace run -- python examples/chat_app.py``, then ``llmtrace costs``.

Also the other ways in: ``opentelemetry-instrument`` with llmtrace's configurator and completion
hook found through the entry points pyproject.toml declares,
and the exit code passing through ``llmtrace run``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from live.clients import REPO, child_env

from llmtrace.store import Store

pytest_plugins = ["live.fixtures"]

CHAT_APP = str(REPO / "examples" / "chat_app.py")
# gpt-4o with the loopback's usage (1149 in, 1024 cached, 50 out) at $2.50/$1.25/$10 per M;
# claude-sonnet-4-5 (4 uncached, 5000 read, 1163 written, 500 out incl. 300 thinking) at
# $3/$0.30/$3.75/$15 per M.
GPT4O_CALL = (125 * 2.50 + 1024 * 1.25 + 50 * 10.0) / 1e6
SONNET_CALL = (4 * 3.0 + 5000 * 0.30 + 1163 * 3.75 + 500 * 15.0) / 1e6


def llmtrace_command(*args: str) -> list[str]:
    """``llmtrace ARGS`` through the CLI group; ``run`` through its module until it is listed."""
    from llmtrace.cli import cli

    if args[0] == "run" and "run" not in cli.commands:
        return [sys.executable, "-m", "llmtrace.commands.run", *args[1:]]
    return [sys.executable, "-m", "llmtrace.cli", *args]


def _run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=180, check=False
    )


def test_run_chat_app_then_costs(provider: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = child_env(provider)
    result = _run(
        llmtrace_command(
            "run", "--exporters", "store", "--store", str(store), "--", sys.executable, CHAT_APP
        ),
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "openai (stream): Hello from the loopback." in result.stdout
    assert "llmtrace: error" not in result.stderr

    rows = Store(store).scan().collect()
    assert rows.height == 4  # four calls; each Anthropic call's two spans are one row
    assert set(rows["price_status"]) == {"ok"}
    by_model = rows.group_by("request_model").agg(pl.len(), pl.col("total_cost").sum())
    totals = {r["request_model"]: r for r in by_model.to_dicts()}
    assert totals["gpt-4o"]["len"] == 2
    assert totals["gpt-4o"]["total_cost"] == pytest.approx(2 * GPT4O_CALL, rel=1e-9)
    assert totals["claude-sonnet-4-5"]["len"] == 2
    assert totals["claude-sonnet-4-5"]["total_cost"] == pytest.approx(2 * SONNET_CALL, rel=1e-9)
    assert rows["input_fingerprint"].null_count() == 0
    assert rows["input_content"].null_count() == rows.height  # no content without opt-in

    costs = _run(
        llmtrace_command("costs", "--store", str(store), "--since", "1d", "--format", "json"),
        env,
        tmp_path,
    )
    assert costs.returncode == 0, costs.stderr
    report = {row["model"]: row for row in json.loads(costs.stdout)}
    assert set(report) == {"gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929"}
    assert report["gpt-4o-2024-08-06"]["calls"] == 2
    assert report["gpt-4o-2024-08-06"]["total_cost"] == pytest.approx(2 * GPT4O_CALL, rel=1e-9)
    claude = report["claude-sonnet-4-5-20250929"]
    assert claude["calls"] == 2 and claude["unpriced_calls"] == 0
    assert claude["total_cost"] == pytest.approx(2 * SONNET_CALL, rel=1e-9)
    assert claude["reasoning_cost"] == pytest.approx(2 * 300 * 15.0 / 1e6, rel=1e-9)


def test_run_passes_exit_code_through(provider: Any, tmp_path: Path) -> None:
    env = child_env(provider, LLMTRACE_EXPORTERS="store", LLMTRACE_STORE=str(tmp_path / "s"))
    code = "import sys; print('app ran'); sys.exit(3)"
    result = _run(llmtrace_command("run", "--", sys.executable, "-c", code), env, tmp_path)
    assert result.returncode == 3
    assert result.stdout.strip() == "app ran"
    missing = _run(llmtrace_command("run", "--", "no-such-program-xyz"), env, tmp_path)
    assert missing.returncode == 127


@pytest.mark.skipif(shutil.which("opentelemetry-instrument") is None, reason="no CLI")
def test_opentelemetry_instrument_with_llmtrace_configurator(provider: Any, tmp_path: Path) -> None:
    # llmtrace's configurator and completion hook are found through the entry points that
    # pyproject.toml declares for the installed package.
    store = tmp_path / "store"
    env = child_env(
        provider,
        OTEL_PYTHON_CONFIGURATOR="llmtrace",
        LLMTRACE_EXPORTERS="store",
        LLMTRACE_STORE=str(store),
        OTEL_SERVICE_NAME="instrumented-app",
    )
    command = ["opentelemetry-instrument", sys.executable, CHAT_APP, "--only", "openai"]
    result = _run(command, env, tmp_path)
    assert result.returncode == 0, result.stderr
    rows = Store(store).scan().collect()
    assert rows.height == 2
    assert set(rows["service"]) == {"instrumented-app"}
    assert rows["total_cost"].to_list() == pytest.approx([GPT4O_CALL] * 2, rel=1e-9)
    # the completion hook was found through its entry point: fingerprints without content
    assert rows["input_fingerprint"].null_count() == 0
