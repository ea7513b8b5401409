"""Langfuse's JSON usage and cost read through msgspec (issue 15) read as they did.

The columnar lane's ``_read_usage`` and ``_read_cost`` now hand ``dialect_values`` the object
msgspec decoded from the text (the text itself where msgspec refuses it or it is not an
object) instead of the text for ``json.loads``. Compared here with the code as it was on
usage and cost texts of every odd kind: the same counts, costs and sources, and the same
texts sent to the per-span path.
"""

from __future__ import annotations

import json
import random
from typing import Any

from llmtrace import dialect_columns as dc
from llmtrace import dialect_values as dv
from llmtrace.dialect_values import _reported_cost, _usage_from_json
from llmtrace.importers import otlp_columns


def old_read_usage(text: str) -> Any:
    """``otlp_columns._read_usage`` as it was at 8d3ae20 (the text to ``json.loads``)."""
    try:
        tokens = _usage_from_json({dc.JSON_USAGE: text}, dc.JSON_USAGE)
    except Exception:  # noqa: BLE001
        return otlp_columns._FAILED
    if tokens is None or any(
        v is not None and v >= otlp_columns._JSON_LIMIT for v in tokens.values()
    ):
        return otlp_columns._FAILED
    return tokens


def old_read_cost(text: str) -> Any:
    try:
        return _reported_cost({}, {dc.JSON_COST: text})
    except Exception:  # noqa: BLE001
        return otlp_columns._FAILED


ODD = [
    "{}",
    "[]",
    '"text"',
    "3",
    "null",
    "{not json",
    '{"input": NaN}',
    '{"input": Infinity, "output": 1}',
    '{"input": 1e400}',
    '{"total": -1e400}',
    '{"input": 123456789012345678901234567890}',
    '{"input": 5, "input": 7}',
    '{"input": "\\ud800"}',
    '{"\\ud800": 1}',
    '{"input": 1.5, "output": -0.0}',
    '{"input": true}',
    '{"total": "0.5"}',
    '{"total": null, "input": 0.1}',
    '{"a": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"input": ' + "1" * 5000 + "}",
    '{"input": 3} trailing',
    ' {"input": 3}\n',
]


def _texts() -> list[str]:
    rng = random.Random(4)
    keys = [k for groups in dv.USAGE_JSON_BUCKETS.values() for g in groups for k in g]
    keys += ["total", "input", "output", "other"]
    values: list[Any] = [0, 1, 10, 2**62, 2**63, -3, 0.5, 1e300, None, "7", [1], {"a": 1}]
    texts = list(ODD)
    for _ in range(400):
        document = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 4))}
        texts.append(json.dumps(document, indent=rng.choice([None, 1])))
    return texts


def _shown(value: Any) -> Any:
    return "FAILED" if value is otlp_columns._FAILED else value


def test_json_usage_and_cost_read_as_before() -> None:
    texts = _texts()
    usage = [_shown(old_read_usage(t)) for t in texts]
    cost = [_shown(old_read_cost(t)) for t in texts]
    assert usage.count("FAILED") > 20 and len(texts) - usage.count("FAILED") > 100
    assert sum(1 for c in cost if c not in ("FAILED", (None, None))) > 100
    assert [_shown(otlp_columns._read_usage(t)) for t in texts] == usage
    assert [_shown(otlp_columns._read_cost(t)) for t in texts] == cost
