"""The floor of a columnar OTLP import in this stack, against orjson's parse-only rate.

Why (issue 15, goal 1: an import at >= 0.5x the parse-only rate): before rewriting the dialect
mapping as Polars expressions over an attribute table, measure what that design cannot avoid,
on the same spans as bench_import.py: msgspec decoding each line into typed structs, one Python
loop flattening every span and attribute into column lists, the two Polars frames built from
those lists, and one pivot of a few attribute keys per span. The dialect mapping, content
fingerprints, pricing, the store write and start-up all come on top of this floor. Also timed,
where installed: pyarrow's native JSON reader with an explicit OTLP schema (a C++ path to
Arrow columns with no Python per span). Polars' own ``read_ndjson``/``json_decode`` were
measured at 5-10x orjson's CPU and are not repeated here.

Each stage is the minimum CPU seconds of ``--repeats`` runs in this process with the garbage
collector off (as bench_import_stages.py), so no stage pays for another's garbage. The baseline
is orjson's parse-only pass as bench_import.py measures it, the collector on (orjson's dicts
are what the collector scans: with it off the same pass costs about half, shown beside it).

Run by hand::

    python bench/bench_import_floor.py --spans 100000
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measure, Report, add_json_argument  # noqa: E402
from bench_import import write_dataset  # noqa: E402

RUN_ALL = {
    "name": "import-floor",
    "order": 22,
    "full": ["--spans", "100000"],
    "quick": ["--spans", "3000", "--repeats", "1"],
    "requires": ["orjson"],
}

# a few keys of the GenAI dialects, for the pivot step (one column per key, one row per span)
_PIVOT_KEYS = (
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.system",
    "gen_ai.provider.name",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.model_name",
)


def _best(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(minimum CPU seconds over ``repeats`` runs, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.process_time()
        result = work()
        best = min(best, time.process_time() - began)
    return best, result


def parse_only(lines: list[bytes]) -> int:
    from orjson import loads

    spans = 0
    for line in lines:
        for resource in loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                spans += len(scope["spans"])
    return spans


def flatten(requests: list[Any]) -> tuple[dict[str, list], dict[str, list]]:
    """Every span's fields and every attribute's (span, key, typed value) as column lists."""
    from msgspec import UNSET

    spans: dict[str, list] = {k: [] for k in ("trace", "span", "parent", "name", "start", "end")}
    spans["scope"] = []
    attrs: dict[str, list] = {k: [] for k in ("span", "key", "s", "i", "d")}
    trace, span_id, parent, name = spans["trace"], spans["span"], spans["parent"], spans["name"]
    start, end, scope_of = spans["start"], spans["end"], spans["scope"]
    a_span, a_key, a_s, a_i, a_d = (attrs[k] for k in ("span", "key", "s", "i", "d"))
    index = 0
    for request in requests:
        for resource in request.resourceSpans or ():
            for scope_spans in resource.scopeSpans or ():
                scope = scope_spans.scope.name if scope_spans.scope else None
                for span in scope_spans.spans or ():
                    trace.append(span.traceId)
                    span_id.append(span.spanId)
                    parent.append(span.parentSpanId)
                    name.append(span.name)
                    start.append(span.startTimeUnixNano)
                    end.append(span.endTimeUnixNano)
                    scope_of.append(scope)
                    for pair in span.attributes or ():
                        value = pair.value
                        a_span.append(index)
                        a_key.append(pair.key)
                        text = value.stringValue if value is not None else UNSET
                        if text is not UNSET:
                            a_s.append(text)
                            a_i.append(None)
                            a_d.append(None)
                        else:
                            a_s.append(None)
                            number = value.intValue if value is not None else UNSET
                            a_i.append(None if number is UNSET else str(number))
                            double = value.doubleValue if value is not None else UNSET
                            a_d.append(None if double is UNSET else double)
                    index += 1
    return spans, attrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("import-floor")

    import polars as pl

    from llmtrace.importers.otlp_fast import _DECODER

    with tempfile.TemporaryDirectory() as tmp:
        count, _ = write_dataset(Path(tmp), args.spans)
        lines = [line for path in sorted(Path(tmp).iterdir()) for line in path.open("rb")]
    repeats = args.repeats
    parse_s, parsed = _best(lambda: parse_only(lines), repeats)  # the collector on, as the issue's
    assert parsed == count, (parsed, count)
    gc.disable()
    stages: list[tuple[str, float]] = []
    with Measure() as whole:
        parse_off_s, _ = _best(lambda: parse_only(lines), repeats)
        decode_s, requests = _best(lambda: [_DECODER.decode(line) for line in lines], repeats)
        stages.append(("msgspec typed decode (`otlp_fast`)", decode_s))
        flatten_s, (span_cols, attr_cols) = _best(lambda: flatten(requests), repeats)
        stages.append(("one Python loop flattening spans and attributes into lists", flatten_s))
        attr_schema = {
            "span": pl.UInt32,
            "key": pl.String,
            "s": pl.String,
            "i": pl.String,
            "d": pl.Float64,
        }

        def frames() -> pl.DataFrame:
            pl.DataFrame(span_cols, strict=False)
            return pl.DataFrame(attr_cols, schema=attr_schema, strict=False)

        frames_s, attributes = _best(frames, repeats)
        stages.append(("the span and attribute frames built from the lists", frames_s))
        key = pl.col("key")
        pivot = (
            attributes.lazy()
            .filter(key.is_in(_PIVOT_KEYS))
            .group_by("span")
            .agg(pl.col("s").filter(key == k).first().alias(k) for k in _PIVOT_KEYS)
        )
        pivot_s, _ = _best(lambda: pivot.collect(), repeats)
        stages.append((f"a pivot of {len(_PIVOT_KEYS)} attribute keys per span (Polars)", pivot_s))
        native_s = _pyarrow(lines, repeats)
    gc.enable()
    per_span = 1e6 / count
    parse_us = parse_s * per_span
    floor_s = sum(s for _, s in stages)
    attributes_n = len(attr_cols["key"])
    size = f"{count:,} spans, {attributes_n:,} attributes, in one process (min of {repeats})"
    baseline = (
        f"orjson parse-only: {parse_us:.1f} µs per span "
        f"({parse_off_s * per_span:.1f} with the garbage collector off)"
    )
    for figure, seconds in stages:
        report.row(
            figure=f"import floor: {figure}",
            size=size,
            result=f"{seconds * per_span:.1f} µs per span",
            measure={"cpu_s": seconds, "wall_s": None, "peak_rss_mb": whole.peak_rss_mb},
            baseline=baseline,
        )
    report.row(
        figure="import floor: **total** before any dialect mapping, fingerprint, price or write",
        size=size,
        result=(
            f"{floor_s * per_span:.1f} µs per span: {parse_s / floor_s:.2f}x the parse-only "
            "rate (goal of the whole import: 0.5x)"
        ),
        measure={"cpu_s": floor_s, "wall_s": None, "peak_rss_mb": whole.peak_rss_mb},
        baseline=baseline,
    )
    if native_s is not None:
        report.row(
            figure="import floor: pyarrow `read_json`, explicit OTLP schema (one thread)",
            size=size,
            result=f"{native_s * per_span:.1f} µs per span: {parse_s / native_s:.2f}x parse-only",
            measure={"cpu_s": native_s, "wall_s": None, "peak_rss_mb": whole.peak_rss_mb},
            baseline=baseline,
        )
    for row in report.data["rows"]:
        print(f"{row['figure']}: {row['result']}")
    report.write(args.json)


def _pyarrow(lines: list[bytes], repeats: int) -> float | None:
    """CPU seconds of pyarrow's JSON reader over the same lines, or None without pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:
        return None
    value = pa.struct(
        [
            ("stringValue", pa.string()),
            ("intValue", pa.string()),
            ("doubleValue", pa.float64()),
            ("boolValue", pa.bool_()),
        ]
    )
    attributes = pa.list_(pa.struct([("key", pa.string()), ("value", value)]))
    span = pa.struct(
        [
            ("traceId", pa.string()),
            ("spanId", pa.string()),
            ("parentSpanId", pa.string()),
            ("name", pa.string()),
            ("kind", pa.int64()),
            ("startTimeUnixNano", pa.string()),
            ("endTimeUnixNano", pa.string()),
            ("attributes", attributes),
            ("status", pa.struct([("code", pa.int64()), ("message", pa.string())])),
        ]
    )
    scope_spans = pa.struct(
        [
            ("scope", pa.struct([("name", pa.string()), ("version", pa.string())])),
            ("spans", pa.list_(span)),
        ]
    )
    resource_spans = pa.struct(
        [
            ("resource", pa.struct([("attributes", attributes)])),
            ("scopeSpans", pa.list_(scope_spans)),
        ]
    )
    schema = pa.schema([("resourceSpans", pa.list_(resource_spans))])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    data = pa.py_buffer(b"".join(lines))
    read = pj.ReadOptions(use_threads=False, block_size=1 << 24)
    seconds, _ = _best(
        lambda: pj.read_json(pa.BufferReader(data), parse_options=options, read_options=read),
        repeats,
    )
    return seconds


if __name__ == "__main__":
    main()
