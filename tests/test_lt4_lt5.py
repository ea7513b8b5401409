"""LT401 model right-sizing, LT501 batch-eligible traffic, LT502 duplicate requests.

On the demo: every planted case gets the verdict PLANTED says and nothing else is flagged by
these rules. The statistics are checked against scipy; the rules' edges on small frames.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps

from llmtrace import demo
from llmtrace.config import CONFIG_ENV, Config
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.report import FORMATS, render
from llmtrace.rules import stats
from llmtrace.rules.engine import run_audit
from llmtrace.rules.lt401_rightsizing import noninferiority_p
from llmtrace.store import Store

END = datetime(2026, 11, 20, tzinfo=UTC)
RULES = ("LT401", "LT501", "LT502")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file or price file of the developer's machine leaks into a test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("LLMTRACE_PRICES", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """14 days of demo calls, priced, in a store."""
    path = tmp_path_factory.mktemp("demo") / "store"
    calls = price_calls(demo.generate(days=14, end=END), PriceBook())
    Store(path).append(calls)
    return Store(path)


@pytest.fixture(scope="module")
def result(store: Store):
    return run_audit(store, until=END, config=Config(), select=",".join(RULES))


# -- the demo ------------------------------------------------------------------------------------


def _verdict(finding) -> str:
    if finding.rule == "LT401":
        return demo.FINDING if finding.evidence["verdict"] == "non-inferior" else demo.INCONCLUSIVE
    return demo.FINDING


def test_the_audit_finds_every_planted_case_and_no_near_miss(result) -> None:
    assert not result.errors
    found = {(f.rule, f.service, f.prompt, f.model): _verdict(f) for f in result.findings}
    planted = [p for p in demo.PLANTED if p.rule in RULES]
    assert {p.rule for p in planted} == set(RULES)
    for case in planted:
        key = (case.rule, case.service, case.prompt, case.model)
        if case.expected == demo.NO_FINDING:
            assert key not in found, case.why
        else:
            assert found.get(key) == case.expected, case.why
    flagged = {
        (p.rule, p.service, p.prompt, p.model) for p in planted if p.expected != demo.NO_FINDING
    }
    assert set(found) == flagged  # and nothing else in the demo


def test_findings_carry_their_evidence(result) -> None:
    by_rule = {f.rule: f for f in result.findings if f.severity != "info"}
    right = by_rule["LT401"]
    assert right.evidence["cheaper_model"] == "gpt-4o-mini"
    assert right.evidence["difference_lower_95"] > -0.02
    assert right.evidence["q"] <= 0.05
    assert right.monthly_savings_usd > 5
    inconclusive = next(f for f in result.findings if f.rule == "LT401" and f.severity == "info")
    assert (
        inconclusive.evidence["needed_labels_per_model"]
        > inconclusive.evidence["labelled_expensive"]
    )
    assert "labelled calls per model are needed" in inconclusive.message
    batch = by_rule["LT501"]
    assert batch.evidence["burst_share"] == pytest.approx(1.0)
    assert batch.evidence["conversation_share"] == 0.0
    assert batch.evidence["batch_rate_ratio"]["input"] == pytest.approx(0.5)
    # saving = half the job's cost in the window, as a month
    cost = batch.evidence["cost_in_window_usd"]
    assert batch.evidence["saving_in_window_usd"] == pytest.approx(cost / 2, rel=1e-6)
    dup = by_rule["LT502"]
    top = dup.evidence["top_repeated_requests"]
    assert len(top) == 5 and top[0]["users"] > 1 and top[0]["repeats"] > top[-1]["repeats"]
    assert dup.evidence["repeats"] > 0.4 * dup.evidence["calls_of_repeated_requests"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_findings_in_every_report_format(result, fmt: str) -> None:
    text = render(result, fmt)
    for code in RULES:
        assert code in text
    if fmt == "json":
        rules = {f["rule"] for f in json.loads(text)["findings"]}
        assert rules == set(RULES)


def test_lt502_repeat_cost_equals_an_independent_count(store: Store, result) -> None:
    """Repeats counted by hand: sorted per request, a call within 60 min of the previous
    identical request from another session."""
    calls = (
        store.scan(END - timedelta(days=7), END)
        .filter((pl.col("prompt") == "faq-answer@v3") & ~pl.col("is_error"))
        .select("input_fingerprint", "reasoning_effort", "trace_id", "start_time", "total_cost")
        .collect()
        .sort("input_fingerprint", "start_time")
    )
    rows = calls.to_dicts()
    total = 0.0
    for prev, row in zip(rows, rows[1:], strict=False):
        same = prev["input_fingerprint"] == row["input_fingerprint"]
        close = row["start_time"] - prev["start_time"] <= timedelta(minutes=60)
        if same and close and prev["trace_id"] != row["trace_id"]:
            total += row["total_cost"]
    dup = next(f for f in result.findings if f.rule == "LT502")
    assert dup.evidence["repeat_cost_usd_in_window"] == pytest.approx(total, abs=1e-6)


# -- statistics against scipy --------------------------------------------------------------------


def test_noninferiority_p_inverts_the_newcombe_bound() -> None:
    """At z = Φ⁻¹(1 − p) (scipy), the Newcombe lower bound of p_c − p_e is exactly −margin."""
    rng = np.random.default_rng(3)
    n_c = rng.integers(50, 3000, 40).astype(float)
    n_e = rng.integers(50, 3000, 40).astype(float)
    x_c = np.floor(n_c * rng.uniform(0.6, 0.99, 40))
    x_e = np.floor(n_e * rng.uniform(0.6, 0.99, 40))
    margin = 0.02
    p = noninferiority_p(x_c, n_c, x_e, n_e, margin)
    for i in range(40):
        z = sps.norm.isf(p[i])
        if not 1e-12 < p[i] < 1 - 1e-12:
            continue
        lower, _ = stats.newcombe_interval(x_c[i], n_c[i], x_e[i], n_e[i], z=abs(z))
        if z >= 0:
            assert lower == pytest.approx(-margin, abs=1e-7)
        else:  # p > 0.5: the point estimate is already below −margin
            assert (x_c[i] / n_c[i] - x_e[i] / n_e[i]) < -margin
    # equal accuracy with many labels: clearly non-inferior; a 10 pp deficit: clearly not
    strong = noninferiority_p([1900.0], [2000.0], [1900.0], [2000.0], margin)[0]
    weak = noninferiority_p([1700.0], [2000.0], [1900.0], [2000.0], margin)[0]
    assert strong < 0.01 and weak > 0.99
    # the one-sided 95 % bound and the p-value agree on the decision
    lower, _ = stats.newcombe_interval(1900, 2000, 1900, 2000, z=sps.norm.isf(0.05))
    assert (lower > -margin) == (strong < 0.05)


def test_benjamini_hochberg_matches_scipy() -> None:
    p = np.random.default_rng(5).uniform(0, 0.2, 30)
    frame = stats.benjamini_hochberg(pl.DataFrame({"p": p}))
    assert frame["q"].to_numpy() == pytest.approx(sps.false_discovery_control(p), rel=1e-12)


# -- edges on small frames -----------------------------------------------------------------------


def _frame(rows: list[dict]) -> pl.LazyFrame:
    return pl.DataFrame(rows).lazy()


def test_lt502_ignores_repeats_inside_one_session(tmp_path: Path) -> None:
    """A loop in one session is LT503's; the same repeats from other sessions are LT502's."""
    start = END - timedelta(days=1)

    def calls(session_of) -> pl.LazyFrame:
        return _frame(
            [
                {
                    "trace_id": f"t{i}",
                    "span_id": f"s{i}",
                    "conversation_id": session_of(i),
                    "provider": "openai",
                    "model": "gpt-4o",
                    "prompt": "p",
                    "service": "svc",
                    "input_fingerprint": "same",
                    "start_time": start + timedelta(seconds=30 * i),
                    "input_tokens": 20_000,
                    "output_tokens": 500,
                    "is_error": False,
                }
                for i in range(300)
            ]
        )

    def audit(frame: pl.LazyFrame):
        priced = price_calls(frame, PriceBook()).lazy()
        return run_audit(priced, until=END, config=Config(), select="LT502").findings

    assert audit(calls(lambda i: "one-session")) == []
    found = audit(calls(lambda i: f"session-{i}"))
    assert len(found) == 1 and found[0].evidence["repeats"] == 299


def _weekly_reports(end: datetime) -> list[dict[str, object]]:
    """1,400 calls of the "reports" service, one every 7 minutes over the week before ``end``:
    spread over the day (not batch-shaped), so LT501 flags them only when declared offline."""
    return [
        {
            "trace_id": f"t{i}",
            "span_id": f"s{i}",
            "provider": "openai",
            "model": "gpt-4o",
            "service": "reports",
            "action": "weekly",
            "prompt": "p",
            "start_time": end - timedelta(days=7) + timedelta(minutes=7 * i),
            "duration_ms": 4000.0,
            "input_tokens": 5000,
            "output_tokens": 800,
            "is_error": False,
        }
        for i in range(1400)
    ]


def test_lt501_declared_offline_and_unverified_without_batch_rates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A declared-offline service is eligible whatever its shape; before genai-prices models
    batch rates (2026-10-14) the saving is unverified and names the price-file entry, until the
    user's price file gives the batch tier's price."""
    end = datetime(2026, 9, 1, tzinfo=UTC)
    rows = _weekly_reports(end)
    priced = price_calls(_frame(rows), PriceBook()).lazy()
    config_file = tmp_path / "llmtrace.toml"
    config_file.write_text('[rules.LT501]\noffline_services = ["reports"]\n')
    from llmtrace.config import load_config

    shaped = run_audit(priced, until=end, config=Config(), select="LT501").findings
    assert shaped == []  # spread over the day: not batch-shaped, and not declared
    found = run_audit(priced, until=end, config=load_config(config_file), select="LT501").findings
    assert len(found) == 1
    finding = found[0]
    assert finding.evidence["declared_offline"] is True
    assert finding.severity == "info" and finding.monthly_savings_usd == 0
    assert 'service_tier = "batch"' in finding.evidence["price_file_entry"]
    # the user's own batch price (a price-file entry for the tier) verifies the saving
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "batch"\n'
        "multiplier = 0.5\n"
    )
    monkeypatch.setenv("LLMTRACE_PRICES", str(prices))
    again = run_audit(priced, until=end, config=load_config(config_file), select="LT501")
    (verified,) = again.findings
    assert verified.severity != "info" and verified.evidence["pricing"] == "priced"
    cost = verified.evidence["cost_in_window_usd"]
    assert verified.evidence["saving_in_window_usd"] == pytest.approx(cost / 2, rel=1e-6)
    assert "prices.toml" in verified.evidence["batch_price"]


def test_lt501_prices_the_batch_saving_on_priced_calls_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call whose total is unknown (null: a component could not be priced) but whose output
    cost is known adds to neither side of the saving: the cost in the window is the priced
    calls' total, and the batch cost must scale those same calls' components. Counting its
    output cost on the batch side alone would shrink the saving below half the cost at a 0.5
    batch multiplier."""
    end = datetime(2026, 9, 1, tzinfo=UTC)
    rows = _weekly_reports(end)
    priced = price_calls(_frame(rows), PriceBook())
    unpriced = pl.int_range(pl.len()) % 3 == 0  # a third: total and input unknown, output known
    calls = priced.with_columns(
        pl.when(~unpriced).then(pl.col(c)).alias(c) for c in ("total_cost", "input_cost")
    )
    assert calls.filter(unpriced)["output_cost"].null_count() == 0
    config_file = tmp_path / "llmtrace.toml"
    config_file.write_text('[rules.LT501]\noffline_services = ["reports"]\n')
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "batch"\n'
        "multiplier = 0.5\n"
    )
    monkeypatch.setenv("LLMTRACE_PRICES", str(prices))
    from llmtrace.config import load_config

    (finding,) = run_audit(
        calls.lazy(), until=end, config=load_config(config_file), select="LT501"
    ).findings
    cost = float(calls["total_cost"].sum())
    assert finding.evidence["calls"] == 1400
    assert finding.evidence["cost_in_window_usd"] == pytest.approx(cost, rel=1e-9)
    assert finding.evidence["saving_in_window_usd"] == pytest.approx(cost / 2, rel=1e-6)


def test_lt401_never_recommends_a_switch_without_labels() -> None:
    """Two models on one prompt, the cheaper far cheaper, no labels at all: inconclusive (info,
    not counted) with the labels needed; with labels showing it equally accurate: a finding."""
    start = END - timedelta(days=7)

    def calls(labelled: bool) -> pl.LazyFrame:
        rows = [
            {
                "trace_id": f"t{i}",
                "span_id": f"s{i}",
                "provider": "openai",
                "model": "gpt-4o" if i % 2 else "gpt-4o-mini",
                "service": "svc",
                "prompt": "router@v1",
                "start_time": start + timedelta(minutes=2 * i),
                "input_tokens": 3000,
                "output_tokens": 50,
                "is_error": False,
                "accuracy": (0.0 if i % 40 < 2 else 1.0) if labelled else None,
            }
            for i in range(4000)
        ]
        return price_calls(_frame(rows), PriceBook()).lazy()

    unlabelled = run_audit(calls(False), until=END, config=Config(), select="LT401").findings
    assert len(unlabelled) == 1
    finding = unlabelled[0]
    assert finding.severity == "info" and finding.evidence["verdict"] == "inconclusive"
    assert finding.evidence["needed_labels_per_model"] > 1000
    assert (finding.model, finding.evidence["cheaper_model"]) == ("gpt-4o", "gpt-4o-mini")
    labelled = run_audit(calls(True), until=END, config=Config(), select="LT401").findings
    assert [f.evidence["verdict"] for f in labelled] == ["non-inferior"]
    assert labelled[0].severity != "info" and labelled[0].monthly_savings_usd > 0
