"""Per-call overhead of llmtrace over the bare official OpenTelemetry GenAI instrumentation.

    python bench/bench_overhead.py [--rounds 12] [--calls 150]

The real ``openai`` client calls a loopback server (tests/live/loopback.py, run in its own
process so it does not compete for this process's GIL) with gpt-4o chat completions that report
cached tokens. Three configurations, interleaved round by round so machine noise hits them
alike:

* ``none``      - no instrumentation (for scale: what one loopback call costs);
* ``official``  - opentelemetry-instrumentation-genai-openai + BatchSpanProcessor + a no-op
                  exporter, with a MeterProvider (the baseline the target is measured against);
* ``llmtrace``  - ``llmtrace.init()`` with the same no-op exporter: cost span processor, price
                  lookup, enriched span copy, completion hook (fingerprints), cost and token
                  metrics.

Reported: the median per-call wall time of each configuration, the difference of those medians,
and the median (and interquartile range) over rounds of the paired per-round difference
llmtrace - official (target: <= 50 us). OpenLIT cannot share this environment
(it pins openai<3); measure it in its own virtualenv with the same script's ``none`` numbers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant for an online shop."},
    {"role": "user", "content": "Which plan includes priority support?"},
]


class NoopExporter:
    """A span exporter that drops everything (the SDK's interface, nothing else)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "live" / "loopback.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def setup_none() -> Callable[[], None]:
    return lambda: None


def setup_official() -> Callable[[], None]:
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    OpenAIInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def teardown() -> None:
        OpenAIInstrumentor().uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return teardown


def setup_llmtrace() -> Callable[[], None]:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmtrace.otel.setup import init

    handle = init(
        exporters="none",
        span_exporters=[NoopExporter()],
        metric_readers=[InMemoryMetricReader()],
        instrument="openai",
        set_global=False,
    )
    assert handle is not None and handle.instrumented == ["openai"]
    handle.processor._pricer.get()  # price data loaded before timing, as init's thread does
    return handle.shutdown


CONFIGS: dict[str, Callable[[], Callable[[], None]]] = {
    "none": setup_none,
    "official": setup_official,
    "llmtrace": setup_llmtrace,
}


def time_calls(client: Any, calls: int) -> list[float]:
    """Seconds taken by each of ``calls`` chat completions (per-call, so medians shrug off
    the spikes other processes cause on a shared machine)."""
    create = client.chat.completions.create
    clock = time.perf_counter
    times = []
    for _ in range(calls):
        start = clock()
        create(model="gpt-4o", messages=MESSAGES)
        times.append(clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    import openai

    process, url = start_server()
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-bench", max_retries=0)
        per_round: dict[str, list[float]] = {name: [] for name in CONFIGS}
        per_call: dict[str, list[float]] = {name: [] for name in CONFIGS}
        for _ in range(args.rounds):
            for name, setup in CONFIGS.items():
                teardown = setup()
                try:
                    time_calls(client, args.warmup)
                    times = time_calls(client, args.calls)
                    per_call[name].extend(times)
                    per_round[name].append(statistics.median(times))
                finally:
                    teardown()
        from llmtrace.otel import error_counts

        assert error_counts() == {}, error_counts()
    finally:
        process.terminate()
        process.wait()

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:8.1f} us"

    print(f"{args.rounds} interleaved rounds x {args.calls} calls (after {args.warmup} warm-up)")
    for name, values in per_call.items():
        print(f"  {name:9s} median {us(statistics.median(values))} per call")
    for a, b in (("official", "none"), ("llmtrace", "official")):
        diffs = [x - y for x, y in zip(per_round[a], per_round[b], strict=True)]
        whole = statistics.median(per_call[a]) - statistics.median(per_call[b])
        quartiles = statistics.quantiles(diffs, n=4)
        print(
            f"  {a} - {b}: {us(whole)} (difference of per-call medians); per-round paired "
            f"median {us(statistics.median(diffs))}, IQR {us(quartiles[0])} .. {us(quartiles[2])}"
        )


if __name__ == "__main__":
    main()
