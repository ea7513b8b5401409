"""Benchmark ``import_otlp``: spans per second on synthetic OTLP JSON lines.

Writes N spans (100 per line, one ExportTraceServiceRequest per line, as the Collector file
exporter does) to a temporary directory and times ``import_otlp`` over it, reporting the median
of several runs. The mix imitates real traces: every trace has an HTTP root and an agent span
(not LLM calls), then LLM spans in the dialects llmtrace reads (OTel GenAI util-genai,
OpenLLMetry, OpenInference, OpenLIT on Anthropic, Logfire, Langfuse), a third of them carrying
message content as the content-on-by-default instrumentations do.

Run by hand::

    python bench/bench_import.py --spans 200000 --runs 3
    python bench/bench_import.py --spans 200000 --parser orjson  # orjson (if installed) for json

``--command`` measures the whole ``llmtrace import otlp`` instead (streaming read, pricing and
appending to a new store, batch by batch), once per size, in a child process whose peak RSS is
read from ``wait4``; inputs and stores go under ``--tmp`` and are deleted after each size::

    python bench/bench_import.py --command --sizes 1000000 10000000 --tmp /tmp
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPANS_PER_LINE = 100
LINES_PER_FILE = 200
START_NS = 1_764_201_600_000_000_000  # 2025-11-27T00:00:00Z

SYSTEM_PROMPT = (
    "You are a support assistant for an online shop. Answer briefly, cite the order number, "
    "never promise refunds, and escalate to a human when the customer is angry. " * 3
)


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": value}


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items()]


def _messages(rng: random.Random, turns: int) -> list[dict[str, str]]:
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"turn {i} " * rng.randint(5, 40),
        }
        for i in range(turns)
    ]


def _llm_attributes(rng: random.Random, dialect: str, content: bool) -> tuple[str, dict]:
    """(scope name, attributes) of one LLM span as ``dialect`` writes it."""
    inp, out = rng.randint(200, 4000), rng.randint(10, 800)
    cached = rng.choice([0, 0, 1024, 2048]) if inp > 2048 else 0
    model = rng.choice(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"])
    common = {"gen_ai.request.model": model, "gen_ai.response.model": model}
    history = _messages(rng, rng.randint(1, 6))
    if dialect == "otel-genai":
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            **common,
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.response.finish_reasons": ["stop"],
            "server.address": "api.openai.com",
            "server.port": 443,
        }
        if cached:
            attrs["gen_ai.usage.cache_read.input_tokens"] = cached
        if content:
            attrs["gen_ai.system_instructions"] = json.dumps(
                [{"type": "text", "content": SYSTEM_PROMPT}]
            )
            attrs["gen_ai.input.messages"] = json.dumps(
                [
                    {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                    for m in history
                ]
            )
        return "opentelemetry.instrumentation.genai.openai", attrs
    if dialect == "openllmetry":
        attrs = {
            "gen_ai.provider.name": "openai",
            "llm.request.type": "chat",
            **common,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.total_tokens": inp + out,
            "gen_ai.usage.cache_read.input_tokens": cached,
        }
        if content:
            attrs["gen_ai.prompt.0.role"] = "system"
            attrs["gen_ai.prompt.0.content"] = SYSTEM_PROMPT
            for i, m in enumerate(history, start=1):
                attrs[f"gen_ai.prompt.{i}.role"] = m["role"]
                attrs[f"gen_ai.prompt.{i}.content"] = m["content"]
            attrs["gen_ai.completion.0.role"] = "assistant"
            attrs["gen_ai.completion.0.content"] = "ok " * 20
        return "opentelemetry.instrumentation.openai.v1", attrs
    if dialect == "openinference":
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": model,
            "llm.token_count.prompt": inp,
            "llm.token_count.completion": out,
            "llm.token_count.total": inp + out,
            "llm.token_count.prompt_details.cache_read": cached,
        }
        if content:
            for i, m in enumerate(history):
                attrs[f"llm.input_messages.{i}.message.role"] = m["role"]
                attrs[f"llm.input_messages.{i}.message.content"] = m["content"]
        return "openinference.instrumentation.openai", attrs
    if dialect == "openlit":
        write = rng.choice([0, 1163])
        return "openlit.otel.tracing", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            **common,
            "gen_ai.usage.input_tokens": rng.randint(4, 50),
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.usage.cache_creation.input_tokens": write,
            "gen_ai.usage.cost": 0.0123,
        }
    if dialect == "logfire":
        return "pydantic-ai", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.provider.name": "openai",
            **common,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.details.reasoning_tokens": min(out, 64),
            "operation.cost": 0.0042,
        }
    usage = {"input": inp - cached, "output": out, "input_cached_tokens": cached}
    return "langfuse-sdk", {
        "langfuse.observation.type": "generation",
        "langfuse.observation.model.name": model,
        "langfuse.observation.usage_details": json.dumps(usage),
        "langfuse.observation.cost_details": json.dumps({"total": 0.001}),
        "langfuse.observation.prompt.name": "support-answer",
        "langfuse.observation.prompt.version": 3,
    }


DIALECT_MIX = ("otel-genai", "openllmetry", "openinference", "openlit", "logfire", "langfuse")


def _span(trace: str, span: str, parent: str | None, name: str, start: int, attrs: dict) -> dict:
    return {
        "traceId": trace,
        "spanId": span,
        "parentSpanId": parent or "",
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 900_000_000),
        "attributes": _attributes(attrs),
        "status": {},
    }


def _trace(rng: random.Random, number: int) -> list[tuple[str, dict]]:
    """(scope, span) pairs of one trace: HTTP root, agent span, 2-6 LLM calls."""
    trace = f"{rng.getrandbits(128):032x}"
    root, agent = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"
    start = START_NS + number * 1_000_000_000
    spans = [
        ("web", _span(trace, root, None, "POST /chat", start, {"http.request.method": "POST"})),
        (
            "agent",
            _span(
                trace,
                agent,
                root,
                "invoke_agent support",
                start + 1000,
                {"gen_ai.operation.name": "invoke_agent", "llmtrace.action": "answer-ticket"},
            ),
        ),
    ]
    for call in range(rng.randint(2, 6)):
        dialect = rng.choice(DIALECT_MIX)
        scope, attrs = _llm_attributes(rng, dialect, content=rng.random() < 1 / 3)
        span_id = f"{rng.getrandbits(64):016x}"
        spans.append((scope, _span(trace, span_id, agent, "chat", start + 2000 + call, attrs)))
    return spans


SPANS_PER_FILE = SPANS_PER_LINE * LINES_PER_FILE


def _request(batch: list[tuple[str, dict]]) -> str:
    """One ExportTraceServiceRequest line holding ``batch`` grouped by scope."""
    by_scope: dict[str, list[dict]] = {}
    for scope, span in batch:
        by_scope.setdefault(scope, []).append(span)
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes({"service.name": "support-bot"})},
                "scopeSpans": [{"scope": {"name": s}, "spans": v} for s, v in by_scope.items()],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")) + "\n"


def _write_file(job: tuple[Path, int, int, int, bool]) -> tuple[int, int]:
    """Write file number ``index`` of a dataset: ``spans`` spans of whole traces, seeded by
    (seed, index) and timed from trace number ``index * SPANS_PER_FILE`` on, so files can be
    written in any order, by any process, and the dataset is the same. (spans, bytes)."""
    directory, index, spans, seed, compress = job
    rng = random.Random(seed * 1_000_003 + index)
    first_trace = index * SPANS_PER_FILE  # a trace has >= 4 spans: numbers never collide
    pending: list[tuple[str, dict]] = []
    trace = 0
    while len(pending) < spans:
        pending.extend(_trace(rng, first_trace + trace))
        trace += 1
    pending = pending[:spans]
    text = "".join(
        _request(pending[at : at + SPANS_PER_LINE]) for at in range(0, spans, SPANS_PER_LINE)
    )
    data = text.encode()
    if compress:  # level 1: ~0.09 of the size at ~400 MB/s; reading it costs the importer little
        path = directory / f"traces-{index:05d}.jsonl.gz"
        path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    else:
        path = directory / f"traces-{index:05d}.jsonl"
        path.write_bytes(data)
    return spans, path.stat().st_size


def write_dataset(
    directory: Path, spans: int, seed: int = 7, *, jobs: int = 1, compress: bool = False
) -> tuple[int, int]:
    """Write ``spans`` spans as OTLP JSON lines (``.jsonl.gz`` with ``compress``) in files of
    ``SPANS_PER_FILE``, using ``jobs`` processes; returns (spans written, bytes written).
    The same arguments give the same files whatever ``jobs`` is."""
    sizes = [SPANS_PER_FILE] * (spans // SPANS_PER_FILE)
    if spans % SPANS_PER_FILE:
        sizes.append(spans % SPANS_PER_FILE)
    work = [(directory, i, n, seed, compress) for i, n in enumerate(sizes)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.imap_unordered(_write_file, work, chunksize=4)
            written = [r for r in results]
    else:
        written = [_write_file(job) for job in work]
    return sum(n for n, _ in written), sum(b for _, b in written)


def run_command(directory: Path, store: Path, batch_spans: int | None) -> dict[str, Any]:
    """Run ``llmtrace import otlp`` on ``directory`` in a child: wall and CPU seconds, peak RSS
    (GB, from ``wait4``) and the first lines it printed."""
    args = [sys.executable, "-m", "llmtrace.cli", "import", "otlp", str(directory)]
    args += ["--store", str(store)]
    if batch_spans:
        args += ["--batch-spans", str(batch_spans)]
    began = time.perf_counter()
    env = {**os.environ, "COLUMNS": "240"}  # one summary line each, not wrapped
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = child.stdout.read().decode() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"import failed ({status}): {out}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_gb": usage.ru_maxrss / 1024**2,  # ru_maxrss is in KiB on Linux
        "summary": " / ".join(line.strip() for line in out.splitlines()[:2]),
    }


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def command_sizes(
    sizes: list[int], tmp: Path, batch_spans: int | None, *, jobs: int, compress: bool
) -> None:
    """One import per size, each on fresh input and a fresh store, deleted afterwards."""
    kind = "JSON lines, gzip level 1" if compress else "JSON lines"
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="lt-import-", dir=tmp))
        try:
            began = time.perf_counter()
            (work / "in").mkdir()
            count, nbytes = write_dataset(work / "in", size, jobs=jobs, compress=compress)
            generated = time.perf_counter() - began
            load = os.getloadavg()[0]
            run = run_command(work / "in", work / "store", batch_spans)
            wall = run["wall"]
            print(
                f"{count:,} spans ({nbytes / 1e9:.2f} GB {kind}, generated in {generated:.0f} s): "
                f"import {wall:.1f} s -> {count / wall:,.0f} spans/s (CPU {run['cpu']:.0f} s -> "
                f"{count / run['cpu']:,.0f} spans per CPU-second), peak RSS {run['rss_gb']:.2f} GB, "
                f"store {_tree_bytes(work / 'store') / 1e9:.2f} GB, load before {load:.1f} "
                f"[{run['summary']}]",
                flush=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--parser", choices=("default", "orjson"), default="default")
    parser.add_argument("--command", action="store_true", help="time `llmtrace import otlp`")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--batch-spans", type=int, default=None, help="the command's option")
    parser.add_argument("--jobs", type=int, default=1, help="processes writing the input")
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz (level 1) inputs")
    args = parser.parse_args()
    if args.command:
        command_sizes(args.sizes, args.tmp, args.batch_spans, jobs=args.jobs, compress=args.gzip)
        return

    from llmtrace.importers import otlp

    if args.parser == "orjson":
        import orjson  # not a dependency: only to re-measure the choice of parser

        otlp._loads = orjson.loads
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        count, size = write_dataset(directory, args.spans, jobs=args.jobs, compress=args.gzip)
        times, cpu_times = [], []
        calls = 0
        for _ in range(args.runs):
            began, began_cpu = time.perf_counter(), time.process_time()
            result = otlp.import_otlp([directory], accuracy_names=())
            times.append(time.perf_counter() - began)
            cpu_times.append(time.process_time() - began_cpu)
            calls = result.calls.height
            assert not result.problems, result.problems[:3]
        median, cpu = statistics.median(times), statistics.median(cpu_times)
        print(
            f"{count:,} spans ({size / 1e6:.0f} MB, {calls:,} calls), parser "
            f"{otlp._loads.__module__}: median {median:.2f} s wall of {args.runs} -> "
            f"{count / median:,.0f} spans/s (CPU {cpu:.2f} s -> {count / cpu:,.0f} spans per "
            f"CPU-second; runs: {', '.join(f'{t:.2f}' for t in times)})"
        )


if __name__ == "__main__":
    main()
