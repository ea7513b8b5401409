"""Fuzz tests of the two decode edges (issue 12, point 5): the OTLP reader and the Langfuse
mapper, fed valid documents with hostile values planted anywhere (tests/hostile.py). Whatever
the value: no exception escapes, the untouched good call is kept, every problem is one line, and
what is kept is storable (plausible counts and times, UTF-8 text). A fixed example budget and
derandomised runs keep it to seconds in CI; bench/fuzz_edges.py runs the same mutations at scale.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hostile import HOSTILE, deep, paths, plant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtrace.importers.langfuse import observations_to_calls
from llmtrace.importers.otlp import import_otlp
from llmtrace.limits import EARLIEST, INT64_MAX, LATEST
from llmtrace.record import TOKEN_FIELDS

T0 = 1_764_234_000_000_000_000
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def otlp_request(span_id: str, trace: str) -> dict:
    attrs = {
        "gen_ai.operation.name": {"stringValue": "chat"},
        "gen_ai.provider.name": {"stringValue": "openai"},
        "gen_ai.request.model": {"stringValue": "gpt-4o-mini"},
        "gen_ai.usage.input_tokens": {"intValue": "100"},
        "gen_ai.usage.output_tokens": {"intValue": "10"},
        "gen_ai.usage.reasoning.output_tokens": {"intValue": "4"},
        "gen_ai.evaluation.score": {"doubleValue": 0.5},
    }
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.genai.openai"},
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span_id,
                                "name": "chat",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 10**9),
                                "status": {"code": 1},
                                "attributes": [{"key": k, "value": v} for k, v in attrs.items()],
                                "events": [],
                            }
                        ],
                    }
                ],
            }
        ]
    }


TEMPLATE = otlp_request("00000000000000b1", "b" * 32)
GOOD = otlp_request("00000000000000a1", "a" * 32)
SPOTS = paths(TEMPLATE)
hostile = st.sampled_from([*HOSTILE, "DEEP"]).map(lambda v: deep() if v == "DEEP" else v)
plantings = st.lists(st.tuples(st.sampled_from(SPOTS), hostile), min_size=1, max_size=3)


def planted(document: dict, changes: list) -> dict:
    for path, value in changes:
        try:
            document = plant(document, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed the place
    return document


def dump(document: object) -> str:
    """One JSON line; values JSON cannot spell (lone surrogates) escaped as JSON escapes them."""
    try:
        return json.dumps(document)
    except (ValueError, RecursionError):
        return '{"resourceSpans": ' + "[" * 5000 + "]" * 5000 + "}"


def storable(calls) -> None:
    """Kept calls hold plausible values and write as Parquet (UTF-8, Int64, times)."""
    for name in TOKEN_FIELDS:
        column = calls.get_column(name).drop_nulls()
        assert column.is_empty() or (column.min() >= 0 and column.max() <= INT64_MAX)
    starts = calls.get_column("start_time").drop_nulls()
    if not starts.is_empty():
        assert starts.min() >= EARLIEST and starts.max() < LATEST
    costs = calls.get_column("reported_cost").drop_nulls()
    assert all(math.isfinite(c) and c >= 0 for c in costs)
    calls.write_parquet(io.BytesIO())


@FUZZ
@given(plantings)
def test_otlp_reader_survives_hostile_values(tmp_path_factory, changes):
    path = Path(tmp_path_factory.mktemp("fuzz")) / "f.jsonl"
    bad = planted(TEMPLATE, changes)
    path.write_text(dump(bad) + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    result = import_otlp([path])
    assert "00000000000000a1" in set(result.calls.get_column("span_id"))
    for problem in result.problems:
        assert "\n" not in str(problem) and "\x1b" not in str(problem)
        assert problem.line in (None, 1)  # only the planted line has problems
    storable(result.calls)


START = datetime(2026, 9, 1, 10, tzinfo=UTC)


def langfuse_row(obs_id: str) -> dict:
    return {
        "id": obs_id,
        "traceId": "trace-1",
        "type": "GENERATION",
        "startTime": START.isoformat().replace("+00:00", "Z"),
        "endTime": (START + timedelta(seconds=2)).isoformat().replace("+00:00", "Z"),
        "model": "gpt-4o-mini",
        "modelParameters": {"reasoning_effort": "low"},
        "usageDetails": {"input": 100, "output": 10, "input_cached_tokens": 20},
        "costDetails": {"input": 0.001, "total": 0.002},
        "promptName": "qa",
        "promptVersion": 3,
        "traceName": "answer",
        "latency": 2.0,
        "input": [{"role": "user", "content": "hi"}],
        "output": "hello",
    }


ROW_SPOTS = paths(langfuse_row("x"))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ROW_SPOTS), hostile), min_size=1, max_size=3))
def test_langfuse_mapper_survives_hostile_values(changes):
    bad = planted(langfuse_row("obs-bad"), changes)
    calls, rejected = observations_to_calls([langfuse_row("obs-1"), bad, langfuse_row("obs-2")])
    kept = set(calls.get_column("span_id"))
    assert {"obs-1", "obs-2"} <= kept
    assert calls.height + rejected.height <= 3
    for reason in rejected.get_column("reason"):
        assert reason and "\n" not in reason
    storable(calls)
