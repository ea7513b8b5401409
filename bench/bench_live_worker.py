"""CPU time of llmtrace's live worker per LLM call, measured alone on real spans.

    python bench/bench_live_worker.py [--calls 300] [--passes 10] [--repeats 7] [--profile]

``bench_overhead.py`` measures the whole process (openai client, official instrumentation,
llmtrace), where one call costs ~2 ms of CPU and a loaded machine moves that by more than the
50 us being looked for. This script isolates the part llmtrace adds off the app's thread: it
runs ``--calls`` real chat completions (the real ``openai`` client against the loopback
server, the official instrumentation, ``llmtrace.init()`` exactly as in ``bench_overhead.py``),
keeps the worker's jobs and the completion hook's inputs, then replays those jobs through the
processor (fingerprints, span-to-call mapping, pricing, cost attributes, the exported copy,
metrics, actions and the hand-off to the batch span processor) ``--passes`` times per repeat,
and reports the process CPU time per job: min and median of ``--repeats`` repeats.
``--profile`` adds a cProfile listing (its own overhead inflates small functions: use it for
where, not how much). ``--parts`` times each step of the worker alone on the same calls
(thread CPU per call, min and median of 5 passes): fingerprints, span -> call mapping, pricing,
cost attributes, the exported copy, metrics, the twin lookup and the batch processor's
``on_end``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_overhead  # noqa: E402 - the same workload and set-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--parts", action="store_true")
    args = parser.parse_args()

    import openai
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmtrace.otel.setup import init

    server, url = bench_overhead.start_server()
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-bench", max_retries=0)
        handle = init(
            exporters="none",
            span_exporters=[bench_overhead.NoopExporter()],
            metric_readers=[InMemoryMetricReader()],
            instrument="openai",
            set_global=False,
        )
        assert handle is not None
        processor = handle.processor
        processor._pricer.get()
        jobs: list[Any] = []
        prompts: dict[int, Any] = {}
        stash = processor.stash_prompt
        run = processor._run

        def keep_prompt(span_id: int, prompt: Any) -> bool:
            prompts[span_id] = prompt
            return stash(span_id, prompt)

        def keep_job(item: Any) -> None:
            jobs.append(item)
            run(item)

        processor._background = False  # jobs run inline while they are captured
        handle.hook.sink = keep_prompt
        processor._run = keep_job
        bench_overhead.time_calls(client, args.calls)
        processor._run = run

        def replay() -> None:
            for _ in range(args.passes):
                # a replayed span would otherwise find its own first pass as a priced twin and
                # be deferred unpriced (no pricing, no metrics): measure the priced path
                processor._recent.clear()
                priced = processor.calls_priced
                for job in jobs:
                    prompt = prompts.get(job.span_id)
                    if prompt is not None:
                        processor._prompts[job.span_id] = prompt
                    run(job)
                assert processor.calls_priced - priced == len(jobs), "replayed calls not priced"

        replay()  # warm
        per_job = []
        for _ in range(args.repeats):
            start = time.process_time()
            replay()
            per_job.append((time.process_time() - start) / (args.passes * len(jobs)))
        print(
            f"{len(jobs)} jobs x {args.passes} passes x {args.repeats} repeats: worker CPU per "
            f"call min {min(per_job) * 1e6:.1f} us, median {statistics.median(per_job) * 1e6:.1f} us"
        )
        if args.parts:
            parts(processor, handle.metrics, jobs, prompts)
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            replay()
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        handle.shutdown()
    finally:
        server.terminate()
        server.wait()


class _batch:  # noqa: N801 - reads as a marker in the table of steps
    """A step that takes all the calls at once (timed per call all the same)."""

    def __init__(self, run: Any) -> None:
        self.run = run


def parts(processor: Any, metrics: Any, jobs: list[Any], prompts: dict[int, Any]) -> None:
    """Thread CPU per call of each step of the worker, each timed alone over the jobs."""
    from llmtrace import dialects, twins
    from llmtrace.otel import hook, spans
    from llmtrace.otel.calls import CallMapper

    calls = []
    for job in jobs:
        attrs = spans.plain_attributes(job.span)
        attrs.update(hook.prompt_attributes(prompts[job.span_id]))
        mapping = spans.span_mapping(job.span, attrs)
        call = dialects.span_to_call(mapping)
        call.update(processor._pricer(call))
        calls.append((job, attrs, mapping, call))
    recent = twins.RecentCalls()
    for _, _, _, call in calls:
        recent.remember({**call, "span_id": f"other-{call['span_id']}"})
    scope = "opentelemetry.instrumentation.genai.openai"
    downstream = processor._downstream[0]
    mapper = CallMapper()
    # the worker maps a span before the fingerprint attributes join it (the record takes the
    # fields as computed); with them, the hex lists make every span's static part unhashable
    bare = {id(c): spans.span_mapping(c[0].span) for c in calls}
    unseen = {id(c): {**c[3], "response_id": f"unseen-{n}"} for n, c in enumerate(calls)}
    steps = {
        "fingerprints (hook input -> attributes)": lambda c: hook.prompt_attributes(
            prompts[c[0].span_id]
        ),
        "span -> call (dialects.span_to_call)": lambda c: dialects.span_to_call(c[2]),
        # what the worker runs: span_to_call's record made once per span shape, then copied
        "span -> call (CallMapper, per span shape)": lambda c: mapper(bare[id(c)]),
        # what the worker runs since: the known shape's record straight from the SDK span
        "span -> call (CallMapper.from_span)": lambda c: mapper.from_span(
            c[0].span, spans.plain_attributes(c[0].span)
        ),
        "price (pricer, cached rates)": lambda c: processor._pricer(c[3]),
        "cost attributes": lambda c: spans.cost_attributes(c[3]),
        # what the worker runs: the price as a tuple, its attributes from that tuple
        "price + cost attributes (tuple)": lambda c: spans.cost_attributes_of(
            processor._pricer.values(c[3])
        ),
        "exported copy (with_attributes)": lambda c: spans.with_attributes(
            c[0].span, {"llmtrace.cost.total": 0.1}, dict(c[1])
        ),
        "metrics per call (CostMetrics.record)": lambda c: metrics.record(c[3], scope),
        "metrics per action (record_action)": lambda c: metrics.record_action(c[3], 0.01),
        # what the worker does: the batch's calls and actions in one go (timed per call)
        "metrics per call, batch (record_many)": _batch(
            lambda cs: metrics.record_many([(c[3], scope) for c in cs])
        ),
        "metrics per action, batch (record_actions)": _batch(
            lambda cs: metrics.record_actions([(c[3], 0.01) for c in cs])
        ),
        # every call finds its own twin here (its response id remembered under another span)
        "twin lookup (64 recent calls)": lambda c: recent._find(c[3]),
        # the worker's usual case: a response id not seen before, no twin
        "twin lookup, no twin": lambda c: recent._find(unseen[id(c)]),
        "batch processor on_end": lambda c: downstream.on_end(c[0].span),
    }
    print("worker steps, each alone (thread CPU per call, min / median of 5 passes):")
    for name, step in steps.items():
        times = []
        for _ in range(5):
            start = time.thread_time()
            if isinstance(step, _batch):
                step.run(calls)
            else:
                for call in calls:
                    step(call)
            times.append((time.thread_time() - start) / len(calls))
        print(f"  {name:42s} {min(times) * 1e6:6.1f} / {statistics.median(times) * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
