"""``cost_attributes`` (written out for the live hot path) equals the plain loop over
``COST_ATTRIBUTES``: same keys, same order, same values, same Langfuse JSON."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

import pytest

from llmtrace.otel import spans
from llmtrace.otel.spans import (
    COST_ATTRIBUTES,
    LANGFUSE_COST_DETAILS,
    PRICE_OK,
    PRICE_SOURCE,
    PRICE_STATUS,
    REQUEST_COST,
    TOTAL_COST,
)


def reference(costs: Mapping[str, Any]) -> dict[str, Any]:
    status = costs.get("price_status")
    if status != PRICE_OK or costs.get("total_cost") is None:
        return {PRICE_STATUS: str(status or "not_priced")}
    out: dict[str, Any] = {TOTAL_COST: float(costs["total_cost"])}
    details: dict[str, float] = {}
    for field, (attribute, langfuse_key) in COST_ATTRIBUTES.items():
        value = float(costs.get(field) or 0.0)
        out[attribute] = value
        if langfuse_key is not None:
            details[langfuse_key] = value
    if costs.get("request_cost"):
        out[REQUEST_COST] = float(costs["request_cost"])
    out[LANGFUSE_COST_DETAILS] = json.dumps(details, separators=(",", ":"))
    out[PRICE_SOURCE] = str(costs.get("price_source") or "")
    out[PRICE_STATUS] = PRICE_OK
    return out


VALUES = [None, 0, 0.0, 1, 1e-9, 0.1 + 0.2, 3.5e-7, 12.25, math.inf, math.nan, 1e308, 7]


@pytest.mark.parametrize("seed", range(60))
def test_written_out_cost_attributes_equal_the_loop(seed: int) -> None:
    rng = random.Random(seed)
    costs: dict[str, Any] = {
        field: rng.choice(VALUES)
        for field in (*COST_ATTRIBUTES, "request_cost")
        if rng.random() < 0.9
    }
    costs["price_status"] = rng.choice([PRICE_OK, PRICE_OK, PRICE_OK, "unknown_model", None])
    if rng.random() < 0.8:
        costs["price_source"] = "genai-prices 0.2.5"
    got, want = spans.cost_attributes(costs), reference(costs)
    assert list(got) == list(want)
    assert repr(got) == repr(want)  # nan == nan is false: compare the printed values


@pytest.mark.parametrize("seed", range(60))
def test_cost_attributes_of_a_price_tuple_equal_the_loop(seed: int) -> None:
    """The live worker's form: the price as ``LazyPriceBook.values`` gives it."""
    from llmtrace.otel.pricer import PRICE_FIELDS

    rng = random.Random(seed)
    values = tuple(rng.choice(VALUES) if rng.random() < 0.9 else None for _ in range(7)) + (
        rng.choice(["genai-prices 0.2.5", None, ""]),
        rng.choice([PRICE_OK, PRICE_OK, PRICE_OK, "unknown_model", None]),
    )
    got = spans.cost_attributes_of(values)
    want = reference(dict(zip(PRICE_FIELDS, values, strict=True)))
    assert list(got) == list(want)
    assert repr(got) == repr(want)
