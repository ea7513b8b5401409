"""LT101 on workloads with known answers, written to a real store and audited by the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llmtrace.config import Config
from llmtrace.rules.engine import run_audit
from llmtrace.store import Store

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)
BASELINE = SINCE - timedelta(days=7)
RATE = 10e-6  # USD per reasoning token, set directly on the records


def calls(
    prompt: str,
    n: int,
    start: datetime,
    mean_reasoning: float,
    *,
    days: float = 7.0,
    accuracy: float | None = None,
    labelled: int = 0,
    seed: int = 0,
    model: str = "gpt-5",
    effort: str | None = None,
    name: str | None = None,
    version: str | None = None,
    rate: float | None = RATE,
) -> pl.DataFrame:
    """n calls spread over ``days`` from ``start``; lognormal reasoning; exact accuracy share."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, days * 86400, n))
    reasoning = rng.lognormal(np.log(mean_reasoning), 0.5, n).astype(np.int64)
    labels: list[float | None] = [None] * n
    if accuracy is not None:
        correct = round(accuracy * labelled)
        marks = [1.0] * correct + [0.0] * (labelled - correct)
        rng.shuffle(marks)
        labels = marks + [None] * (n - labelled)
    return pl.DataFrame(
        {
            "trace_id": [f"{prompt}-{seed}-{i}" for i in range(n)],
            "span_id": ["01"] * n,
            "start_time": [start + timedelta(seconds=float(s)) for s in offsets],
            "prompt": [prompt] * n,
            "prompt_name": [name] * n,
            "prompt_version": [version] * n,
            "model": [model] * n,
            "provider": ["openai"] * n,
            "service": ["svc"] * n,
            "reasoning_effort": [effort] * n,
            "input_tokens": [500] * n,
            "output_tokens": reasoning + 200,
            "reasoning_tokens": reasoning,
            "reasoning_cost": None if rate is None else reasoning * rate,
            "accuracy": labels,
        },
        schema_overrides={
            "accuracy": pl.Float64,
            "prompt_name": pl.String,
            "prompt_version": pl.String,
            "reasoning_effort": pl.String,
            "reasoning_cost": pl.Float64,
        },
    )


def audit(tmp_path: Path, *frames: pl.DataFrame, config: Config | None = None, **kwargs):
    store = Store(tmp_path / "store")
    for frame in frames:
        store.append(frame)
    result = run_audit(
        store, since=SINCE, until=UNTIL, config=config or Config(), select=["LT101"], **kwargs
    )
    assert result.errors == []
    assert result.rules_run == ["LT101"]
    return result


def by_prompt(result) -> dict[str, list]:
    found: dict[str, list] = {}
    for finding in result.findings:
        found.setdefault(finding.prompt, []).append(finding)
    return found


def pair(prompt: str, before: float, after: float, seed: int, **kwargs) -> list[pl.DataFrame]:
    """Baseline and current windows of one prompt; ``accuracy`` may be a (before, after) pair."""
    accuracy = kwargs.pop("accuracy", None)
    acc_a, acc_b = accuracy if isinstance(accuracy, tuple) else (accuracy, accuracy)
    return [
        calls(prompt, 1500, BASELINE, before, seed=seed, accuracy=acc_a, **kwargs),
        calls(prompt, 1500, SINCE, after, seed=seed + 1, accuracy=acc_b, **kwargs),
    ]


def test_reasoning_rose_accuracy_flat_with_many_labels_is_waste(tmp_path: Path) -> None:
    frames = pair("waste", 1000, 2000, 1, accuracy=0.95, labelled=1000)
    result = audit(tmp_path, *frames)
    [finding] = result.findings
    ev = finding.evidence
    assert (finding.rule, finding.prompt, finding.model) == ("LT101", "waste", "gpt-5")
    assert ev["verdict"] == "waste" and ev["comparison"] == "window"
    assert finding.severity in {"low", "medium", "high"}
    assert ev["q"] <= 0.05 and ev["ratio_of_means"] >= 1.15
    assert ev["accuracy_gain_upper"] < ev["delta"] == 0.02
    assert ev["labelled_a"] == ev["labelled_b"] == 1000
    assert ev["calls_a"] == ev["calls_b"] == 1500
    assert 1800 <= ev["median_reasoning_b"] <= 2200
    # saving = extra tokens per call x calls per month x reasoning rate, checked by hand
    current, base = frames[1], frames[0]
    extra = current["reasoning_tokens"].mean() - base["reasoning_tokens"].mean()
    expected = extra * 1500 * 30 / 7 * RATE
    assert finding.monthly_savings_usd == pytest.approx(expected, rel=1e-6)
    assert ev["reasoning_usd_per_million_tokens"] == pytest.approx(10.0)
    assert "below 2.0 pp" in finding.message


def test_reasoning_rose_and_accuracy_rose_is_not_flagged(tmp_path: Path) -> None:
    result = audit(tmp_path, *pair("gain", 1000, 2000, 3, accuracy=(0.80, 0.90), labelled=1000))
    assert result.findings == []


def test_too_few_labels_is_inconclusive_info(tmp_path: Path) -> None:
    result = audit(tmp_path, *pair("few", 1000, 2000, 5, accuracy=0.9, labelled=40))
    [finding] = result.findings
    assert finding.severity == "info"
    assert finding.evidence["verdict"] == "inconclusive"
    needed = finding.evidence["labelled_needed_per_arm"]
    assert needed > 40
    # p = 0.9 and a 2 pp half-width: z²·2p(1-p)/h² ≈ 1,217 (Agresti-Caffo adjusted p: a bit more)
    assert 1000 < needed < 2000
    assert f"{needed:,} labelled calls per arm" in finding.message


def test_no_labels_is_unverified_low(tmp_path: Path) -> None:
    result = audit(tmp_path, *pair("nolabels", 1000, 2000, 7))
    [finding] = result.findings
    assert finding.severity == "low"
    assert finding.evidence["verdict"] == "unverified"
    assert finding.evidence["labelled_a"] == 0


def test_no_reasoning_change_is_not_flagged(tmp_path: Path) -> None:
    result = audit(tmp_path, *pair("flat", 1000, 1000, 9, accuracy=0.9, labelled=1000))
    assert result.findings == []


def test_small_rise_below_material_ratio_is_not_flagged(tmp_path: Path) -> None:
    """+8 % is significant with 1,500 calls per arm but below min_ratio 1.15."""
    result = audit(tmp_path, *pair("small", 1000, 1080, 11, accuracy=0.95, labelled=1000))
    assert result.findings == []


def test_fewer_calls_than_min_calls_per_arm_are_not_tested(tmp_path: Path) -> None:
    frames = [calls("tiny", 20, BASELINE, 1000, seed=1), calls("tiny", 20, SINCE, 5000, seed=2)]
    assert audit(tmp_path, *frames).findings == []


def test_several_workloads_in_one_audit(tmp_path: Path) -> None:
    frames = [
        *pair("waste", 1000, 2000, 1, accuracy=0.95, labelled=1000),
        *pair("gain", 1000, 2000, 3, accuracy=(0.80, 0.90), labelled=1000),
        *pair("few", 1000, 2000, 5, accuracy=0.9, labelled=40),
        *pair("nolabels", 1000, 2000, 7),
        *pair("flat", 1000, 1000, 9, accuracy=0.9, labelled=1000),
    ]
    found = by_prompt(audit(tmp_path, *frames))
    assert sorted(found) == ["few", "nolabels", "waste"]
    assert [f.evidence["verdict"] for f in found["waste"]] == ["waste"]
    assert [f.severity for f in found["few"]] == ["info"]
    assert [f.severity for f in found["nolabels"]] == ["low"]


def test_prompt_version_against_version(tmp_path: Path) -> None:
    v1 = calls("summ@v1", 1500, BASELINE, 1000, days=10, seed=1, accuracy=0.95, labelled=1000)
    v2 = calls("summ@v2", 1500, SINCE + timedelta(days=3), 2000, days=4, seed=2)
    v2 = v2.with_columns(pl.Series("accuracy", v1["accuracy"].to_list()))
    v1 = v1.with_columns(prompt_name=pl.lit("summ"), prompt_version=pl.lit("v1"))
    v2 = v2.with_columns(prompt_name=pl.lit("summ"), prompt_version=pl.lit("v2"))
    [finding] = audit(tmp_path, v1, v2).findings
    assert finding.prompt == "summ@v2"
    assert finding.evidence["comparison"] == "version"
    assert (finding.evidence["arm_a"], finding.evidence["arm_b"]) == ("v1", "v2")
    assert finding.evidence["verdict"] == "waste"
    assert "from prompt version v1 to v2" in finding.message


def test_reasoning_effort_against_effort(tmp_path: Path) -> None:
    frames = [
        calls("tri", 1500, SINCE, 500, seed=1, effort="low", accuracy=0.80, labelled=1000),
        calls("tri", 1500, SINCE, 1000, seed=2, effort="medium", accuracy=0.95, labelled=1000),
        calls("tri", 1500, SINCE, 2000, seed=3, effort="high", accuracy=0.95, labelled=1000),
    ]
    [finding] = audit(tmp_path, *frames).findings
    ev = finding.evidence
    assert (ev["comparison"], ev["arm_a"], ev["arm_b"]) == ("effort", "medium", "high")
    assert ev["verdict"] == "waste"
    assert "medium instead of high" in finding.fix


def test_compare_parameter_limits_the_comparisons(tmp_path: Path) -> None:
    frames = [
        calls("tri", 1500, SINCE, 1000, seed=2, effort="medium", accuracy=0.95, labelled=1000),
        calls("tri", 1500, SINCE, 2000, seed=3, effort="high", accuracy=0.95, labelled=1000),
    ]
    assert audit(tmp_path / "all", *frames).findings  # effort vs effort finds it by default
    config = Config(data={"rules": {"LT101": {"compare": ["window"]}}}, path=tmp_path / "x.toml")
    assert audit(tmp_path / "window", *frames, config=config).findings == []


def test_accuracy_from_named_scores(tmp_path: Path) -> None:
    """With [accuracy] names, accuracy comes from those scores, not the stored column."""
    frames = pair("scored", 1000, 2000, 13, accuracy=(0.80, 0.90), labelled=1000)
    # The stored column says "accuracy rose"; the configured score says it stayed at 95 %.
    scored = []
    for frame in frames:
        values = [1.0 if i % 20 else 0.0 for i in range(1000)] + [None] * (frame.height - 1000)
        scores = [
            None
            if v is None
            else [{"name": "exact_match", "value": v, "label": None, "source": "t"}]
            for v in values
        ]
        scored.append(frame.with_columns(pl.Series("scores", scores)))
    assert audit(tmp_path / "a", *scored).findings == []
    config = Config(data={"accuracy": {"names": ["exact_match"]}})
    [finding] = audit(tmp_path / "b", *scored, config=config).findings
    assert finding.evidence["accuracy_a"] == finding.evidence["accuracy_b"] == 0.95
    assert finding.evidence["verdict"] == "waste"


def test_rate_from_price_book_when_calls_carry_no_reasoning_cost(tmp_path: Path) -> None:
    """Unpriced calls: the reasoning rate comes from pricing a probe call with genai-prices."""
    pricing = pytest.importorskip("llmtrace.pricing")
    frames = pair("unpriced", 1000, 2000, 15, accuracy=0.95, labelled=1000, rate=None)
    [finding] = audit(tmp_path, *frames, price_book=pricing.PriceBook()).findings
    probe = pl.DataFrame(
        {
            "trace_id": ["p"],
            "span_id": ["1"],
            "provider": ["openai"],
            "model": ["gpt-5"],
            "start_time": [UNTIL - timedelta(hours=1)],
            "input_tokens": [0],
            "output_tokens": [1_000_000],
            "reasoning_tokens": [1_000_000],
        }
    )
    expected = pricing.price_calls(probe, pricing.PriceBook())["reasoning_cost"].item()
    assert expected and expected > 0
    assert finding.evidence["reasoning_usd_per_million_tokens"] == pytest.approx(expected)
    assert finding.monthly_savings_usd > 0


def test_rate_from_calls_priced_by_price_calls(tmp_path: Path) -> None:
    pricing = pytest.importorskip("llmtrace.pricing")
    book = pricing.PriceBook()
    frames = [
        pricing.price_calls(f.drop("reasoning_cost"), book)
        for f in pair("priced", 1000, 2000, 17, accuracy=0.95, labelled=1000)
    ]
    current = frames[1]
    rate = current["reasoning_cost"].sum() / current["reasoning_tokens"].sum()
    [finding] = audit(tmp_path, *frames, price_book=book).findings
    assert finding.evidence["reasoning_usd_per_million_tokens"] == pytest.approx(rate * 1e6, 1e-3)


def test_false_discovery_control_across_keys(tmp_path: Path) -> None:
    """Many unchanged prompts and one real rise: only the real one is flagged."""
    frames = []
    for i in range(12):
        frames += [
            calls(f"same{i}", 200, BASELINE, 1000, seed=100 + 2 * i),
            calls(f"same{i}", 200, SINCE, 1000, seed=101 + 2 * i),
        ]
    frames += pair("rose", 1000, 2000, 1)
    result = audit(tmp_path, *frames)
    assert [f.prompt for f in result.findings] == ["rose"]
    assert result.findings[0].evidence["q"] >= result.findings[0].evidence["p"]


def test_partials_of_partitions_merge_to_the_same_findings() -> None:
    """aggregate on two partitions + merge == aggregate on everything (null keys included)."""
    from llmtrace.record import conform
    from llmtrace.rules.base import AuditContext
    from llmtrace.rules.loader import builtin_specs
    from llmtrace.rules.lt101_reasoning import RULE

    frames = [
        *pair("waste", 1000, 2000, 1, accuracy=0.95, labelled=1000),
        *pair("few", 1000, 2000, 5, accuracy=0.9, labelled=40),
    ]
    calls = pl.concat(frames).with_columns(pl.lit(None, dtype=pl.String).alias("service"))
    calls = conform(calls).collect().sample(fraction=1.0, shuffle=True, seed=3)
    ctx = AuditContext(
        since=SINCE,
        until=UNTIL,
        baseline_since=BASELINE,
        baseline_until=SINCE,
        params=builtin_specs()["LT101"].params,
        accuracy_scores=(),
        price=lambda frame: pytest.fail("no pricing needed: calls carry reasoning_cost"),
    )
    whole = RULE.merge([RULE.aggregate(calls.lazy(), ctx).collect()], ctx)
    half = calls.height // 2
    parts = [RULE.aggregate(p.lazy(), ctx).collect() for p in (calls[:half], calls[half:])]
    merged = RULE.merge(parts, ctx)
    assert merged.height == whole.height
    one = [f.to_dict() for f in RULE.decide(whole, ctx)]
    two = [f.to_dict() for f in RULE.decide(merged, ctx)]
    assert sorted(f["prompt"] for f in one) == ["few", "waste"]
    assert one == two
    assert all(f["service"] is None for f in one)


def test_effort_change_inside_the_window_is_reported_once(tmp_path: Path) -> None:
    """Window vs baseline and effort vs effort both see it; the saving is counted once."""
    frames = [
        calls("mid", 1500, BASELINE, 1000, seed=1, effort="medium", accuracy=0.95, labelled=1000),
        calls("mid", 1500, SINCE, 1000, seed=2, effort="medium", accuracy=0.95, labelled=1000),
        calls("mid", 1500, SINCE, 2000, seed=3, effort="high", accuracy=0.95, labelled=1000),
    ]
    [finding] = audit(tmp_path, *frames).findings
    assert finding.evidence["verdict"] == "waste"
    flagged = {finding.evidence["comparison"], *finding.evidence["also_flagged_by"]}
    assert len(flagged) == 2
    assert any(c.startswith("effort") for c in flagged)
    assert any(c.startswith("window") for c in flagged)
