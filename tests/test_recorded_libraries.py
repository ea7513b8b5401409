"""Every recorded library through ``llmtrace import otlp``: each call once, each cost exact.

The fixtures in tests/fixtures/libraries are what each instrumentation library's own OTLP
exporter sent while the real ``openai`` / ``anthropic`` SDKs talked to the loopback provider
(``record.py`` re-records them). The loopback answers every model with one usage table, so the
true cost of each call is known without llmtrace: ``genai_prices.calc_price`` on that usage,
at the call's time. Where a library's spans lack a number (see ``GAPS`` and the README's table
of supported instrumentations), the test says so instead of accepting any figure.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import genai_prices
import polars as pl
import pytest
from click.testing import CliRunner
from genai_prices import Usage
from live.loopback import (
    ANTHROPIC_RESPONSE_MODEL,
    ANTHROPIC_USAGE,
    OPENAI_RESPONSE_MODEL,
    OPENAI_USAGE,
)
from recorded import LIBRARIES, fixture_paths, readable_spans, replay

from llmtrace.cli import cli
from llmtrace.otel.processor import PRICED_SPAN_ID, LazyPriceBook
from llmtrace.record import PRICE_NO_USAGE, PRICE_OK
from llmtrace.store import Store

MANIFEST = json.loads((LIBRARIES / "manifest.json").read_text())


def _app() -> Any:
    spec = importlib.util.spec_from_file_location("recorded_app", LIBRARIES / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCENARIO_MODELS: dict[str, str] = _app().SCENARIO_MODELS

# Providers whose calls a recording holds spans for (the others: every one app.py calls).
ONLY: dict[str, set[str]] = {"anthropic-sdk-2.17.0": {"anthropic"}}  # openai has no own spans

# What a library's spans cannot tell, as measured on its recording: fixture -> model -> the
# price status its calls get instead of an exact cost, and how many of them.
GAPS: dict[str, dict[str, tuple[str, int]]] = {}


def _provider(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "openai"


def true_usage(model: str) -> Usage:
    """The usage the loopback reported for ``model``, inclusive as genai-prices reads it."""
    if _provider(model) == "anthropic":
        usage = ANTHROPIC_USAGE[model]
        write, read = usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]
        return Usage(
            input_tokens=usage["input_tokens"] + write + read,
            cache_write_tokens=write,
            cache_read_tokens=read,
            output_tokens=usage["output_tokens"],
        )
    usage = OPENAI_USAGE[model]
    return Usage(
        input_tokens=usage["prompt_tokens"],
        cache_read_tokens=usage["prompt_tokens_details"]["cached_tokens"],
        output_tokens=usage["completion_tokens"],  # includes reasoning, priced alike
    )


RESPONSE_MODELS = {**OPENAI_RESPONSE_MODEL, **ANTHROPIC_RESPONSE_MODEL}
REQUEST_MODEL = {response: request for request, response in RESPONSE_MODELS.items()}


def expected_calls(name: str) -> Counter[str]:
    failed = set(MANIFEST[name]["failed_scenarios"])
    providers = ONLY.get(name, {"openai", "anthropic"})
    return Counter(
        model
        for scenario, model in SCENARIO_MODELS.items()
        if scenario not in failed and _provider(model) in providers
    )


def test_every_recording_is_in_the_manifest_and_the_scenarios_match_the_app() -> None:
    assert {p.stem for p in fixture_paths()} == set(MANIFEST)
    assert set(SCENARIO_MODELS) == set(_app().SCENARIOS)
    assert set(GAPS) <= set(MANIFEST)


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_each_recorded_call_is_counted_once_at_its_true_cost(path: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    outcome = CliRunner().invoke(cli, ["import", "otlp", str(path), "--store", str(store)])
    assert outcome.exit_code == 0, outcome.output
    calls = Store(store).scan().collect()
    models = calls.select(
        pl.coalesce(pl.col("request_model"), pl.col("model")).replace(REQUEST_MODEL).alias("asked")
    )["asked"]
    assert Counter(models.to_list()) == expected_calls(path.stem)

    gaps = GAPS.get(path.stem, {})
    unpriced: Counter[tuple[str, str]] = Counter()
    for row, asked in zip(calls.iter_rows(named=True), models, strict=True):
        if row["price_status"] != PRICE_OK:
            unpriced[(asked, row["price_status"])] += 1
            continue
        truth = genai_prices.calc_price(
            true_usage(asked),
            row["model"],
            provider_id=_provider(asked),
            genai_request_timestamp=row["start_time"],
        )
        assert row["total_cost"] == pytest.approx(float(truth.total_price), abs=1e-6), (
            path.stem,
            row["span_id"],
        )
    assert dict(unpriced) == {(model, status): n for model, (status, n) in gaps.items()}
    assert all(status == PRICE_NO_USAGE for status, _ in gaps.values())


@pytest.mark.parametrize("path", fixture_paths(), ids=lambda p: p.stem)
def test_live_prices_each_recorded_call_once_at_its_true_cost(
    path: Path, prices: LazyPriceBook, tmp_path: Path
) -> None:
    """The same spans through the live pipeline (the cost span processor, then the store
    exporter), in the order the app ended them: one priced span per call, the others naming
    it, and the store holding each call once."""
    exported = _replay_checked(path, prices, tmp_path / "store")
    stored = Store(tmp_path / "store").scan().collect()
    assert stored.height == sum(expected_calls(path.stem).values())
    assert stored["total_cost"].sum() == pytest.approx(exported, abs=1e-9)


def _replay_checked(path: Path, prices: LazyPriceBook, store: Path) -> float:
    spans = replay(path, prices, store)
    gaps = GAPS.get(path.stem, {})
    priced = [s for s in spans if (s.attributes or {}).get("llmtrace.price.status") == PRICE_OK]
    deferred = [s for s in spans if PRICED_SPAN_ID in (s.attributes or {})]
    unpriced = [
        s
        for s in spans
        if (s.attributes or {}).get("llmtrace.price.status") not in (None, PRICE_OK)
    ]
    assert len(unpriced) == sum(n for _, n in gaps.values())
    asked = Counter()
    total = 0.0
    for span in priced:
        attrs = span.attributes or {}
        model = REQUEST_MODEL.get(
            attrs.get("gen_ai.request.model"), attrs.get("gen_ai.request.model")
        )
        model = model or REQUEST_MODEL.get(attrs.get("llm.model_name"), attrs.get("llm.model_name"))
        asked[model] += 1
        truth = genai_prices.calc_price(
            true_usage(model),
            RESPONSE_MODELS.get(model, model),
            provider_id=_provider(model),
            genai_request_timestamp=datetime.fromtimestamp(span.start_time / 1e9, UTC),
        )
        assert attrs["gen_ai.usage.cost"] == pytest.approx(float(truth.total_price), abs=1e-6)
        total += attrs["gen_ai.usage.cost"]
    expected = expected_calls(path.stem)
    for model, (_, n) in gaps.items():
        expected[model] -= n
    assert asked == +expected
    llm_spans = [s for s in readable_spans(path) if s.instrumentation_scope.name != "recorded-app"]
    llm_spans = [s for s in llm_spans if s.name != "POST"]  # OpenLIT's httpx spans
    assert len(priced) + len(deferred) + len(unpriced) == len(llm_spans)
    return total
