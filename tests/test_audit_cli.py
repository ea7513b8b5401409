"""``llmtrace audit`` and ``llmtrace rules`` end to end, on demo data in a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.commands.audit import audit
from llmtrace.commands.rules import rules
from llmtrace.config import CONFIG_ENV, Config
from llmtrace.rules.engine import run_audit
from llmtrace.store import Store

demo = pytest.importorskip("llmtrace.demo")
pricing = pytest.importorskip("llmtrace.pricing")

END = datetime(2026, 11, 20, tzinfo=UTC)
UNTIL = ["--until", "2026-11-20"]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 days of demo calls, priced with genai-prices, in a store."""
    path = tmp_path_factory.mktemp("demo") / "store"
    calls = pricing.price_calls(demo.generate(days=14, end=END), pricing.PriceBook())
    Store(path).append(calls)
    return path


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file or price file of the developer's machine leaks into a test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("LLMTRACE_PRICES", raising=False)


def run(command, *args: str):
    """Through the ``llmtrace`` group, as a user runs it (its exit codes and error lines)."""
    return CliRunner().invoke(cli, [command.name, *args], catch_exceptions=False)


def lt101(store: Path, *args: str):
    return run(audit, "--store", str(store), *UNTIL, "--select", "LT101", *args)


def test_demo_audit_finds_lt101_planted_cases(demo_store: Path) -> None:
    """Every planted LT101 case gets exactly the verdict PLANTED says; nothing else is flagged."""
    result = run_audit(Store(demo_store), until=END, config=Config())
    assert not [e for e in result.errors if e.rule == "LT101"]
    found = {
        (f.service, f.prompt, f.model): f.evidence["verdict"]
        for f in result.findings
        if f.rule == "LT101"
    }
    expected = {
        demo.FINDING: "waste",
        demo.INCONCLUSIVE: "inconclusive",
        demo.UNVERIFIED: "unverified",
    }
    planted = [p for p in demo.PLANTED if p.rule == "LT101"]
    assert planted
    for case in planted:
        key = (case.service, case.prompt, case.model)
        if case.expected == demo.NO_FINDING:
            assert key not in found, case.why
        else:
            assert found.get(key) == expected[case.expected], case.why
    flagged = {(p.service, p.prompt, p.model) for p in planted if p.expected != demo.NO_FINDING}
    assert set(found) == flagged  # and nothing else in the demo


def test_json_output(demo_store: Path) -> None:
    result = lt101(demo_store, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rules"] == ["LT101"]
    assert data["errors"] == []
    assert data["window"]["until"].startswith("2026-11-20")
    savings = [f["monthly_savings_usd"] for f in data["findings"]]
    assert savings == sorted(savings, reverse=True)
    # inconclusive (info) findings show a potential saving but do not count in the total
    counted = [f["monthly_savings_usd"] for f in data["findings"] if f["severity"] != "info"]
    assert any(f["severity"] == "info" for f in data["findings"])
    assert data["total_monthly_savings_usd"] == pytest.approx(sum(counted), abs=1e-3)
    top = data["findings"][0]
    assert (top["rule"], top["prompt"], top["model"]) == ("LT101", "clause-risk@v5", "o3")
    assert top["severity"] in {"low", "medium", "high"}
    assert top["evidence"]["verdict"] == "waste"
    assert 50 < top["monthly_savings_usd"] < 5000  # o3 reasoning at ~$8/M: hundreds a month


def test_markdown_output_to_file(demo_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.md"
    result = lt101(demo_store, "--format", "markdown", "--output", str(out))
    assert result.exit_code == 0
    text = out.read_text()
    assert text.startswith("# llmtrace audit")
    assert "| # | Rule | Severity | Prompt | Model | Saving/month | Message |" in text
    assert "clause-risk@v5" in text and "**Evidence**" in text and "**Fix**" in text
    assert "Wrote 3 finding(s)" in result.stderr


def test_text_output(demo_store: Path) -> None:
    result = lt101(demo_store)
    assert result.exit_code == 0
    assert "clause-risk@v5" in result.stdout
    assert "Total" in result.stdout and "Saving/month" in result.stdout


def test_fail_on_savings(demo_store: Path) -> None:
    total = json.loads(lt101(demo_store, "--format", "json").stdout)["total_monthly_savings_usd"]
    over = lt101(demo_store, "--format", "json", "--fail-on-savings", str(total / 2))
    assert over.exit_code == 1
    assert "exceeds --fail-on-savings" in over.stderr
    under = lt101(demo_store, "--format", "json", "--fail-on-savings", str(total * 2))
    assert under.exit_code == 0


def test_explain_prints_the_rule_page() -> None:
    result = run(audit, "--explain", "lt101")
    assert result.exit_code == 0
    page = result.stdout
    assert page.startswith("# reasoning-without-accuracy-gain (LT101)")
    for heading in ("## What it finds", "## Why it costs money", "## How to fix it"):
        assert heading in page
    assert "[rules.LT101]" in page and "delta = 0.02" in page


def test_explain_shows_configured_parameters(tmp_path: Path) -> None:
    (tmp_path / "llmtrace.toml").write_text("[rules.LT101]\ndelta = 0.05\n")
    assert "delta = 0.05" in run(audit, "--explain", "LT101").stdout


def test_explain_unknown_code_exits_2() -> None:
    result = run(audit, "--explain", "LT999")
    assert result.exit_code == 2
    assert "LT999" in result.stderr


def test_bad_config_exits_2_naming_file_and_key(demo_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "strict.toml"
    config.write_text("[rules.LT101]\nmin_ration = 1.2\n")
    result = lt101(demo_store, "--config", str(config))
    assert result.exit_code == 2
    assert "strict.toml" in result.stderr and "min_ration" in result.stderr


def test_unknown_select_exits_2(demo_store: Path) -> None:
    result = run(audit, "--store", str(demo_store), "--select", "LT9")
    assert result.exit_code == 2
    assert "LT9" in result.stderr


def test_broken_custom_rule_still_reports_other_findings(demo_store: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("code: X1\nname: x\nsummary: s\nwhere: 'nope >'\n")
    (tmp_path / "llmtrace.toml").write_text('[rules]\ncustom = ["bad.yaml"]\n')
    result = run(audit, "--store", str(demo_store), *UNTIL, "--select", "LT101", "-o", "r.json")
    assert result.exit_code == 2
    assert "bad.yaml" in result.stderr
    assert "clause-risk@v5" in (tmp_path / "r.json").read_text()


def test_prices_option_reads_the_price_file(demo_store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text("[[price]]\nmultiplier = 2\n")  # no model: a price-file error
    result = lt101(demo_store, "--prices", str(bad))
    assert result.exit_code == 2
    assert "prices.toml" in result.stderr


def test_help_has_examples() -> None:
    result = run(audit, "--help")
    assert "Examples:" in result.stdout and "--fail-on-savings" in result.stdout


def test_rules_lists_builtin_and_custom(tmp_path: Path) -> None:
    rule = (
        "code: X100\nname: expensive-errors\nsummary: Failed calls that cost money\n"
        "where: is_error\nsaving: SUM(total_cost)\n"
        "doc: {what: w, why: y, fix: f}\n"
    )
    (tmp_path / "x100.yaml").write_text(rule)
    (tmp_path / "llmtrace.toml").write_text('[rules]\ncustom = ["*.yaml"]\n')
    result = run(rules, "--format", "json")
    assert result.exit_code == 0
    listed = {r["code"]: r for r in json.loads(result.stdout)["rules"]}
    assert listed["LT101"]["origin"] == "built-in"
    assert listed["LT101"]["name"] == "reasoning-without-accuracy-gain"
    assert listed["X100"]["origin"] == "custom"
    text = run(rules)
    assert "LT101" in text.stdout and "X100" in text.stdout
    assert "X100" in run(audit, "--explain", "X100").stdout
