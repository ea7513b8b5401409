"""Bad values at the OTLP edge: each rejects its span (or line, or file) with one problem line,
and every good call around it is still stored (issue 12, point 1)."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmtrace.cli import cli
from llmtrace.importers.otlp import import_otlp
from llmtrace.store import Store

T0 = 1_764_234_000_000_000_000  # 2025-11-27T09:00:00Z
TRACE = "5b8efff798038103d269b633813fc60c"
BIG = 2**63


def kv(attrs: dict) -> list[dict]:
    out = []
    for key, value in attrs.items():
        if isinstance(value, bool):
            wrapped = {"boolValue": value}
        elif isinstance(value, int):
            wrapped = {"intValue": str(value)}
        elif isinstance(value, float):
            wrapped = {"doubleValue": value}
        else:
            wrapped = {"stringValue": value}
        out.append({"key": key, "value": wrapped})
    return out


def span(span_id: str, attrs: dict | None = None, start=T0, **extra) -> dict:
    return {
        "traceId": TRACE,
        "spanId": span_id,
        "name": "chat",
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 1_000_000_000) if isinstance(start, int) else str(start),
        "attributes": kv(attrs if attrs is not None else chat()),
        **extra,
    }


def request(*spans: dict) -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": kv({"service.name": "svc"})},
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.genai.openai"},
                        "spans": list(spans),
                    }
                ],
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


def good(n: int) -> dict:
    return request(span(f"{n:016x}"))


def write(path: Path, *lines: dict | str) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


BAD_SPANS = {
    "count beyond Int64": (chat(input_tokens=BIG), "beyond a 64-bit integer"),
    "float count 1e20": ({**chat(), "gen_ai.usage.input_tokens": 1e20}, "beyond a 64-bit"),
    "text count 1e300": ({**chat(), "gen_ai.usage.input_tokens": "1e300"}, "beyond a 64-bit"),
    "NaN count": ({**chat(), "gen_ai.usage.output_tokens": float("nan")}, "not a whole number"),
    "reasoning overflows the sum": (
        chat(output_tokens=10, **{"gen_ai.usage.reasoning.output_tokens": BIG - 1}),
        "beyond a 64-bit integer",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPANS))
def test_a_bad_count_rejects_only_its_span(tmp_path, case):
    attrs, expected = BAD_SPANS[case]
    bad = request(span("00000000000000b1", attrs), span("00000000000000a2"))
    path = write(tmp_path / "t.jsonl", good(1), bad, good(3))
    result = import_otlp([path])
    assert [str(p) for p in result.problems] == [
        f"{path}:2: span 00000000000000b1: " + result.problems[0].message
    ]
    assert expected in result.problems[0].message
    assert sorted(result.calls["span_id"]) == [
        "0000000000000001",
        "0000000000000003",
        "00000000000000a2",
    ]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (BIG, "between 2000 and 2100"),
        (253_402_300_799_000_000_000 // 1, "between 2000 and 2100"),
        ("-5", "between 2000 and 2100"),
        (1.5e18, "not an integer"),
    ],
)
def test_out_of_range_times_reject_the_span(tmp_path, start, expected):
    bad = request({**span("00000000000000b1"), "startTimeUnixNano": start})
    path = write(tmp_path / "t.jsonl", bad, good(2))
    result = import_otlp([path])
    assert len(result.problems) == 1 and expected in result.problems[0].message
    assert list(result.calls["span_id"]) == ["0000000000000002"]


def test_deep_nesting_is_one_problem_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    nested_attr = '{"resourceSpans":[{"scopeSpans":[{"spans":[' + "[" * 5000 + "]" * 5000 + "]}]}]}"
    path = write(tmp_path / "t.jsonl", good(1), deep, nested_attr, good(4))
    result = import_otlp([path])
    messages = {p.line: p.message for p in result.problems}
    assert "nested too deeply" in messages[2]
    assert 3 in messages
    assert sorted(result.calls["span_id"]) == ["0000000000000001", "0000000000000004"]


@pytest.mark.parametrize(
    "value",
    [
        {"arrayValue": {"values": [{"stringValue": "chat"}]}},
        {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}},
    ],
)
def test_a_list_or_map_as_operation_name_rejects_only_its_span(tmp_path, value):
    """An unhashable operation name used to crash the whole import (the span tree's columns
    fell out of step: a Polars ShapeError); now it is one problem and its neighbours stay."""
    bad = span("00000000000000b2")
    bad["attributes"] = [{"key": "gen_ai.operation.name", "value": value}]
    path = write(
        tmp_path / "t.jsonl", request(span("00000000000000b1"), bad, span("00000000000000b3"))
    )
    result = import_otlp([path])
    assert [(p.line, p.span) for p in result.problems] == [(1, "00000000000000b2")]
    assert "unhashable" in result.problems[0].message
    assert sorted(result.calls["span_id"]) == ["00000000000000b1", "00000000000000b3"]


def test_lone_surrogate_rejects_the_span_and_a_valid_pair_is_kept(tmp_path):
    bad = json.dumps(request(span("00000000000000b1", chat(**{"gen_ai.prompt.name": "x"}))))
    bad = bad.replace('"stringValue": "x"', '"stringValue": "x\\udfff"')
    emoji = json.dumps(request(span("00000000000000a2", chat(**{"gen_ai.prompt.name": "y"}))))
    emoji = emoji.replace('"stringValue": "y"', '"stringValue": "\\ud83d\\ude00"')
    path = write(tmp_path / "t.jsonl", bad, emoji, good(3))
    outcome = CliRunner().invoke(cli, ["import", "otlp", str(path), "--store", str(tmp_path / "s")])
    assert outcome.exit_code == 1, outcome.output
    assert "Traceback" not in outcome.output
    assert f"{path}:1: span 00000000000000b1: invalid Unicode" in outcome.stderr
    stored = Store(tmp_path / "s").scan().collect()
    assert sorted(stored["span_id"]) == ["0000000000000003", "00000000000000a2"]


def test_corrupt_gzip_member_keeps_what_was_read_and_the_other_files(tmp_path):
    lines = "".join(json.dumps(good(i)) + "\n" for i in range(1, 200)).encode()
    data = bytearray(gzip.compress(lines))
    data[len(data) // 2 : len(data) // 2 + 40] = b"\x00" * 40
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(data))
    write(tmp_path / "ok.jsonl", good(500))
    outcome = CliRunner().invoke(
        cli, ["import", "otlp", str(tmp_path), "--store", str(tmp_path / "s")]
    )
    assert outcome.exit_code == 1, outcome.output
    assert "Traceback" not in outcome.output
    assert f"{tmp_path / 'bad.jsonl.gz'}: cannot read" in outcome.stderr
    stored = Store(tmp_path / "s").scan().collect()
    assert "00000000000001f4" in set(stored["span_id"])


def test_a_span_id_with_a_newline_cannot_forge_a_problem_line(tmp_path):
    forged = "x\n/etc/passwd:1: span 1: \x1b[2Jgood"
    bad = request({**span("00000000000000b1"), "spanId": forged})
    path = write(tmp_path / "t.jsonl", bad, good(2))
    outcome = CliRunner().invoke(cli, ["import", "otlp", str(path), "--store", str(tmp_path / "s")])
    assert outcome.exit_code == 1
    problem_lines = [line for line in outcome.stderr.splitlines() if line.startswith(str(path))]
    assert len(problem_lines) == 1
    assert "\\n/etc/passwd" in problem_lines[0] and "\\x1b[2J" in problem_lines[0]
    assert not any(line.startswith("/etc/passwd") for line in outcome.stderr.splitlines())
    assert "\x1b" not in outcome.stderr


def test_memory_stays_bounded_when_the_first_line_is_bad(tmp_path):
    """The reader used to read the whole rest of the file (and split it) to decide whether a bad
    first line began a pretty-printed document: a 660 MB file peaked at 2.05 GB."""
    line = json.dumps(good(7)) + "\n"
    body = line * 10_000  # ~4.5 MB of JSON lines
    bad_first = write(tmp_path / "bad.jsonl", "{not json")
    with bad_first.open("a") as handle:
        handle.write(body)
    good_first = tmp_path / "good.jsonl"
    good_first.write_text(body)

    def peak(path: Path) -> int:
        tracemalloc.start()
        result = import_otlp([path])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.calls.height == 1
        return top

    size = bad_first.stat().st_size
    assert peak(bad_first) < peak(good_first) + size // 4


def test_text_report_escapes_terminal_and_bidi_controls():
    from datetime import UTC, datetime

    from llmtrace.report import text
    from llmtrace.rules.base import Finding
    from llmtrace.rules.engine import AuditResult, AuditWindow

    prompt = "evil\x1b]0;pwned\x07\u202eRTL\nnext"
    finding = Finding(
        rule="LT201",
        name="n",
        severity="high",
        prompt=prompt,
        model="m\x1b[31m",
        service=None,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 1, 2, tzinfo=UTC),
        monthly_savings_usd=10.0,
        message="msg \u202e here",
        fix="",
    )
    day = datetime(2026, 1, 1, tzinfo=UTC)
    window = AuditWindow(day, day, day, day)
    result = AuditResult(findings=[finding], rules_run=["LT201"], calls_scanned=1, window=window)
    out = text.render(result)
    for bad in ("\x1b", "\x07", "\u202e"):
        assert bad not in out
    assert "\\x1b" in out and "\\u202e" in out


def test_good_lines_after_many_damaged_first_lines_are_kept(tmp_path):
    """Found by bench/fuzz_edges.py: flipped bytes made four garbage lines (invalid UTF-8)
    before the good ones, and the whole file was reported as one truncated document."""
    path = tmp_path / "t.jsonl"
    garbage = b"\n".join([b"{\x92\xb3 broken", b"\xb3", b"x\x91", b"\xb3"])
    path.write_bytes(garbage + b"\n" + json.dumps(good(1)).encode() + b"\n")
    result = import_otlp([path])
    assert list(result.calls["span_id"]) == ["0000000000000001"]
    assert [p.line for p in result.problems] == [1, 2, 3, 4]


def test_a_truncated_pretty_document_is_still_one_problem(tmp_path):
    path = tmp_path / "t.json"
    text = json.dumps(good(1), indent=2)
    path.write_text(text[: len(text) // 2])
    result = import_otlp([path])
    assert len(result.problems) == 1 and "truncated" in result.problems[0].message
