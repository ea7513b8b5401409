"""The import's fast paths (issue 15) give exactly what the plain paths gave.

Shortcuts make ``import otlp`` cheaper per span: JSON lines are decoded by msgspec into typed
structs (``otlp_fast``; a line it declines goes through ``json`` and the per-span decoder),
the call frame's list columns are built from one flat series, scope names are matched to
dialects once per name, string attribute values are read inline, lowercase hex ids skip decoding, and times written
as plain decimal text skip the general checks. Each is compared here with the code it
replaced, on every OTLP fixture (tests/fixtures, including the seven recorded libraries) and on
the fixtures with hostile values planted (tests/hostile.py): the same call records, the same
problems (file, line, span, text), the same counts. If a test here fails, a shortcut changed
what an import produces.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from pathlib import Path
from types import MappingProxyType
from typing import Any

import polars as pl
import pytest
from hostile import mutate
from polars.testing import assert_frame_equal

from llmtrace import dialect_values as dv
from llmtrace import dialects
from llmtrace.importers import otlp, otlp_columns, otlp_fast, otlp_files, otlp_spans
from llmtrace.importers.otlp_spans import _any_value, _Malformed

FIXTURES = Path(__file__).parent / "fixtures"
OTLP_FIXTURES = sorted(
    path
    for folder in ("libraries", "otlp", "otlp-agents")
    for path in (FIXTURES / folder).iterdir()
    if path.suffix in (".json", ".jsonl") and path.name != "manifest.json"
)


# The code the shortcuts replaced, as it was (commit 572059f).


def plain_attributes(items: Any) -> dict[str, Any]:
    if not items:
        return {}
    try:
        return {kv["key"]: _any_value(kv.get("value")) for kv in items}
    except (AttributeError, KeyError, TypeError):
        raise _Malformed("attributes are not a list of {key, value} objects") from None


def plain_hex_id(value: Any, size: int, field: str) -> str:
    if not value or not isinstance(value, str):
        raise _Malformed(f"no {field}")
    if len(value) == size * 2:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise _Malformed(f"{field} {value!r} is not hex") from None
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size:
            raise _Malformed(f"{field} {value!r} is not a {size}-byte id")
    if not any(raw):
        raise _Malformed(f"{field} is all zeros")
    return raw.hex()


def plain_nanos(value: Any, field: str) -> int | None:
    if value is None or value == "" or value == "0" or value == 0:
        return None
    if type(value) is not int:
        if type(value) is float or type(value) is bool:
            raise _Malformed(f"{field} {value!r} is not an integer")
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise _Malformed(f"{field} {value!r} is not an integer") from None
    return otlp_spans._checked_time(value, field)


def plain_usage(found, attrs, dialect, provider):
    tokens: dict[str, int | None] = {}
    for key, slot in dv._TOKEN_SLOT.items():
        hit = found.get(slot)
        tokens[key] = None if hit is None else dv.token_count(hit[2], hit[1])
    if dialect.usage_json is not None:
        from_json = dv._usage_from_json(attrs, dialect.usage_json)
        if from_json is not None:
            tokens.update({k: v for k, v in from_json.items() if v is not None})
    if dialect.raw_usage is not None:
        dv._fill_from_raw(tokens, attrs, dialect.raw_usage)
    dv._make_inclusive(tokens, dialect, provider)
    for key, value in tokens.items():
        if value is not None and value > dv.INT64_MAX:
            raise dialects.SpanError(f"{key} tokens add up to {value}, beyond a 64-bit integer")
    return {dv.TOKEN_RECORD_FIELD[key]: tokens.get(key) for key in dv._TOKEN_KEYS}


def plain_map_span(span: Any, *, keep_content: bool = False) -> dict[str, Any]:
    """``dialects.map_span`` as it was (commit 1de33a0), a dict built per call."""
    d = dialects
    attrs = span.get("attributes") or {}
    resource = span.get("resource") or {}
    dialect = d.detect_dialect(attrs, span.get("scope"))
    found = d._collect(attrs, dialect)
    value = {slot: hit[2] for slot, hit in found.items()}.get
    provider = d.normalize_provider(value("provider"))
    usage = plain_usage(found, attrs, dialect, provider)
    reported_cost, reported_source = d._reported_cost(found, attrs)
    request_model = d._text(value("request_model"))
    model = d._text(value("response_model")) or request_model
    is_error, error_type = d._error(span, attrs)
    prompt_name = d._text(value("prompt_name"))
    prompt_version = d._text(value("prompt_version"))
    try:
        prints = d.fingerprint.content_fields(attrs, keep_content=keep_content)
    except d.fingerprint.ContentError as exc:
        raise d.SpanError(str(exc)) from None
    return {
        "trace_id": span.get("trace_id"),
        "span_id": span.get("span_id"),
        "parent_span_id": span.get("parent_span_id") or None,
        "response_id": d._text(value("response_id")),
        "dialect": dialect.name,
        "service": d._text(d._first(resource, d._SERVICE_NAMES) or value("service")),
        "environment": d._text(d._first(resource, d._ENVIRONMENT_NAMES) or value("environment")),
        "provider": provider,
        "model": model,
        "request_model": request_model or model,
        "operation": d._operation(attrs),
        "prompt_name": prompt_name,
        "prompt_version": prompt_version,
        "prompt": d._prompt_key(prompt_name, prompt_version, prints.get("template_fingerprint")),
        "action": d._text(value("action")),
        "conversation_id": d._text(value("conversation_id")),
        "user_id": d._text(value("user_id")),
        "reasoning_effort": d._text(value("reasoning_effort")),
        "service_tier": d._service_tier(found, attrs),
        "agent": d._text(attrs.get(d.AGENT_ATTRIBUTE)),
        "tool": d._text(attrs.get(d.TOOL_ATTRIBUTE)),
        "start_ns": d._start_ns(span, attrs, dialect),
        "end_ns": span.get("end_ns"),
        "is_error": is_error,
        "error_type": error_type,
        **usage,
        "reported_cost": reported_cost,
        "reported_cost_source": reported_source,
        **prints,
    }


def plain_list_column(name: str, values: list[Any], dtype: pl.List) -> pl.Series:
    return pl.Series(name, values, dtype=dtype)


def _outcome(function, *args) -> tuple[str, str]:
    try:
        return "ok", repr(function(*args))
    except Exception as exc:  # noqa: BLE001 - the type and text are what is compared
        return type(exc).__name__, str(exc)


def _import(
    paths: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    plain: bool,
    columnar: bool = True,
    **options,
):
    with monkeypatch.context() as patch:
        if plain or not columnar:
            patch.setattr(otlp_files, "_columnar", False)
        if plain:
            patch.setattr(otlp_files, "_fast_line", None)
            patch.setattr(otlp, "list_column", plain_list_column)
            patch.setattr(dialects, "_scope_dialect", dialects._scan_scope)
            patch.setattr(otlp_spans, "_attributes", plain_attributes)
            patch.setattr(otlp_spans, "_hex_id", plain_hex_id)
            patch.setattr(otlp_spans, "_nanos", plain_nanos)
        return otlp.import_otlp(paths, accuracy_names=(), **options)


def assert_same_import(paths: list[Path], monkeypatch: pytest.MonkeyPatch, **options) -> None:
    """The plain per-span path, the fast per-span path (msgspec, no columnar lane) and the
    columnar lane (``otlp_columns``, the default) give the same import."""
    plain = _import(paths, monkeypatch, True, **options)
    for columnar in (False, True):
        fast = _import(paths, monkeypatch, False, columnar, **options)
        assert [str(p) for p in fast.problems] == [str(p) for p in plain.problems]
        assert_frame_equal(fast.calls, plain.calls)
        assert_frame_equal(fast.score_targets, plain.score_targets)
        counts = ("spans", "llm_spans", "merged", "rejected", "scores", "unmatched_scores")
        assert [getattr(fast, c) for c in counts] == [getattr(plain, c) for c in counts]


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def test_the_corpus_has_calls_from_every_recorded_library() -> None:
    libraries = {p.name for p in OTLP_FIXTURES if p.parent.name == "libraries"}
    assert len(libraries) == 7  # the test below would pass vacuously on a missing corpus
    result = otlp.import_otlp(OTLP_FIXTURES, accuracy_names=())
    assert result.calls.height > 50
    assert result.calls.get_column("dialect").n_unique() >= 6


@pytest.mark.parametrize("keep_content", [False, True])
def test_whole_corpus_imports_the_same_records(monkeypatch, keep_content) -> None:
    assert_same_import(OTLP_FIXTURES, monkeypatch, keep_content=keep_content)


def test_each_fixture_imports_the_same_records(monkeypatch) -> None:
    for path in OTLP_FIXTURES:
        assert_same_import([path], monkeypatch)


def test_hostile_fixtures_import_the_same_records(tmp_path, monkeypatch) -> None:
    """JSON-lines fixture lines with hostile values planted (200 mutations, seeded), each
    followed by an untouched line, in one file: the same records and the same problem lines."""
    rng = random.Random(15)
    documents = [
        json.loads(line)
        for path in OTLP_FIXTURES
        if path.suffix == ".jsonl"
        for line in _lines(path)
    ]
    lines = []
    for number in range(200):
        damaged = mutate(rng.choice(documents), rng, count=rng.randint(1, 3))
        try:
            text = json.dumps(damaged, separators=(", ", ": ") if number % 2 else (",", ":"))
        except (ValueError, RecursionError):  # nested deeper than json writes: as deep by hand
            text = '{"resourceSpans": ' + "[" * 5000 + "]" * 5000 + "}"
        lines += [text, json.dumps(rng.choice(documents))]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert_same_import([path], monkeypatch)
    assert len(_import([path], monkeypatch, False).problems) > 50  # the mutations did bite


def test_attribute_and_id_shortcuts_match_the_plain_code() -> None:
    rng = random.Random(7)
    values: list[Any] = [
        {"stringValue": "x"},
        {"stringValue": None},
        {"stringValue": 5},
        {"stringValue": "a", "intValue": "1"},
        {"intValue": "12"},
        {},
        None,
        [],
        "text",
        {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}},
    ]
    cases: list[Any] = [None, [], {}, "x", [None], [{"value": {"stringValue": "v"}}]]
    for _ in range(300):
        entries = []
        for _ in range(rng.randint(1, 4)):
            entry: dict[str, Any] = {"key": rng.choice(["a", "b", 5, None])}
            if rng.random() < 0.9:
                entry["value"] = rng.choice(values)
            entries.append(entry)
        cases.append(entries)
    for case in cases:
        assert _outcome(otlp_spans._attributes, case) == _outcome(plain_attributes, case), case
    times: list[Any] = ["1764201600000000000", "0", "00", "", None, 0, "-5", " 17642016000000000"]
    times += ["1764201600000000000 ", "+1764201600000000000", "1_764_201_600_000_000_000", "٣"]
    times += ["99999999999999999999", "1", str(2**63), 1764201600000000000, 1.5e18, True, "x"]
    for value in times:
        fast = _outcome(otlp_spans._nanos, value, "startTimeUnixNano")
        assert fast == _outcome(plain_nanos, value, "startTimeUnixNano"), value
    ids = ["a" * 32, "0" * 32, "A" * 32, "g" * 32, "ab" * 8, "00" * 8, "AB" * 8, " a" * 8]
    ids += ["q83vEjRWeJA=", "AAAAAAAAAAA=", "", None, 5, "a" * 31, "a" * 33, "ab cd ef 01 23 45 "]
    for value in ids:
        for size, field in ((16, "traceId"), (8, "spanId")):
            fast = _outcome(otlp_spans._hex_id, value, size, field)
            assert fast == _outcome(plain_hex_id, value, size, field), value


def test_the_fast_lane_reads_the_recorded_libraries() -> None:
    """Else the comparisons above would compare the per-span path with itself."""
    lines = [line for path in OTLP_FIXTURES if path.suffix == ".jsonl" for line in _lines(path)]
    decoded = [otlp_fast.decode_line(line) for line in lines]
    assert len(lines) >= 15 and all(spans for spans in decoded)


_SPAN = (
    '{"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", '
    '"name": "chat", "startTimeUnixNano": "1764201600000000000", '
    '"endTimeUnixNano": "1764201601000000000", "attributes": [%s]%s}'
)
_USAGE = (
    '{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}, '
    '{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}, '
    '{"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}}'
)
# Values where msgspec and json could part ways, each in a span of its own line.
_EDGE_ATTRIBUTES = [
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": 99999999999999999999}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "99999999999999999999"}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": 3}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": "3.5"}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": "x"}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": 1e400}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"doubleValue": NaN}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"boolValue": 1}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "5", "intValue": "7"}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"stringValue": null, "intValue": "7"}}',
    '{"key": "gen_ai.usage.output_tokens", "value": {}}',
    '{"key": "gen_ai.usage.output_tokens", "value": null}',
    '{"key": "gen_ai.usage.output_tokens"}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "4"}, "x": [[[[1]]]]}',
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "4"}}, '
    '{"key": "gen_ai.usage.output_tokens", "value": {"intValue": "8"}}',
    '{"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": '
    '[{"stringValue": "stop"}, {}, {"intValue": "3"}, {"arrayValue": {}}]}}}',
    '{"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": null}}',
    '{"key": "llm.invocation_parameters", "value": {"kvlistValue": {"values": '
    '[{"key": "a", "value": {"boolValue": true}}, {"key": "b"}]}}}',
    '{"key": "llm.invocation_parameters", "value": {"kvlistValue": {"values": '
    '[{"key": "a", "value": {"kvlistValue": {"values": []}}}]}}}',
    '{"key": "gen_ai.system_instructions", "value": {"stringValue": "\\ud800 lone"}}',
    '{"key": "gen_ai.system_instructions", "value": {"stringValue": "\\ud83d\\ude00 pair"}}',
    '{"key": "gen_ai.system_instructions", "value": {"stringValue": "tab\\t\\u0000 nul"}}',
    '{"key": 5, "value": {"stringValue": "a key that is a number"}}',
]
_EDGE_SPAN_TAILS = [
    ', "status": {"code": 2, "message": "boom"}',
    ', "status": {"code": "STATUS_CODE_ERROR"}',
    ', "status": {"code": true}',
    ', "status": {}',
    ', "kind": 3, "flags": 256, "droppedAttributesCount": 0',
    ', "links": [{"traceId": "x", "attributes": []}]',
    ', "unknown": ' + "[" * 3000 + "]" * 3000,
    ', "events": [{"name": "exception", "attributes": [{"key": "exception.type", '
    '"value": {"stringValue": "Timeout"}}]}], "status": {"code": 2}',
    ', "parentSpanId": ""',
    ', "parentSpanId": "00000000000000000000"',
    ', "name": 5',
    ', "startTimeUnixNano": 1.5e18',
    ', "startTimeUnixNano": 1764201600000000000',
    ', "startTimeUnixNano": "17642016000000000000000"',
    ', "spanId": "EEE19B7EC3C1B174"',
]


def test_edge_lines_import_the_same_records(tmp_path, monkeypatch) -> None:
    """Lines built to sit where the two decoders could differ: each line is read by one path
    or the other, and either way the records and problems are those of the per-span path."""
    lines = [_SPAN % (f"{_USAGE}, {attribute}", "") for attribute in _EDGE_ATTRIBUTES]
    lines += [_SPAN % (_USAGE, tail) for tail in _EDGE_SPAN_TAILS]
    # one trace and span per line, so no two lines' calls merge and hide a difference
    lines = [
        line.replace("eee19b7ec3c1b174", f"{n:016x}").replace("5b8efff7", f"{n:08x}")
        for n, line in enumerate(lines, start=1)
    ]
    requests = [
        '{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", '
        '"value": {"stringValue": "svc"}}]}, "scopeSpans": [{"scope": {"name": "openlit"}, '
        f'"spans": [{line}]}}]}}]}}'
        for line in lines
    ]
    requests += ['{"resourceSpans": null}', '{"resourceSpans": [null]}', "[]", "{}"]
    requests += ['{"resourceSpans": [{"scopeSpans": [{"spans": [' + lines[0] + ']}]}], "x": 1}']
    path = tmp_path / "edges.jsonl"
    path.write_text('{"resourceSpans": []}\n' + "\n".join(requests) + "\n")
    fast_lines = sum(otlp_fast.decode_line(r.encode()) is not None for r in requests)
    assert 10 < fast_lines < len(requests)  # both paths are exercised
    assert_same_import([path], monkeypatch)
    assert_same_import([path], monkeypatch, keep_content=True)


def test_priced_spans_import_the_same_records(tmp_path, monkeypatch) -> None:
    """Spans llmtrace's live processor priced (``llmtrace.price.status``), every combination
    of its cost attributes over the source's and the source's cost it kept, from a scope no
    dialect knows (the markers decide) and from OpenLIT's: both lanes read the same dialect
    and reported cost (``dialects._priced_dialect``, ``_priced_reported_cost``)."""
    attribute = '{"key": "%s", "value": {"%s": %s}}'
    costs = [None, ("doubleValue", "0.5"), ("intValue", '"2"'), ("stringValue", '"0.5"')]
    sources = [None, *(("stringValue", json.dumps(s)) for s in _PRICED_SOURCES)]
    sources.append(("doubleValue", "1.5"))
    lines, meta = [], []
    for status in ("ok", "not_priced"):
        for written in range(4):  # neither, gen_ai.usage.cost, the cost details, both
            for cost in costs:
                for source in sources:
                    parts = [
                        _USAGE,
                        attribute % ("llmtrace.price.status", "stringValue", f'"{status}"'),
                    ]
                    if written & 1:
                        parts.append(attribute % ("gen_ai.usage.cost", "doubleValue", "0.25"))
                    if written & 2:
                        details = json.dumps(json.dumps({"total": 0.25}))
                        parts.append(
                            attribute % (dialects.LANGFUSE_COST_JSON, "stringValue", details)
                        )
                    if cost is not None:
                        parts.append(attribute % ("llmtrace.reported_cost", *cost))
                    if source is not None:
                        parts.append(attribute % ("llmtrace.reported_cost_source", *source))
                    lines.append(_SPAN % (", ".join(parts), ""))
                    meta.append((status, written, cost, source))
    # one trace, span and input count per line, so no two lines' calls are taken for twins
    lines = [
        line.replace("eee19b7ec3c1b174", f"{n:016x}")
        .replace("5b8efff7", f"{n:08x}")
        .replace('"intValue": "10"', f'"intValue": "{n}"')
        for n, line in enumerate(lines, start=1)
    ]
    requests = [
        json.dumps(
            {
                "resourceSpans": [
                    {
                        "scopeSpans": [
                            {
                                "scope": {"name": "openlit" if n % 5 == 0 else "myapp.llm"},
                                "spans": [json.loads(line)],
                            }
                        ]
                    }
                ]
            }
        )
        for n, line in enumerate(lines)
    ]
    path = tmp_path / "priced.jsonl"
    path.write_text("\n".join(requests) + "\n")
    assert_same_import([path], monkeypatch)
    calls = _import([path], monkeypatch, False).calls
    assert set(calls["dialect"]) == {"otel-semconv", "openlit", "langfuse"}
    assert calls["reported_cost_source"].null_count() not in (0, calls.height)
    # llmtrace's own attributes are neither a marker nor a reported cost
    for row in calls.iter_rows(named=True):
        n = int(row["span_id"], 16) - 1  # the line's index (its scope: OpenLIT's every 5th)
        status, written, cost, source = meta[n]
        if status == "ok" and cost is None:
            assert row["reported_cost"] is None, row
        if status == "ok" and source is None and n % 5:
            assert row["dialect"] == "otel-semconv", row
        if status != "ok" and written and n % 5:
            assert row["dialect"] == ("langfuse" if written & 2 else "openlit"), row


def test_list_columns_match_the_plain_constructor() -> None:
    rng = random.Random(3)
    cases: list[list[Any]] = [[], [None], [[1]], [[], None, [2, 3]], [(1, 2), None], [[2**64 - 1]]]
    for _ in range(50):
        cases.append(
            [
                [rng.getrandbits(63) for _ in range(rng.randint(1, 5))]
                if rng.random() < 0.4
                else None
                for _ in range(rng.randint(1, 30))
            ]
        )
    for values in cases:
        for dtype in (pl.List(pl.UInt64), pl.List(pl.Int64)):
            if dtype.inner == pl.Int64 and values == [[2**64 - 1]]:
                continue
            fast = otlp_columns.list_column("x", values, dtype)
            assert fast.equals(plain_list_column("x", values, dtype)), values
            assert fast.dtype == dtype


_TOKEN_VALUES: list[Any] = [0, 7, -1, 2**63 - 1, 2**63, 2**70, "12", "1.0", "1.5", " 3", "x", ""]
_TOKEN_VALUES += [3.0, 2.5, -0.0, float("nan"), True, False, None, [1], {"a": 1}]


def _corpus_spans() -> list[dict[str, Any]]:
    """Every span mapping of the corpus, and of its lines with hostile values planted."""
    rng = random.Random(21)
    documents = [
        json.loads(text)
        for path in OTLP_FIXTURES
        for text in (_lines(path) if path.suffix == ".jsonl" else [path.read_bytes()])
    ]
    documents += [mutate(rng.choice(documents), rng, count=2) for _ in range(300)]
    spans = []
    for doc in documents:
        try:
            pairs = list(otlp_spans._json_request_spans(doc))
        except Exception:  # noqa: BLE001 - a request the importer rejects whole
            continue
        for raw, (scope, resource) in pairs:
            try:
                spans.append(otlp_spans._json_span(raw, scope, resource))
            except Exception:  # noqa: BLE001 - a span rejected before mapping
                continue
    return spans


def test_map_span_rows_match_the_dict_per_call_code() -> None:
    """``map_span_row`` (a tuple per call, counts read without a call when they are plain
    integers) against ``map_span`` as it was, on every span of the corpus and its hostile
    variants, and with odd token counts planted in every usage attribute a span has."""
    spans = _corpus_spans()
    rng = random.Random(5)
    usage_names = sorted(dialects.USAGE_ATTRIBUTES | set(dialects.SEMCONV_TOKENS["total"]))
    planted = []
    for span in spans:
        names = [n for n in span["attributes"] if n in usage_names] or usage_names[:2]
        attrs = {**span["attributes"], rng.choice(names): rng.choice(_TOKEN_VALUES)}
        planted.append({**span, "attributes": attrs})
    assert len(spans) > 300
    for span in spans + planted:
        for keep in (False, True):
            plain = _outcome(
                lambda s=span, k=keep: tuple(plain_map_span(s, keep_content=k).values())
            )
            fast = _outcome(lambda s=span, k=keep: dialects.map_span_row(s, keep_content=k))
            assert fast == plain, span
    assert list(plain_map_span(spans[0])) == list(dialects.CALL_FIELDS)
    assert dialects.map_span(spans[0]) == plain_map_span(spans[0])


def plain_bucket_sum(details: Any, groups: Any, attribute: str) -> Any:
    for group in groups:
        present = [key for key in group if details.get(key) is not None]
        if present:
            return sum(dv.token_count(details[key], f"{attribute}.{key}") for key in present)
    return None


def test_usage_bucket_sums_match_the_plain_code() -> None:
    """Langfuse usage buckets: plain integers skip ``token_count``; every other value, and
    every error (the first bad key of the group, in order), as before."""
    rng = random.Random(9)
    keys = ["a", "b", "c"]
    groups = (("a",), ("b", "c"))
    for _ in range(2000):
        details = {k: rng.choice(_TOKEN_VALUES) for k in keys if rng.random() < 0.5}
        fast = _outcome(dv._bucket_sum, details, groups, "usage")
        assert fast == _outcome(plain_bucket_sum, details, groups, "usage"), details


def test_an_import_leaves_the_collector_as_it_found_it(tmp_path) -> None:
    """The import freezes what existed before it (so each batch's collection skips it) and
    thaws it at the end; objects a caller froze stay frozen."""
    import gc

    path = OTLP_FIXTURES[0]
    assert gc.get_freeze_count() == 0
    otlp.import_otlp([path], accuracy_names=())
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        otlp.import_otlp([path], accuracy_names=())
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


_RANDOM_TEXTS = [
    "", "chat", "Chat", "LLM", "EMBEDDING", "TOOL", "tool", "generation", "Embedding",
    "embedding", "execute_tool", "invoke_agent", "create_agent", "retrieval", "completion",
    "openai", " OpenAI ", "anthropic", "gcp.vertex_ai", "Azure.AI.OpenAI", "default", "auto",
    " Flex ", "STANDARD", "ERROR", "gpt-4o", "İstanbul", "KELVIN\u212a", "x", "12", "3.5",
    "-1", "a\tb", "resp-1", "svc", "prod",
]  # fmt: skip
_RANDOM_NUMBERS: list[Any] = [0, 1, 5, 100, 1024, 2048, 4000, -3, 2**62, 2**63 - 1]
_RANDOM_OTHER: list[Any] = [0.5, 3.0, -1.0, 1e300, 0.0123, True, False, ["a"], [1, 2]]


def _random_value(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.5:
        return {"stringValue": rng.choice(_RANDOM_TEXTS)}
    if roll < 0.85:
        return {"intValue": str(rng.choice(_RANDOM_NUMBERS))}
    value = rng.choice(_RANDOM_OTHER)
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"arrayValue": {"values": [{"stringValue": str(v)} for v in value]}}


def _random_span(rng: random.Random, trace: str, number: int, parent: str | None) -> dict:
    from llmtrace import dialect_columns, fingerprint

    keys = list(dialect_columns.KEYS)
    # every dialect's token names often, so calls (not only tree spans) are drawn
    tokens = sorted(dialects.USAGE_ATTRIBUTES - {dialects.LANGFUSE_USAGE_JSON})
    chosen = rng.sample(keys, rng.randint(0, 6)) + rng.sample(tokens, rng.randint(0, 3))
    clean = rng.random() < 0.75  # most spans: text where text is read, counts where counts are
    counted = set(tokens) | set(dialects.COST_ATTRIBUTES)
    attributes = [
        {
            "key": key,
            "value": {"intValue": str(rng.choice(_RANDOM_NUMBERS[:7]))}
            if clean and key in counted
            else {"stringValue": rng.choice(_RANDOM_TEXTS)}
            if clean
            else _random_value(rng),
        }
        for key in chosen
    ]
    if rng.random() < 0.4:  # plain counts where the dialects read them
        for key in rng.sample(tokens, 2):
            attributes.append({"key": key, "value": {"intValue": str(rng.randint(0, 5000))}})
    if attributes and rng.random() < 0.05:  # a name twice: the last value wins
        repeated = rng.choice(attributes)["key"]
        value = rng.choice([{"stringValue": "again"}, {"intValue": "7"}])
        attributes.append({"key": repeated, "value": value})
    if rng.random() < 0.4:  # the counting rules: sums and comparisons of small counts
        dialect = rng.choice(dialects.DIALECTS)
        for names in dialect.token_names.values():
            if names and rng.random() < 0.6:
                count = {"intValue": str(rng.choice([0, 100, 200, 300, 400, 600]))}
                attributes.append({"key": rng.choice(names), "value": count})
    if rng.random() < 0.15:  # Langfuse's JSON usage and cost (read per span in Python)
        buckets = [k for groups in dv.USAGE_JSON_BUCKETS.values() for g in groups for k in g]
        usage = {k: rng.choice([0, 10, 100, 300]) for k in rng.sample(buckets, 3)}
        cost = rng.choice([{"total": 0.5}, {"input": 0.1, "output": 0.25}, {}, {"total": None}])
        for key, value in (("usage_details", usage), ("cost_details", cost)):
            text = {"stringValue": json.dumps(value)}
            attributes.append({"key": f"langfuse.observation.{key}", "value": text})
    _add_priced(random.Random(number), attributes)  # its own draws: the rest stays as it was
    if rng.random() < 0.1:
        messages = [{"role": "user", "content": f"hi {number % 3}"}]
        attributes.append(
            {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(messages)}}
        )
    if rng.random() < 0.05:
        hashes = {"arrayValue": {"values": [{"stringValue": "00000000000000ab"}]}}
        attributes.append({"key": fingerprint.PREFIX_HASHES_ATTRIBUTE, "value": hashes})
    start = 1764201600000000000 + number * 1000
    span: dict[str, Any] = {
        "traceId": trace,
        "spanId": f"{number + 1:016x}",
        "name": rng.choice(["chat", "llm", "agent run", ""]),
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start if rng.random() < 0.1 else start + 5000),
        "attributes": attributes,
        "status": {"code": rng.choice([0, 1, 2])},
    }
    if parent is not None:
        span["parentSpanId"] = parent
    if rng.random() < 0.03:
        span["events"] = [
            {"name": "exception", "attributes": [{"key": "exception.type", "value": {"stringValue": "E"}}]}
        ]  # fmt: skip
    return span


_PRICED_SOURCES = [
    "gen_ai.usage.cost",
    "langfuse.observation.cost_details.total",
    "langfuse.observation.cost_details",
    "langfuse.observation.cost_detailsx",
    "operation.cost",
    "",
]


def _add_priced(rng: random.Random, attributes: list[dict[str, Any]]) -> None:
    """On some spans, what llmtrace's live processor writes on a span it priced (its status,
    its cost attributes over the source's, the source's cost kept), with odd values too: the
    lanes must agree on which markers and which reported cost such a span has."""
    if rng.random() >= 0.3:
        return
    status = rng.choice(["ok", "ok", "ok", "no_price", "OK"])
    added = [("llmtrace.price.status", {"stringValue": status})]
    if rng.random() < 0.7:
        added.append(("gen_ai.usage.cost", {"doubleValue": 0.25}))
    if rng.random() < 0.7:
        added.append(("langfuse.observation.cost_details", {"stringValue": '{"total": 0.25}'}))
    if rng.random() < 0.6:
        cost = rng.choice(
            [{"doubleValue": 0.5}, {"intValue": "2"}, {"stringValue": "0.5"}, {"doubleValue": -1}]
        )
        added.append(("llmtrace.reported_cost", cost))
    if rng.random() < 0.7:
        source = rng.choice(_PRICED_SOURCES)
        value = {"doubleValue": 1.5} if rng.random() < 0.1 else {"stringValue": source}
        added.append(("llmtrace.reported_cost_source", value))
    rng.shuffle(added)
    attributes.extend({"key": key, "value": value} for key, value in added)


def test_random_spans_import_the_same_records(tmp_path, monkeypatch) -> None:
    """Spans drawn at random from every attribute the columnar lane reads, with values of
    every kind (text of every case and spacing, counts, negatives, huge numbers, doubles,
    booleans, lists), under every dialect's scope: the columnar lane's expressions against
    the per-span path, branch by branch (the corpus alone leaves many branches unexercised)."""
    rng = random.Random(1515)
    scopes = [p + "x" for d in dialects.DIALECTS for p in d.scope_prefixes]
    scopes += ["", "other", None]
    lines, number = [], 0
    for _ in range(400):
        scope_spans = []
        for _ in range(rng.randint(1, 3)):
            trace = f"{rng.getrandbits(128) | 1:032x}"
            root = None
            spans = []
            for position in range(rng.randint(1, 6)):
                number += 1
                span = _random_span(rng, trace, number, root)
                if position == 0:
                    root = span["spanId"]
                spans.append(span)
            scope = rng.choice(scopes)
            scope_spans.append({"scope": {} if scope is None else {"name": scope}, "spans": spans})
        resource = [
            {"key": key, "value": _random_value(rng)}
            for key in rng.sample(["service.name", "deployment.environment.name", "x"], 2)
        ]
        request = {"resourceSpans": [{"resource": {"attributes": resource}, "scopeSpans": scope_spans}]}  # fmt: skip
        lines.append(json.dumps(request))
    path = tmp_path / "random.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert_same_import([path], monkeypatch)
    assert_same_import([path], monkeypatch, keep_content=True)


def plain_usage_from_json(attrs: Any, attribute: str) -> Any:
    """``dialect_values._usage_from_json`` as it was: every bucket summed, none skipped."""
    raw = attrs.get(attribute)
    if raw is None:
        return None
    details = dv._json_object(raw, attribute)
    got = {
        key: dv._bucket_sum(details, groups, attribute)
        for key, groups in dv.USAGE_JSON_BUCKETS.items()
    }
    cache = (got["cache_read"] or 0) + (got["cache_write"] or 0)
    if got["input_inclusive"] is not None:
        got["input"] = got["input_inclusive"]
    elif got["input"] is not None or cache:
        got["input"] = (got["input"] or 0) + cache
    if got["output"] is not None or got["reasoning"]:
        got["output"] = (got["output"] or 0) + (got["reasoning"] or 0)
    return {key: got[key] for key in dv._TOKEN_KEYS}


def test_json_usage_matches_the_plain_code() -> None:
    """Langfuse usage details: buckets with no key present are skipped, same counts and errors."""
    rng = random.Random(11)
    names = [k for groups in dv.USAGE_JSON_BUCKETS.values() for g in groups for k in g]
    names += ["other", "total"]
    for _ in range(3000):
        details = {k: rng.choice(_TOKEN_VALUES[:12]) for k in rng.sample(names, rng.randint(0, 5))}
        attrs = {"usage": json.dumps(details) if rng.random() < 0.8 else details}
        fast = _outcome(dv._usage_from_json, attrs, "usage")
        assert fast == _outcome(plain_usage_from_json, attrs, "usage"), details


def plain_json_object(value: Any, attribute: str) -> Any:
    """``dialect_values._json_object`` as it was (commit 514d29e): ``json.loads`` every text."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            raise dialects.SpanError(f"{attribute}: not valid JSON") from None
        if isinstance(parsed, dict):
            return parsed
    raise dialects.SpanError(f"{attribute}: expected a JSON object, got {type(value).__name__}")


def test_json_objects_read_as_json_loads_reads_them(monkeypatch) -> None:
    """JSON object attributes (cost and usage details, raw usage) are read by msgspec where it
    is loaded, else by json's scanner directly; everything as before: blanks around, trailing
    text, NaN, huge numbers, repeated keys (their order too), lone surrogates, nesting up to
    and past the recursion limit, and the bits of every cost the processor writes."""
    costs = '{"input":0.00043999999999999996,"output":4.8e-05,"total":0.0021999999999999997}'
    cases: list[Any] = [costs, costs + " ", " " + costs, costs + "\n", costs + "x", costs[:-1]]
    cases += ["{}", "{ }", '{"a":1,"a":2}', '{"b":1,"a":2,"b":3}', '{"a":NaN}', '{"a":1e999}']
    cases += ['{"a":Infinity}', '{"a":-0.0}', '{"a":-0}', '{"a":12345678901234567890123}']
    cases += ['{"a":"\\ud800"}', '{"a":"\\u00e9"}', '{"a":[1,{"b":null}]}', '{"a":1}{"b":2}']
    cases += ['{"a" 1}', "{", '{"a":tru}', "[1]", '{"a":1,}', "{'a':1}", '\ufeff{"a":1}']
    cases += ['{"a":"x\x00y"}', '{"a":1' + "0" * 400 + "}", '{"a":1' + "0" * 310 + ".0}"]
    # each parser stops at another depth near the recursion limit, which depends on the stack
    # the test runs on: every depth up to the limit from the shallowest stack
    cases += ['{"a":' * depth + "1" + "}" * depth for depth in (63, 64, 65, *range(700, 1001))]
    cases += ["", "1", "null", '"{}"', None, 5, {"a": 1}, ["{}"], b"{}", MappingProxyType({"b": 2})]
    rng = random.Random(4)
    for _ in range(3000):  # as the live processor writes them: repr of each float
        numbers = [rng.random() * 10 ** rng.randint(-9, 2) for _ in range(6)]
        cases.append("{" + ",".join(f'"k{i}":{n!r}' for i, n in enumerate(numbers)) + "}")
    assert dv.msgspec_decoder() is not None  # msgspec is loaded here: its path is compared

    def compare() -> None:
        for value in cases:
            for attribute in ("langfuse.observation.cost_details", "logfire.raw"):
                fast = _outcome(dv._json_object, value, attribute)
                assert fast == _outcome(plain_json_object, value, attribute), value

    compare()
    with monkeypatch.context() as patch:  # json's scanner, as where msgspec is not loaded
        patch.setattr(dv, "msgspec_decoder", lambda: None)
        compare()
    assert dv._json_object(costs, "x") == json.loads(costs)
    assert repr(dv._json_object('{"a":-0.0,"b":1.0,"c":1}', "x")) == "{'a': -0.0, 'b': 1.0, 'c': 1}"


def plain_normalize_service_tier(value: Any) -> Any:
    """``dialects.normalize_service_tier`` as it was (commit 514d29e)."""
    if value is None or not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    return dialects.SERVICE_TIER_VALUES.get(text, text)


class _Text(str):
    def __str__(self) -> str:
        return "Priority"


def test_service_tiers_normalize_as_before() -> None:
    values: list[Any] = [*dialects.SERVICE_TIER_VALUES, "", " ", " Default ", "FLEX", "scale"]
    values += [None, 0, 1, 2.5, float("nan"), True, False, ("default",), b"flex", _Text("auto")]
    values += ["\u0130", "Auto\n", 10**30]
    for value in values:
        fast = _outcome(dialects.normalize_service_tier, value)
        assert fast == _outcome(plain_normalize_service_tier, value), value
