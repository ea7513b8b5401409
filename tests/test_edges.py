"""Helpful edges: what a new user sees around the main paths (empty input, no argument,
plurals, hints that work when copied, help that is not cut)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmtrace.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("edges") / "my store"
    result = invoke(
        "demo", "--store", str(path), "--days", "1", "--scale", "0.1", "--end", "2026-11-20"
    )
    assert result.exit_code == 0, result.output
    return path, result.stdout


def test_demo_speaks_in_plurals_and_its_hints_carry_the_store(small_store) -> None:
    path, out = small_store
    text = " ".join(out.split())
    assert "over 1 day " in text and "1 days" not in text
    assert "near-misses" in text
    quoted = f"'{path}'"  # a path with a space comes out quoted, ready to paste
    assert f"llmtrace costs --by model --store {quoted}" in out
    assert f"llmtrace audit --store {quoted}" in out


def test_prices_without_a_model_lists_the_store_s_models(small_store) -> None:
    path, _ = small_store
    table = invoke("prices", "--store", str(path), "--at", "2026-11-19")
    assert table.exit_code == 0
    text = " ".join(table.stdout.split())
    assert "claude-sonnet-4-5" in text and "$3.00" in text and "$15.00" in text
    data = json.loads(invoke("prices", "--store", str(path), "--format", "json").stdout)
    models = {m["model"]: m for m in data["models"]}
    assert models["gpt-4o"]["rates"]["input"] == pytest.approx(2.5)
    assert sum(m["calls"] for m in data["models"]) > 0
    calls = [m["calls"] for m in data["models"]]
    assert calls == sorted(calls, reverse=True)


def test_prices_of_an_empty_store_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke("prices", "--store", str(tmp_path / "empty"))
    assert result.exit_code == 0 and "name a model" in result.stderr
    # a --store that does not exist is a typo, not an empty store (tests/test_cli_exits.py)
    assert invoke("prices", "--store", str(tmp_path / "none")).exit_code == 2


def test_an_empty_import_file_warns(tmp_path: Path) -> None:
    empty = tmp_path / "traces.jsonl"
    empty.write_text("")
    result = invoke("import", "otlp", str(empty), "--store", str(tmp_path / "s"))
    assert result.exit_code == 0
    assert "warning: no spans in the 1 file(s) read" in " ".join(result.stderr.split())


@pytest.mark.parametrize("args", [["--help"], ["import", "--help"]])
def test_help_summaries_are_not_cut(args: list[str]) -> None:
    result = CliRunner().invoke(cli, args, terminal_width=80)
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands
