"""``llmtrace demo --live``: the example app under ``llmtrace run`` against the packaged
loopback provider, priced live, from the command line, with no keys and no network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from llmtrace.demo_live import SERVICE, app_environment
from llmtrace.store import Store

# the loopback's usage, priced by hand (tests/test_live_run.py works the same figures)
GPT4O_CALL = (125 * 2.50 + 1024 * 1.25 + 50 * 10.0) / 1e6
SONNET_CALL = (4 * 3.0 + 5000 * 0.30 + 1163 * 3.75 + 500 * 15.0) / 1e6


def test_demo_live_prices_the_example_app_offline(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = app_environment(
        {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPENAI_API_KEY": "sk-real"},
        "http://127.0.0.1:1/v1",
        "http://127.0.0.1:1",
    )
    assert env["OPENAI_API_KEY"] == "sk-loopback"  # a real key never reaches the demo
    done = subprocess.run(
        [sys.executable, "-m", "llmtrace.cli", "demo", "--live", "--store", str(store)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = " ".join(done.stdout.split())
    assert "openai (stream): Hello from the loopback." in out
    assert "4 calls, " in out and f"--service {SERVICE}" in out and f"--store {store}" in out
    rows = Store(store).scan().filter(pl.col("service") == SERVICE).collect()
    assert rows.height == 4 and set(rows["price_status"]) == {"ok"}
    assert rows["total_cost"].sum() == pytest.approx(2 * GPT4O_CALL + 2 * SONNET_CALL, rel=1e-9)
    assert f"${2 * GPT4O_CALL + 2 * SONNET_CALL:.5f}"[:6] in out
