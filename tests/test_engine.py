"""The engine: rule selection, parameters, custom YAML rules, errors, and the report renderers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from llmtrace.config import Config, ConfigError, load_config
from llmtrace.report import render
from llmtrace.rules import lt101_reasoning
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import (
    AuditResult,
    AuditWindow,
    RuleError,
    audit_window,
    run_audit,
    select_codes,
)
from llmtrace.rules.loader import builtin_specs, parse_spec
from llmtrace.store import Store

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)

EXPENSIVE_ERRORS = """\
code: X100
name: expensive-errors
summary: Failed calls that still cost money
severity: low
where: "is_error AND total_cost > 0"
group_by: [prompt, model, service]
saving: "SUM(total_cost)"
min_monthly_savings_usd: 1.0
message: "{calls} failed calls cost ${saving:.2f} in the window"
doc:
  what: Failed calls that were billed.
  why: A failed call is paid for and gives nothing.
  fix: Validate inputs before calling; stop retrying on non-retryable errors.
"""


def error_calls(
    prompt: str, n: int, cost: float, *, is_error: bool = True, every_h: float = 2.4
) -> pl.DataFrame:
    """n calls ``every_h`` hours apart from SINCE (2.4 h: 70 calls span the 7-day window)."""
    return pl.DataFrame(
        {
            "trace_id": [f"{prompt}-{is_error}-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "start_time": [SINCE + timedelta(hours=(i * every_h) % 167) for i in range(n)],
            "prompt": [prompt] * n,
            "model": ["gpt-4o"] * n,
            "service": ["api"] * n,
            "is_error": [is_error] * n,
            "total_cost": [cost] * n,
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.append(error_calls("checkout", 70, 0.10))  # $7 over the 7 days: $30/month
    # $0.05 over 6 days with calls: $0.25/month, below the $1 floor
    store.append(error_calls("search", 5, 0.01, every_h=36))
    store.append(error_calls("checkout", 50, 0.50, is_error=False))  # not errors
    return store


def write_config(tmp_path: Path, text: str, rules: dict[str, str] | None = None) -> Config:
    for name, body in (rules or {}).items():
        path = tmp_path / "my_rules" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
    config = tmp_path / "llmtrace.toml"
    config.write_text(text)
    return load_config(config)


CUSTOM = '[rules]\ncustom = ["my_rules/*.yaml"]\n'


def audit(store: Store, config: Config, **kwargs) -> AuditResult:
    return run_audit(store, since=SINCE, until=UNTIL, config=config, **kwargs)


# -- custom YAML rules -----------------------------------------------------------------------


def test_custom_rule_finds_expensive_errors(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, CUSTOM, {"x100.yaml": EXPENSIVE_ERRORS})
    result = audit(store, config, select="X")
    assert result.errors == []
    assert result.rules_run == ["X100"]
    [finding] = result.findings
    assert (finding.rule, finding.name, finding.severity) == ("X100", "expensive-errors", "low")
    assert (finding.prompt, finding.model, finding.service) == ("checkout", "gpt-4o", "api")
    assert finding.monthly_savings_usd == pytest.approx(7.0 * 30 / 7)
    assert finding.message == "70 failed calls cost $7.00 in the window"
    assert finding.fix.startswith("Validate inputs")
    assert finding.evidence["calls"] == 70
    assert finding.evidence["window_saving_usd"] == pytest.approx(7.0)
    assert finding.evidence["run_rate_basis"]["days_with_data"] == 7
    assert result.calls_scanned == 125


def test_custom_rule_floor_is_a_parameter(tmp_path: Path, store: Store) -> None:
    config = write_config(
        tmp_path,
        CUSTOM + "[rules.X100]\nmin_monthly_savings_usd = 0.1\n",
        {"x100.yaml": EXPENSIVE_ERRORS},
    )
    prompts = sorted(f.prompt for f in audit(store, config, select="X100").findings)
    assert prompts == ["checkout", "search"]


def test_custom_rule_group_by_other_fields(tmp_path: Path, store: Store) -> None:
    rule = EXPENSIVE_ERRORS.replace("[prompt, model, service]", "[model]").replace(
        '"{calls} failed', '"{model}: {calls} failed'
    )
    config = write_config(tmp_path, CUSTOM, {"x100.yaml": rule})
    [finding] = audit(store, config, select="X100").findings
    assert finding.prompt is None and finding.model == "gpt-4o"
    assert finding.key == {"model": "gpt-4o"}
    assert finding.message.startswith("gpt-4o: 75 failed calls")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('where: "is_error AND total_cost > 0"', 'where: "is_error AND"'), "where"),
        (('where: "is_error AND total_cost > 0"', 'where: "is_eror"'), "where"),
        (('where: "is_error AND total_cost > 0"', 'where: "total_cost"'), "where"),
        (('saving: "SUM(total_cost)"', 'saving: "SUM(model)"'), "saving"),
        (('saving: "SUM(total_cost)"', 'saving: "total_cost"'), "saving"),
        (("group_by: [prompt, model, service]", "group_by: [prompt, nope]"), "group_by"),
        (("severity: low", "severity: urgent"), "severity"),
        (("code: X100", "code: x-100"), "code"),
        (("name: expensive-errors\n", ""), "name"),
        (("min_monthly_savings_usd: 1.0", "min_monthly_savings_usd: lots"), "min_monthly"),
        (('message: "{calls} failed', 'message: "{count} failed'), "message"),
        (("summary: Failed", "sumary: Failed"), "sumary"),
        (("  fix: Validate", "  fixx: Validate"), "doc"),
    ],
)
def test_malformed_custom_rule_is_named_and_others_still_run(
    tmp_path: Path, store: Store, change: tuple[str, str], field: str
) -> None:
    old, new = change
    assert old in EXPENSIVE_ERRORS
    good = EXPENSIVE_ERRORS.replace("X100", "X200").replace("expensive-errors", "errors-two")
    config = write_config(
        tmp_path, CUSTOM, {"bad.yaml": EXPENSIVE_ERRORS.replace(old, new), "good.yaml": good}
    )
    result = audit(store, config, select="X")
    [error] = result.errors
    assert "bad.yaml" in error.message
    assert field in error.message
    assert result.rules_run == ["X200"]  # the good rule still ran
    assert [f.rule for f in result.findings] == ["X200"]


def test_custom_rule_file_that_is_not_yaml(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, CUSTOM, {"bad.yaml": "code: [X1\nname: x\n"})
    result = audit(store, config, select="LT101")
    [error] = result.errors
    assert "bad.yaml" in error.message and "line" in error.message


def test_custom_pattern_matching_nothing_is_an_error(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, '[rules]\ncustom = ["nowhere/*.yaml"]\n')
    result = audit(store, config, select="LT101")
    assert "matches no file" in result.errors[0].message
    assert result.rules_run == ["LT101"]


def test_custom_rule_cannot_reuse_a_builtin_code(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, CUSTOM, {"x.yaml": EXPENSIVE_ERRORS.replace("X100", "LT101")})
    result = audit(store, config, select="LT101")
    assert any("already used" in e.message for e in result.errors)


# -- selection and parameters ----------------------------------------------------------------


def test_select_and_ignore_by_prefix() -> None:
    codes = ["LT101", "LT201", "LT301", "X100"]
    assert select_codes(codes, None, None) == codes
    assert select_codes(codes, ["LT"], ["LT2"]) == ["LT101", "LT301"]
    assert select_codes(codes, ["LT1", "X"], None) == ["LT101", "X100"]
    assert select_codes(codes, ["ALL"], ["X100"]) == ["LT101", "LT201", "LT301"]
    with pytest.raises(ConfigError, match="'LT9' matches no rule"):
        select_codes(codes, ["LT9"], None)


def test_select_from_config_and_cli_override(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, CUSTOM + 'select = ["LT1"]\n', {"x100.yaml": EXPENSIVE_ERRORS})
    assert audit(store, config).rules_run == ["LT101"]
    assert audit(store, config, select="X100").rules_run == ["X100"]
    assert audit(store, config, select="LT1,X", ignore=["LT101"]).rules_run == ["X100"]


def test_unknown_parameter_names_file_and_key(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, "[rules.LT101]\ndelta = 0.01\nmin_ration = 1.2\n")
    with pytest.raises(ConfigError) as info:
        audit(store, config, select="LT101")
    message = str(info.value)
    assert "llmtrace.toml" in message and "[rules.LT101]" in message and "min_ration" in message


def test_parameter_of_wrong_type(tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path, '[rules.LT101]\ndelta = "two points"\n')
    with pytest.raises(ConfigError, match="'delta'"):
        audit(store, config, select="LT101")


def test_unknown_rule_table_and_key(tmp_path: Path, store: Store) -> None:
    with pytest.raises(ConfigError, match=r"\[rules.LT999\]"):
        audit(store, write_config(tmp_path, "[rules.LT999]\ndelta = 1\n"))
    with pytest.raises(ConfigError, match="selct"):
        audit(store, write_config(tmp_path, '[rules]\nselct = ["LT1"]\n'))


def test_parameters_reach_the_rule(tmp_path: Path, store: Store, monkeypatch) -> None:
    seen: list[dict] = []
    original = lt101_reasoning.RULE.decide

    def spy(aggregates, ctx):
        seen.append(dict(ctx.params))
        return original(aggregates, ctx)

    monkeypatch.setattr(lt101_reasoning.RULE, "decide", spy)
    config = write_config(tmp_path, "[rules.LT101]\ndelta = 0.05\n[accuracy]\nnames = ['ok']\n")
    audit(store, config, select="LT101")
    assert seen[0]["delta"] == 0.05
    assert seen[0]["min_ratio"] == builtin_specs()["LT101"].params["min_ratio"]


def test_a_failing_rule_is_reported_and_the_others_run(
    tmp_path: Path, store: Store, monkeypatch
) -> None:
    def broken(aggregates, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(lt101_reasoning.RULE, "decide", broken)
    config = write_config(tmp_path, CUSTOM, {"x100.yaml": EXPENSIVE_ERRORS})
    result = audit(store, config, select="LT101,X100")
    assert result.errors == [RuleError("LT101", "decide failed: RuntimeError: boom")]
    assert result.rules_run == ["X100"]
    assert [f.rule for f in result.findings] == ["X100"]


def test_lazyframe_source_and_window_filter(tmp_path: Path) -> None:
    calls = pl.concat(
        [error_calls("checkout", 70, 0.10), error_calls("old", 70, 0.10)]
    ).with_columns(
        pl.when(pl.col("prompt") == "old")
        .then(pl.col("start_time") - timedelta(days=30))
        .otherwise(pl.col("start_time"))
        .alias("start_time")
    )
    config = write_config(tmp_path, CUSTOM, {"x100.yaml": EXPENSIVE_ERRORS})
    result = run_audit(calls.lazy(), since=SINCE, until=UNTIL, config=config, select="X100")
    assert [f.prompt for f in result.findings] == ["checkout"]
    assert result.calls_scanned == 70


def test_default_window_and_baseline(tmp_path: Path) -> None:
    window = audit_window(None, None, Config(), now=UNTIL)
    assert (window.since, window.until) == (UNTIL - timedelta(days=7), UNTIL)
    assert (window.baseline_since, window.baseline_until) == (UNTIL - timedelta(days=14), SINCE)
    custom = audit_window(SINCE, UNTIL, Config(data={"rules": {"baseline_days": 28}}))
    assert custom.baseline_since == SINCE - timedelta(days=28)
    with pytest.raises(ConfigError, match="empty"):
        audit_window(UNTIL, SINCE, Config())


def test_builtin_rule_pack_is_valid() -> None:
    specs = builtin_specs()
    assert "LT101" in specs
    for spec in specs.values():
        assert spec.doc.what and spec.doc.why and spec.doc.fix


def test_parse_spec_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"rules/X\.yaml: field 'doc'"):
        parse_spec({"code": "X1", "name": "n", "summary": "s"}, "rules/X.yaml")


# -- renderers -------------------------------------------------------------------------------


def sample_result() -> AuditResult:
    finding = Finding(
        rule="LT101",
        name="reasoning-without-accuracy-gain",
        severity="medium",
        prompt="triage|v2 *bold*",
        model="gpt-5",
        service="api",
        window_start=SINCE,
        window_end=UNTIL,
        monthly_savings_usd=412.5,
        message="Reasoning rose 1.8x | accuracy flat",
        fix="Use effort medium.",
        evidence={"ratio_of_means": 1.8, "q": 1e-9, "arm_a": "medium|low"},
        key={"prompt": "triage|v2 *bold*"},
    )
    small = Finding(
        rule="X100",
        name="expensive-errors",
        severity="low",
        prompt="checkout",
        model="gpt-4o",
        service="api",
        window_start=SINCE,
        window_end=UNTIL,
        monthly_savings_usd=30.0,
        message="70 failed calls",
        fix="Validate.",
        evidence={"calls": 70, "ratio": float("inf")},
    )
    window = AuditWindow(SINCE, UNTIL, SINCE - timedelta(days=7), SINCE)
    return AuditResult(
        findings=[small, finding],
        rules_run=["LT101", "X100"],
        calls_scanned=1234,
        window=window,
        errors=[RuleError("LT201", "logic not available")],
    )


def test_json_report_shape() -> None:
    data = json.loads(render(sample_result(), "json"))
    assert set(data) >= {"findings", "total_monthly_savings_usd", "window", "rules", "errors"}
    assert data["total_monthly_savings_usd"] == pytest.approx(442.5)
    assert data["rules"] == ["LT101", "X100"]
    assert data["errors"] == [{"rule": "LT201", "message": "logic not available"}]
    first = data["findings"][0]
    for key in ("rule", "name", "severity", "prompt", "model", "monthly_savings_usd", "evidence"):
        assert key in first
    assert data["findings"][0]["evidence"]["ratio"] is None  # inf is not JSON


def test_text_report_sorted_with_total() -> None:
    text = render(sample_result(), "text")
    assert text.index("412.50") < text.index("30.00")
    assert "Total" in text and "$442.50" in text
    assert "error: LT201" in text


def test_markdown_report_escapes_cells() -> None:
    md = render(sample_result(), "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "triage\\|v2 \\*bold\\*" in row
    assert row.count(" | ") == 6  # seven cells: no unescaped pipe inside a cell
    assert "Reasoning rose 1.8x \\| accuracy flat" in row
    assert "## 1. LT101 reasoning-without-accuracy-gain" in md
    assert "**Fix**" in md and "Use effort medium." in md
    assert "| Arm A | medium\\|low |" in md  # labelled (report/evidence.py), still escaped
    assert "## Errors" in md


def test_empty_report() -> None:
    result = sample_result()
    result.findings = []
    assert "No findings" in render(result, "text")
    assert "No findings." in render(result, "markdown")
    assert json.loads(render(result, "json"))["findings"] == []
