"""Where ``import otlp`` spends its CPU: each stage of the importer timed alone, per span.

Why (issue 15): the import is measured whole by bench_import.py; this says which stage the
remaining CPU is in, so the next attempt starts from figures rather than a profile's guesses.
Stages, on bench_import's generated JSON lines, in this process (no start-up, no pricing or
storing; the minimum of ``--repeats`` runs of each, the GC off as the importer has it):

* the orjson parse-only baseline (every line parsed, results kept);
* msgspec's typed decode (``otlp_fast``), then building the span mappings from the structs;
* mapping the LLM spans to call records (``dialects.map_span_row``), and within it the content
  fingerprints (``fingerprint.content_fields``);
* collecting every span (decode, build, tree rows, detection, ``map_span_row``: the reader's
  whole per-span work) and the rest of it (what collecting adds to the three above);
* the batch step in Polars (``_Stream.step``: call frame, twin merging, actions, agents,
  scores), and within it building the call frame from the call rows.

    python bench/bench_import_stages.py --spans 100000
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
    "name": "import-stages",
    "order": 21,
    "full": ["--spans", "100000"],
    "quick": ["--spans", "3000", "--repeats", "1"],
    "requires": ["orjson"],
}


def _best(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(minimum CPU seconds over ``repeats`` runs, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.process_time()
        result = work()
        best = min(best, time.process_time() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("import-stages")

    import orjson

    from llmtrace import fingerprint
    from llmtrace.accuracy import AccuracyConfig
    from llmtrace.dialects import is_llm_span, map_span_row
    from llmtrace.importers.otlp import _calls_frame, _Collector, _Stream
    from llmtrace.importers.otlp_fast import _DECODER, _spans, decode_line

    with tempfile.TemporaryDirectory() as tmp:
        count, _ = write_dataset(Path(tmp), args.spans)
        lines = [line for path in sorted(Path(tmp).iterdir()) for line in path.open("rb")]
    gc.disable()
    repeats = args.repeats
    stages: list[tuple[str, float]] = []
    with Measure() as whole:
        parse, _ = _best(lambda: [orjson.loads(line) for line in lines], repeats)
        decode, requests = _best(lambda: [_DECODER.decode(line) for line in lines], repeats)
        build, pairs = _best(lambda: [p for r in requests for p in _spans(r)], repeats)
        spans = [span for _, span in pairs]
        llm = [s for s in spans if is_llm_span(s["attributes"], s["name"], s["scope"])]
        mapping, _ = _best(lambda: [map_span_row(s) for s in llm], repeats)
        content, _ = _best(lambda: [fingerprint.content_fields(s["attributes"]) for s in llm], 1)

        def collect() -> _Collector:
            sink = _Collector(False)
            for number, line in enumerate(lines, start=1):
                sink.add_decoded(decode_line(line) or [], "bench", number)
            return sink

        collecting, sink = _best(collect, repeats)
        frame, _ = _best(lambda: _calls_frame(sink.calls, "otlp"), repeats)
        accuracy = AccuracyConfig.resolve((), None)
        step, result = _best(
            lambda: _Stream(accuracy, "otlp", 1_000_000).step(sink, final=True), repeats
        )
    gc.enable()
    total = collecting + step
    stages = [
        ("msgspec typed decode (`otlp_fast`)", decode),
        ("span mappings built from the structs", build),
        ("`map_span_row`: dialect mapping of the LLM spans, content included", mapping),
        ("↳ of which content fingerprints (`content_fields`)", content),
        (
            "rest of collecting (tree rows, detection, agent and tool)",
            collecting - decode - build - mapping,
        ),
        ("batch step in Polars (`_Stream.step`)", step),
        ("↳ of which the call frame from the call rows", frame),
        ("**total** (collecting + batch step)", total),
    ]
    baseline = f"orjson parse-only: {parse * 1e6 / count:.1f} µs per span; total ÷ parse = {total / parse:.1f}"
    size = (
        f"{count:,} spans, {len(llm):,} LLM spans, {result.calls.height:,} calls, in one "
        "process (peak RSS: the bench's, every span held)"
    )
    for name, seconds in stages:
        report.row(
            figure=f"import stage: {name}",
            size=size,
            result=f"{seconds * 1e6 / count:.1f} µs per span ({seconds / total:.0%} of total)",
            measure={
                "cpu_s": round(seconds, 3),
                "wall_s": None,
                "peak_rss_mb": round(whole.peak_rss_mb, 1),
                "load_average_1m": whole.load,
            },
            baseline=baseline,
        )
        print(f"{name:70s} {seconds * 1e6 / count:6.1f} µs/span  {seconds / total:4.0%}")
    print(baseline)
    report.write(args.json)


if __name__ == "__main__":
    main()
