"""``import_otlp`` and ``llmtrace import otlp``: formats, actions, one record per call, scores,
content, bad input, idempotent re-import, and property tests of the parser."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from google.protobuf.json_format import MessageToJson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.genai.handler import TelemetryHandler
from polars.testing import assert_frame_equal

from llmtrace.cli import cli
from llmtrace.importers.otlp import import_otlp
from llmtrace.record import CALL_SCHEMA
from llmtrace.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "otlp"
T0 = 1_764_234_000_000_000_000  # 2025-11-27T09:00:00Z
TRACE = "5b8efff798038103d269b633813fc60c"
OTHER_TRACE = "a3ce929d0e0e47364bf92f3577b34da6"


# -- OTLP JSON builders (the Collector file exporter's shape) ---------------------------------


def any_value(value):
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": value}


def key_values(attrs: dict) -> list[dict]:
    return [{"key": k, "value": any_value(v)} for k, v in attrs.items()]


def span(span_id, parent=None, name="chat", attrs=None, trace=TRACE, start=T0, events=()):
    return {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent or "",
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_000_000_000),
        "attributes": key_values(attrs or {}),
        "events": list(events),
        "status": {},
    }


def request(*spans, scope="opentelemetry.instrumentation.genai.openai", service="svc") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values({"service.name": service})},
                "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}],
            }
        ]
    }


def chat(input_tokens=100, output_tokens=10, **extra) -> dict:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **extra,
    }


def write_lines(path: Path, *docs) -> Path:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return path


def run(*paths, **kwargs):
    kwargs.setdefault("accuracy_names", ("accuracy", "correctness"))
    return import_otlp(list(paths), **kwargs)


def by_span(result) -> dict[str, dict]:
    return {row["span_id"]: row for row in result.calls.to_dicts()}


# -- the fixtures: several dialects, child before root, scores --------------------------------


def test_fixture_directory_imports_every_dialect():
    result = run(FIXTURES)
    assert result.problems == []
    assert (result.files, result.spans, result.llm_spans) == (2, 8, 4)
    assert result.calls.schema == CALL_SCHEMA
    calls = by_span(result)
    openai = calls["0b1c2d3e4f506172"]
    assert (openai["input_tokens"], openai["cache_read_tokens"], openai["output_tokens"]) == (
        1149,
        1024,
        12,
    )
    assert (openai["dialect"], openai["service"], openai["environment"]) == (
        "otel-genai",
        "support-api",
        "prod",
    )
    claude = calls["1a2b3c4d5e6f7081"]  # OpenLIT: Anthropic input excluded the cache write
    assert (claude["input_tokens"], claude["cache_write_tokens"]) == (1167, 1163)
    assert (claude["reported_cost"], claude["reported_cost_source"]) == (
        0.009462,
        "gen_ai.usage.cost",
    )
    gemini = calls["00f067aa0ba902b7"]
    assert (gemini["input_tokens"], gemini["output_tokens"], gemini["reasoning_tokens"]) == (
        8,
        2631,
        2292,
    )
    assert calls["c0ffee0000000002"]["reasoning_tokens"] == 192
    assert set(result.calls["source"]) == {"otlp"}
    assert set(result.calls["price_status"]) == {"not_priced"}
    assert str(result.calls["day"][0]) == "2025-11-27"


def test_actions_resolve_across_lines_with_children_before_roots():
    calls = by_span(run(FIXTURES / "collector.jsonl"))
    # the agent span (an ancestor, in the same line) names the action
    assert calls["0b1c2d3e4f506172"]["action"] == "answer-ticket"
    assert calls["1a2b3c4d5e6f7081"]["action"] == "answer-ticket"
    # no llmtrace.action anywhere: the root's name, which only arrives on the next line
    assert calls["c0ffee0000000002"]["action"] == "nightly-digest"


def test_actions_resolve_across_files_and_fall_back_to_service(tmp_path):
    child = request(span("00000000000000c1", "00000000000000b1", attrs=chat()), service="api")
    orphan = request(
        span("00000000000000c2", "00000000000000ff", attrs=chat(), trace=OTHER_TRACE),
        service="batch",
    )
    middle = request(
        span("00000000000000b1", "00000000000000a1", "step", {"llmtrace.action": "summarise"}),
        scope="app",
    )
    root = request(span("00000000000000a1", None, "GET /summary"), scope="app")
    write_lines(tmp_path / "1-children.jsonl", child, orphan)
    write_lines(tmp_path / "2-middle.jsonl", middle)
    write_lines(tmp_path / "3-root.jsonl", root)
    calls = by_span(run(tmp_path))
    assert calls["00000000000000c1"]["action"] == "summarise"
    assert calls["00000000000000c2"]["action"] == "batch"  # root never exported: service
    del middle["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][0]
    write_lines(tmp_path / "2-middle.jsonl", middle)
    assert by_span(run(tmp_path))["00000000000000c1"]["action"] == "GET /summary"


# -- one call, one record ---------------------------------------------------------------------


def test_sdk_span_inside_instrumentation_span_with_same_response_id(tmp_path):
    outer = span(
        "00000000000000a1",
        None,
        "openai.chat",
        chat(1149, 12, **{"gen_ai.response.id": "chatcmpl-1", "llmtrace.action": "ask"}),
    )
    inner = span(
        "00000000000000a2",
        "00000000000000a1",
        "chat gpt-4o-mini",
        chat(
            1149,
            12,
            **{
                "gen_ai.response.id": "chatcmpl-1",
                "gen_ai.usage.cache_read.input_tokens": 1024,
                "gen_ai.conversation.id": "conv-1",
            },
        ),
    )
    result = run(write_lines(tmp_path / "t.jsonl", request(outer, inner)))
    assert (result.llm_spans, result.calls.height, result.merged) == (2, 1, 1)
    (row,) = result.calls.to_dicts()
    assert row["span_id"] == "00000000000000a2"  # more usage detail: it carries the cache read
    assert row["cache_read_tokens"] == 1024
    assert row["conversation_id"] == "conv-1"
    assert row["action"] == "ask"


def test_parent_and_child_llm_spans_with_equal_usage_are_one_call(tmp_path):
    parent = span("00000000000000a1", None, "llm", chat(500, 20))
    child = span(
        "00000000000000a2",
        "00000000000000a1",
        "chat",
        chat(500, 20, **{"gen_ai.usage.cache_read.input_tokens": 256}),
    )
    other = span("00000000000000a3", "00000000000000a1", "chat", chat(500, 21))
    result = run(write_lines(tmp_path / "t.jsonl", request(parent, child, other)))
    assert sorted(by_span(result)) == ["00000000000000a2", "00000000000000a3"]


def test_same_span_twice_is_one_record(tmp_path):
    doc = request(span("00000000000000a1", None, "chat", chat()))
    result = run(write_lines(tmp_path / "t.jsonl", doc, doc))
    assert result.calls.height == 1


# -- evaluation events -------------------------------------------------------------------------


def evaluation(name, value=None, label=None, response_id=None) -> dict:
    attrs = {"gen_ai.evaluation.name": name}
    if value is not None:
        attrs["gen_ai.evaluation.score.value"] = value
    if label is not None:
        attrs["gen_ai.evaluation.score.label"] = label
    if response_id is not None:
        attrs["gen_ai.response.id"] = response_id
    return {"name": "gen_ai.evaluation.result", "attributes": key_values(attrs)}


def test_evaluation_events_become_scores_and_accuracy(tmp_path):
    call = span(
        "00000000000000a1",
        None,
        "chat",
        chat(**{"gen_ai.response.id": "r-1"}),
        events=[evaluation("accuracy", 1.0), evaluation("helpfulness", 4.0)],
    )
    judge = span(
        "00000000000000e1",
        None,
        "judge",
        {},
        trace=OTHER_TRACE,
        events=[evaluation("Correctness", label="FAIL", response_id="r-1")],
    )
    unmatched = span(
        "00000000000000e2", None, "judge", {}, trace=OTHER_TRACE,
        events=[evaluation("accuracy", 1.0, response_id="r-404")],
    )  # fmt: skip
    result = run(write_lines(tmp_path / "t.jsonl", request(call), request(judge, unmatched)))
    (row,) = result.calls.to_dicts()
    assert row["scores"] == [
        {"name": "accuracy", "value": 1.0, "label": None, "source": "otel", "id": None},
        {"name": "helpfulness", "value": 4.0, "label": None, "source": "otel", "id": None},
        {"name": "Correctness", "value": None, "label": "FAIL", "source": "otel", "id": None},
    ]
    assert row["accuracy"] == pytest.approx(0.5)  # accuracy 1.0 and Correctness fail -> 0
    assert (result.scores, result.unmatched_scores) == (3, 1)
    only_accuracy = run(tmp_path / "t.jsonl", accuracy_names=["accuracy"])
    assert only_accuracy.calls["accuracy"].to_list() == [1.0]


def test_a_score_in_a_later_file_reaches_the_stored_call(tmp_path, monkeypatch):
    """An LLM judge runs after the call was imported: its evaluations, in a later file, are
    merged into the stored call (by the judge span's parent, or by response id)."""
    monkeypatch.chdir(tmp_path)  # default [accuracy]: accuracy and correctness count
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    store = tmp_path / "store"
    call = span("00000000000000a1", None, "chat", chat(**{"gen_ai.response.id": "r-1"}))
    calls = write_lines(tmp_path / "calls.jsonl", request(call))
    judge = span(
        "00000000000000e1", "00000000000000a1", "judge", {}, events=[evaluation("accuracy", 1.0)]
    )
    elsewhere = span(
        "00000000000000e2", None, "judge", {}, trace=OTHER_TRACE,
        events=[
            evaluation("Correctness", label="FAIL", response_id="r-1"),
            evaluation("accuracy", 1.0, response_id="r-404"),
        ],
    )  # fmt: skip
    later = write_lines(tmp_path / "later.jsonl", request(judge, elsewhere))

    def import_(*paths: Path) -> str:
        result = CliRunner().invoke(
            cli, ["import", "otlp", *map(str, paths), "--store", str(store)]
        )
        assert result.exit_code == 0, result.output
        return result.stdout

    import_(calls)
    out = import_(later)
    assert "scores: 0 attached to new calls, 2 to stored calls, 1 matched no call" in out
    (row,) = Store(store).scan().collect().to_dicts()
    assert row["scores"] == [
        {"name": "accuracy", "value": 1.0, "label": None, "source": "otel", "id": None},
        {"name": "Correctness", "value": None, "label": "FAIL", "source": "otel", "id": None},
    ]
    assert row["accuracy"] == pytest.approx(0.5)
    files = sorted(Store(store).files())
    again = import_(calls, later)  # both files again: nothing is added twice
    assert "imported 0 new calls, skipped 1 already stored" in again
    assert "0 to stored calls, 1 matched no call, 2 already attached" in again
    assert sorted(Store(store).files()) == files
    fresh = span(
        "00000000000000a2", None, "chat", chat(), trace=OTHER_TRACE,
        events=[evaluation("accuracy", 0.0)],
    )  # fmt: skip
    out = import_(write_lines(tmp_path / "fresh.jsonl", request(fresh)))
    assert "scores: 1 attached to new calls, 0 to stored calls, 0 matched no call" in out
    assert Store(store).scan().collect().height == 2


def test_accuracy_names_come_from_the_config(tmp_path, monkeypatch):
    call = span("00000000000000a1", None, "chat", chat(), events=[evaluation("exact", 0.0)])
    path = write_lines(tmp_path / "t.jsonl", request(call))
    (tmp_path / "llmtrace.toml").write_text('[accuracy]\nnames = ["exact"]\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    assert import_otlp([path]).calls["accuracy"].to_list() == [0.0]


# -- content -----------------------------------------------------------------------------------

SECRET = "my card number is 4111 1111 1111 1111"


def content_request() -> dict:
    messages = [{"role": "user", "parts": [{"type": "text", "content": SECRET}]}]
    attrs = chat(
        **{
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be kind."}]),
            "gen_ai.input.messages": json.dumps(messages),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Please don't."}]}]
            ),
        }
    )
    return request(span("00000000000000a1", None, "chat", attrs))


def test_content_becomes_fingerprints_and_is_not_stored(tmp_path):
    result = run(write_lines(tmp_path / "t.jsonl", content_request()))
    (row,) = result.calls.to_dicts()
    assert len(row["prefix_hashes"]) == 2
    assert row["prompt"] == f"fp:{row['template_fingerprint']}"
    assert row["input_content"] is None and row["output_content"] is None
    store = Store(tmp_path / "store")
    store.append(result.calls)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*.parquet"))
    assert stored and b"4111" not in stored
    assert "4111" not in str(result.calls.to_dicts())


def test_keep_content_keeps_it(tmp_path):
    result = run(write_lines(tmp_path / "t.jsonl", content_request()), keep_content=True)
    (row,) = result.calls.to_dicts()
    assert SECRET in json.loads(row["input_content"])["messages"][0]["content"]
    assert json.loads(row["output_content"])[0]["content"] == "Please don't."


# -- bad input ---------------------------------------------------------------------------------


def test_each_bad_line_or_span_is_one_problem_and_the_rest_imports(tmp_path):
    good = request(span("00000000000000a1", None, "chat", chat()))
    negative = request(span("00000000000000b1", None, "chat", chat(output_tokens=-3)))
    text = request(span("00000000000000c1", None, "chat", chat(input_tokens="lots")))
    no_trace = request({**span("00000000000000d1", None, "chat", chat()), "traceId": ""})
    mixed = request(
        span("00000000000000e1", None, "chat", chat()),
        {**span("00000000000000e2", None, "chat", chat()), "startTimeUnixNano": "soon"},
    )
    truncated = json.dumps(good)[:57]
    path = write_lines(
        tmp_path / "bad.jsonl",
        good,
        truncated,
        negative,
        text,
        no_trace,
        "[1, 2]",
        '{"resourceSpans": 3}',
        mixed,
    )
    result = run(path)
    problems = [str(p) for p in result.problems]
    name = str(path)
    assert problems == [
        f"{name}:2: not valid JSON: " + problems[0].split("not valid JSON: ")[1],
        f"{name}:3: span 00000000000000b1: gen_ai.usage.output_tokens: token count -3 is negative",
        f"{name}:4: span 00000000000000c1: gen_ai.usage.input_tokens: token count 'lots' is not "
        "a number",
        f"{name}:5: span 00000000000000d1: no traceId",
        f"{name}:6: not an OTLP trace request (no resourceSpans)",
        f"{name}:7: " + problems[5].split(":7: ")[1],
        f"{name}:8: span 00000000000000e2: startTimeUnixNano 'soon' is not an integer",
    ]
    assert "resourceSpans" in problems[5]
    assert sorted(by_span(result)) == ["00000000000000a1", "00000000000000e1"]
    assert result.rejected == 4


def test_unreadable_files_are_one_problem_each(tmp_path):
    (tmp_path / "garbage.pb").write_bytes(b"\xff\xfe not protobuf at all \x00\x01")
    (tmp_path / "broken.json.gz").write_bytes(gzip.compress(b'{"resourceSpans": [')[:-6])
    pretty = json.dumps(request(span("00000000000000a1", None, "chat", chat())), indent=2)
    (tmp_path / "cut.json").write_text(pretty[: len(pretty) // 2])
    shutil.copy(FIXTURES / "collector.jsonl", tmp_path / "good.jsonl")
    result = run(tmp_path)
    assert len(result.problems) == 3
    by_file = {Path(p.file).name: p for p in result.problems}
    assert set(by_file) == {"garbage.pb", "broken.json.gz", "cut.json"}
    assert "protobuf" in by_file["garbage.pb"].message
    assert "truncated" in by_file["cut.json"].message and by_file["cut.json"].line > 1
    assert result.calls.height == 3


def test_leading_blank_lines_bom_missing_files_and_lookalike_bytes(tmp_path):
    doc = json.dumps(request(span("00000000000000a1", None, "chat", chat())), indent=1)
    (tmp_path / "blank-first.json").write_text("\n\n" + doc)
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + doc.replace("\n", "").encode() + b"\n")
    (tmp_path / "text.pb").write_bytes(b"hello world, this is not telemetry")
    result = run(tmp_path, tmp_path / "missing.jsonl")
    assert result.calls.height == 1
    by_file = {Path(p.file).name: p for p in result.problems}
    assert set(by_file) == {"text.pb", "missing.jsonl"}
    assert "cannot read" in by_file["missing.jsonl"].message


def test_exit_code_and_problem_lines_from_the_command(tmp_path):
    bad = request(span("00000000000000b1", None, "chat", chat(output_tokens=-3)))
    path = write_lines(tmp_path / "t.jsonl", bad, request(span("00000000000000a1", attrs=chat())))
    outcome = CliRunner().invoke(cli, ["import", "otlp", str(path), "--store", str(tmp_path / "s")])
    assert outcome.exit_code == 1
    assert f"{path}:1: span 00000000000000b1: gen_ai.usage.output_tokens" in outcome.stderr
    assert "imported 1 new calls" in outcome.stdout
    assert Store(tmp_path / "s").scan().collect().height == 1


# -- formats -----------------------------------------------------------------------------------


def _util_genai_spans():
    """Real SDK spans: an app root span and an official GenAI instrumentation's chat span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handler = TelemetryHandler(
        tracer_provider=provider,
        instrumentation_scope_name="opentelemetry.instrumentation.genai.anthropic",
    )
    with provider.get_tracer("app").start_as_current_span("handle ticket") as root:
        root.set_attribute("llmtrace.action", "answer")
        with handler.inference("anthropic", request_model="claude-3-5-sonnet-20240620") as call:
            call.input_tokens = 1167
            call.cache_write_input_tokens = 1163
            call.output_tokens = 339
            call.response_model_name = "claude-3-5-sonnet-20240620"
            call.response_id = "msg_01"
    return exporter.get_finished_spans()


def _check_anthropic(result) -> None:
    assert result.problems == []
    (row,) = result.calls.to_dicts()
    assert (row["input_tokens"], row["cache_write_tokens"], row["output_tokens"]) == (
        1167,
        1163,
        339,
    )
    assert (row["action"], row["service"], row["provider"]) == ("answer", "bot", "anthropic")
    assert row["dialect"] == "otel-genai"


def test_protobuf_from_the_sdk_encoder_single_and_collector_framed(tmp_path):
    message = encode_spans(_util_genai_spans()).SerializeToString()
    single = tmp_path / "single.pb"
    single.write_bytes(message)
    _check_anthropic(run(single))
    framed = tmp_path / "framed.binpb"
    framed.write_bytes(len(message).to_bytes(4, "big") + message)
    _check_anthropic(run(framed))


def test_protobuf_json_mapping_with_base64_ids(tmp_path):
    path = tmp_path / "sdk.json"
    path.write_text(MessageToJson(encode_spans(_util_genai_spans())))
    _check_anthropic(run(path))


def test_gzip_directories_and_pretty_json(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    data = (FIXTURES / "collector.jsonl").read_bytes()
    (nested / "traces.jsonl.gz").write_bytes(gzip.compress(data))
    message = encode_spans(_util_genai_spans()).SerializeToString()
    (tmp_path / "a" / "spans.pb.gz").write_bytes(gzip.compress(message))
    shutil.copy(FIXTURES / "gemini-pretty.json", tmp_path / "gemini.json")
    (tmp_path / "notes.txt").write_text("not telemetry, not read")
    result = run(tmp_path)
    assert result.problems == []
    assert result.files == 3
    assert result.calls.height == 3 + 1 + 1
    progressed: list[int] = []
    run(tmp_path, progress=progressed.append)
    sizes = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".txt")
    assert sum(progressed) == sizes


def test_reimport_through_the_cli_adds_nothing(tmp_path):
    store = tmp_path / "store"
    args = ["import", "otlp", str(FIXTURES), "--store", str(store)]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "imported 4 new calls, skipped 0 already stored" in first.stdout
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert "imported 0 new calls, skipped 4 already stored" in again.stdout
    stored = Store(store).scan().collect()
    assert stored.height == 4
    assert stored.filter(pl.col("price_status") == "ok").height == 4
    assert stored["total_cost"].null_count() == 0


# -- property tests ----------------------------------------------------------------------------

counts = st.one_of(st.none(), st.integers(0, 2**40))
as_sent = st.sampled_from(["int", "str", "float"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(counts, counts, counts, as_sent), min_size=1, max_size=12))
def test_valid_spans_round_trip_their_token_counts(tmp_path, usages):
    spans, expected = [], {}
    for index, (inp, out, cached, kind) in enumerate(usages):
        attrs = {"gen_ai.operation.name": "chat"}
        encode = {"int": int, "str": str, "float": float}[kind]
        for name, value in (
            ("gen_ai.usage.input_tokens", inp),
            ("gen_ai.usage.output_tokens", out),
            ("gen_ai.usage.cache_read.input_tokens", cached),
        ):
            if value is not None:
                attrs[name] = encode(value)
        span_id = f"{index + 1:016x}"
        spans.append(span(span_id, None, "chat", attrs, trace=f"{index + 1:032x}"))
        cache = cached or 0
        inclusive = inp + cache if inp is not None and cache > inp else inp
        expected[span_id] = (inclusive, cached, out)
    path = write_lines(tmp_path / "p.jsonl", request(*spans[: len(spans) // 2]),
                       request(*spans[len(spans) // 2 :]))  # fmt: skip
    result = run(path)
    assert result.problems == []
    got = {
        row["span_id"]: (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"])
        for row in result.calls.to_dicts()
    }
    assert got == expected


garbage = st.one_of(
    st.text(min_size=1, max_size=80).filter(
        lambda s: "\n" not in s and "\r" not in s and s.strip()
    ),
    st.binary(min_size=1, max_size=80).map(lambda b: b.replace(b"\n", b" ").decode("latin-1")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["resourceSpans", "scopeSpans", "spans", "x"]), inner)
        ),
        max_leaves=8,
    ).map(json.dumps),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(garbage, min_size=1, max_size=5))
def test_garbage_lines_never_crash_and_are_reported(tmp_path, lines):
    good = json.dumps(request(span("00000000000000a1", None, "chat", chat())))
    path = tmp_path / "g.jsonl"
    path.write_text("\n".join([good, *lines, good]) + "\n", encoding="utf-8")
    result = run(path)
    assert result.calls.height == 1  # both good lines hold the same span
    garbage_lines = set(range(2, 2 + len(lines)))
    assert {p.line for p in result.problems} <= garbage_lines
    assert all(p.file == str(path) for p in result.problems)
    for line_no, line in enumerate(lines, start=2):
        if _certainly_not_a_request(line):
            assert [p.line for p in result.problems].count(line_no) == 1, line


def _certainly_not_a_request(line: str) -> bool:
    """Lines that must be reported: not JSON, or JSON that is not a trace request (a list may
    hold requests, and a request may validly hold no spans, so those are left out)."""
    if not line.strip():
        return False
    try:
        doc = json.loads(line)
    except ValueError:
        return True
    return not isinstance(doc, list) and not (isinstance(doc, dict) and "resourceSpans" in doc)


def test_calls_from_already_decoded_spans():
    """The live exporter's entry: span mappings instead of files, same merging and actions."""
    from llmtrace.importers.otlp import calls_from_spans

    root = {"trace_id": TRACE, "span_id": "00000000000000a1", "parent_span_id": None,
            "name": "POST /ask", "start_ns": T0, "end_ns": T0 + 1, "status_code": 0,
            "attributes": {}}  # fmt: skip
    good = {**root, "span_id": "00000000000000a2", "parent_span_id": "00000000000000a1",
            "name": "chat", "attributes": chat()}  # fmt: skip
    bad = {**good, "span_id": "00000000000000a3", "attributes": chat(output_tokens=-1)}
    result = calls_from_spans([root, good, bad], accuracy_names=())
    assert result.calls["action"].to_list() == ["POST /ask"]
    assert [str(p) for p in result.problems] == [
        "<spans>:3: span 00000000000000a3: gen_ai.usage.output_tokens: token count -1 is negative"
    ]


# -- streaming: bounded batches give the same calls as one whole import -------------------------


def stream_batches(path: Path, batch_spans: int) -> list:
    from llmtrace.importers.otlp import stream_otlp

    batches: list = []
    stream_otlp([path], batches.append, batch_spans=batch_spans, accuracy_names=("accuracy",))
    return batches


def test_a_root_after_many_batches_still_names_the_action(tmp_path):
    """Children of one trace sit in many lines read as many batches; its root comes last. The
    calls are held back until then, while other (closed) traces are stored batch by batch."""
    lines = []
    for n in range(20):  # an open trace's LLM calls under a middle span, one line each
        lines.append(request(span(f"00000000000001{n:02x}", "00000000000000b1", attrs=chat(n + 1))))
        other = f"{n + 1:032x}"  # a closed trace per line: its root arrives with it
        lines.append(
            request(
                span(f"00000000000002{n:02x}", "00000000000000a9", attrs=chat(), trace=other),
                span("00000000000000a9", None, "GET /other", trace=other),
            )
        )
    lines.append(request(span("00000000000000b1", "00000000000000a1", "step")))
    lines.append(request(span("00000000000000a1", None, "POST /late-root")))
    path = write_lines(tmp_path / "t.jsonl", *lines)
    batches = stream_batches(path, batch_spans=1)
    assert len(batches) == len(lines) + 1  # one per line, then the end of the import
    early = pl.concat([b.calls for b in batches[:-2]])
    assert early.height == 20 and set(early["action"]) == {"GET /other"}
    held = batches[-2].calls  # the root's batch finishes the 20 held calls
    assert held.height == 20 and set(held["action"]) == {"POST /late-root"}
    whole = run(path)
    assert_same_calls(pl.concat([b.calls for b in batches]), whole.calls)


def test_a_twin_span_in_a_later_batch_is_still_one_call(tmp_path):
    outer = span(
        "00000000000000a1",
        "00000000000000f1",
        "openai.chat",
        chat(1149, 12, **{"gen_ai.response.id": "chatcmpl-1"}),
    )
    inner = span(
        "00000000000000a2",
        "00000000000000a1",
        "chat gpt-4o-mini",
        chat(1149, 12, **{"gen_ai.response.id": "chatcmpl-1", "gen_ai.conversation.id": "c-1"}),
    )
    filler = [request(span(f"{n:016x}", None, "x", trace=f"{n:032x}")) for n in range(1, 6)]
    root = span("00000000000000f1", None, "POST /ask")
    path = write_lines(tmp_path / "t.jsonl", request(inner), *filler, request(outer), request(root))
    batches = stream_batches(path, batch_spans=1)
    calls = pl.concat([b.calls for b in batches])
    assert sum(b.llm_spans for b in batches) == 2 and sum(b.merged for b in batches) == 1
    (row,) = calls.to_dicts()
    # the key of the tie's smallest span id; the conversation id from the other span
    assert (row["span_id"], row["conversation_id"]) == ("00000000000000a1", "c-1")
    assert row["action"] == "POST /ask"
    assert_same_calls(calls, run(path).calls)


@pytest.mark.parametrize("same_key", [False, True])
def test_a_late_twin_after_its_root_is_not_a_second_call(tmp_path, monkeypatch, same_key):
    """The twin of a call arrives after the trace's root, so the call was stored by an earlier
    batch: the late span is merged into the stored call (no second call, no double cost) and
    its evaluation reaches that call. A late re-export of the same span is the store's
    duplicate, as before."""
    monkeypatch.chdir(tmp_path)  # default [accuracy]
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    outer = span("00000000000000a1", "00000000000000f1", "openai.chat",
                 chat(1149, 12, **{"gen_ai.response.id": "chatcmpl-1"}))  # fmt: skip
    root = span("00000000000000f1", None, "POST /ask")
    twin_id = "00000000000000a1" if same_key else "00000000000000a2"
    late = span(twin_id, "00000000000000a1", "chat gpt-4o-mini", chat(1149, 12),
                events=[evaluation("accuracy", 0.75)])  # fmt: skip
    filler = [request(span(f"{n:016x}", None, "x", trace=f"{n:032x}")) for n in range(1, 4)]
    path = write_lines(tmp_path / "t.jsonl", request(outer), request(root), *filler, request(late))
    batches = stream_batches(path, batch_spans=1)
    calls = pl.concat([b.calls for b in batches])
    assert calls["span_id"].to_list() == ["00000000000000a1"] * (2 if same_key else 1)
    assert sum(b.merged for b in batches) == (0 if same_key else 1)
    args = ["import", "otlp", str(path), "--store", str(tmp_path / "s"), "--batch-spans", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (row,) = Store(tmp_path / "s").scan().collect().to_dicts()
    assert (row["span_id"], row["action"], row["accuracy"]) == (
        "00000000000000a1",
        "POST /ask",
        0.75,
    )
    assert row["input_tokens"] == 1149 and row["total_cost"] == pytest.approx(
        1149 * 0.15e-6 + 12 * 0.6e-6
    )
    whole = run(path).calls  # one whole import: the same single call
    assert whole["span_id"].to_list() == ["00000000000000a1"]


def assert_same_calls(left: pl.DataFrame, right: pl.DataFrame) -> None:
    keys = ["trace_id", "span_id"]
    assert left.sort(keys).to_dicts() == right.sort(keys).to_dicts()


def scores_sum(match: re.Match) -> str:
    return f"scores: {int(match[1]) + int(match[2])} attached"


def mixed_traces(tmp_path: Path) -> Path:
    """Traces as exporters write them, and not: children before roots across files, roots
    before late children, twins, an orphan, and evaluations before and after their call."""
    out = tmp_path / "in"
    out.mkdir()
    shutil.copytree(FIXTURES, out / "fixtures")
    docs = []
    for n in range(12):
        trace = f"{n + 1:032x}"
        agent = span(f"{n + 1:014x}b1", f"{n + 1:014x}a1", "agent", {"llmtrace.action": "act"}, trace=trace)  # fmt: skip
        call = span(f"{n + 1:014x}c1", f"{n + 1:014x}b1", attrs=chat(10 + n, **{"gen_ai.response.id": f"r-{n}"}), trace=trace)  # fmt: skip
        twin = span(f"{n + 1:014x}c2", f"{n + 1:014x}c1", attrs=chat(10 + n), trace=trace)
        root = span(f"{n + 1:014x}a1", None, f"GET /{n % 3}", trace=trace)
        late = span(f"{n + 1:014x}c3", f"{n + 1:014x}b1", attrs=chat(99), trace=trace)
        judge = span(
            f"{n + 1:014x}e1", None, "judge", {}, trace=f"{n + 100:032x}",
            events=[evaluation("accuracy", n / 12, response_id=f"r-{n}")],
        )  # fmt: skip
        if n % 2:
            docs += [request(judge), request(twin, call), request(agent), request(root)]
        else:
            docs += [request(call), request(twin, agent), request(root), request(late), request(judge)]  # fmt: skip
    docs.append(request(span("00000000000000c9", "00000000000000ff", attrs=chat(), trace=OTHER_TRACE)))  # fmt: skip
    write_lines(out / "a.jsonl", *docs[: len(docs) // 2])
    write_lines(out / "b.jsonl", *docs[len(docs) // 2 :])
    return out


@pytest.mark.parametrize("small", [1, 3])
def test_batch_size_one_and_large_give_identical_stores(tmp_path, monkeypatch, small):
    monkeypatch.chdir(tmp_path)  # default [accuracy]
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    inputs = mixed_traces(tmp_path)
    outputs, stores = [], []
    for size in (small, 100_000):
        store = tmp_path / f"store-{size}"
        args = ["import", "otlp", str(inputs), "--store", str(store), "--batch-spans", str(size)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
        stores.append(Store(store).scan().collect().sort("trace_id", "span_id"))
    # the same summary, except that a score reaching a call stored by an earlier batch of this
    # import counts as attached "to stored calls" (the store cannot tell which import wrote it)
    summaries = [
        re.sub(r"scores: (\d+) attached to new calls, (\d+)", scores_sum, o) for o in outputs
    ]
    assert summaries[0] == summaries[1]
    assert "scores: 15 attached to stored calls, 0 matched no call" in summaries[0]  # 12 + 3
    # costs may differ in the last bit (the pricing of a batch is vectorised over its rows)
    assert_frame_equal(stores[0], stores[1], rel_tol=1e-12, abs_tol=0)
    calls = stores[0]
    assert calls.height == 4 + 12 + 6 + 1  # fixtures, calls (twins merged), late ones, orphan
    assert calls.filter(pl.col("trace_id").str.starts_with("0000")).get_column(
        "action"
    ).unique().to_list() == ["act"]
    assert calls["accuracy"].drop_nulls().len() == 12 + 2  # and the fixtures' two scored calls


def test_scores_in_every_batch_read_the_stores_keys_a_bounded_number_of_times(
    tmp_path, monkeypatch
):
    """Evaluations in each of many batches: the stored calls' keys are looked up at most twice
    per import (not once per batch, which made imports into a big store quadratic), and the
    store ends as a one-batch import leaves it."""
    monkeypatch.chdir(tmp_path)  # default [accuracy]
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    n = 12
    old = [span(f"{i + 1:016x}", None, "chat", chat(**{"gen_ai.response.id": f"old-{i}"}), trace=f"{i + 1:032x}") for i in range(n)]  # fmt: skip
    earlier = write_lines(tmp_path / "earlier.jsonl", *(request(s) for s in old))
    docs = []
    for i in range(n):
        trace = f"{i + 500:032x}"
        own = evaluation("accuracy", i / n)  # on its own call, new to the store
        docs.append(request(span(f"{i + 500:016x}", None, "chat", chat(**{"gen_ai.response.id": f"new-{i}"}), trace=trace, events=[own])))  # fmt: skip
        judge = [evaluation("correctness", 1.0, response_id=f"old-{i}")]  # a call stored before
        if i + 1 < n:  # a call of the next batch; and one of the batch before
            judge.append(evaluation("relevance", 0.5, response_id=f"new-{i + 1}"))
        if i:
            judge.append(evaluation("relevance", 0.25, response_id=f"new-{i - 1}"))
        docs.append(request(span(f"{i + 900:016x}", None, "judge", {}, trace=f"{i + 900:032x}", events=judge)))  # fmt: skip
    later = write_lines(tmp_path / "later.jsonl", *docs)
    lookups: list[int] = []
    real = Store._stored_score_keys

    def counting(self, rows, files):
        lookups.append(len(files))
        return real(self, rows, files)

    monkeypatch.setattr(Store, "_stored_score_keys", counting)
    outputs, stores = [], []
    for size in (1, 100_000):
        store = tmp_path / f"store-{size}"
        for path in (earlier, later):
            args = ["import", "otlp", str(path), "--store", str(store), "--batch-spans", str(size)]
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
        stores.append(Store(store).scan().collect().sort("trace_id", "span_id"))
        if size == 1:
            assert 1 <= len(lookups) <= 2, lookups  # 2 * n batches, each with evaluations
    # a call's scores are in the order they reached it: its own, the judge of the batch after
    # (a stored call then), the judge of the batch before (placed at the end), as batch-by-batch
    scored = stores[0].filter(pl.col("span_id") == f"{5 + 500:016x}")["scores"].item()
    assert [s["value"] for s in scored] == [5 / n, 0.25, 0.5]
    fields = [pl.element().struct.field(f) for f in ("value", "name")]
    in_order = pl.col("scores").list.eval(pl.element().sort_by(*fields))
    ordered = [s.with_columns(in_order) for s in stores]
    assert_frame_equal(ordered[0], ordered[1], rel_tol=1e-12, abs_tol=0)
    summaries = [
        re.sub(r"scores: (\d+) attached to new calls, (\d+)", scores_sum, o) for o in outputs
    ]
    assert summaries[0] == summaries[1]
    assert f"scores: {n + n + 2 * (n - 1)} attached" in summaries[0]
    again = CliRunner().invoke(cli, ["import", "otlp", str(later), "--store", str(store)])
    assert f"0 matched no call, {n + n + 2 * (n - 1)} already attached" in again.stdout


def test_progress_bar_redraws_without_a_refresh_thread(tmp_path, monkeypatch):
    """rich's Progress refreshes from a thread of its own 10 times a second, ~10% of an
    import's samples (issue 15): the bar is redrawn when the reader reports progress instead."""
    import threading

    from rich.live import _RefreshThread

    from llmtrace.commands import importing

    monkeypatch.setattr(importing, "PROGRESS_MIN_BYTES", 0)  # show the bar on a small input
    seen: list[list[str]] = []
    drawn: list[int] = []
    store_batch, advance = importing._store_batch, importing._advance

    def spy_store(*args, **kwargs):
        seen.append([type(t).__name__ for t in threading.enumerate()])
        return store_batch(*args, **kwargs)

    def spy_advance(bar, task, done):
        assert not bar.disable  # the bar is live: the check below is not vacuous
        drawn.append(done)
        return advance(bar, task, done)

    monkeypatch.setattr(importing, "_store_batch", spy_store)
    monkeypatch.setattr(importing, "_advance", spy_advance)
    result = CliRunner().invoke(
        cli, ["import", "otlp", str(FIXTURES / "collector.jsonl"), "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == 0, result.output
    assert seen and drawn
    assert all(_RefreshThread.__name__ not in names for names in seen)
