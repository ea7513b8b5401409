"""Benchmark: vectorized ``price_calls`` against genai-prices' per-row ``calc_price`` loop.

Run by hand (not part of the tests)::

    python bench/bench_pricing.py                 # 1M and 10M rows
    python bench/bench_pricing.py --rows 1000000  # one size
    python bench/bench_pricing.py --rows 20000 --sample 300 --json out.json   # run_all --quick

Builds N synthetic call records (numpy, seeded): ~50 real models across providers, start times
spread over 90 days (so dated prices and deepseek's time-of-day bands are hit), cache reads and
writes (some 1-hour), reasoning, and ~10% of calls above 200k input tokens (tiers). Times
``price_calls`` (median of 3) and, in the same run, the ``calc_price`` loop on a 5,000-row sample;
prints rows/s for both and their ratio, and checks that both give the same totals. CPU seconds
(all threads), peak RSS and the load average come from ``_measure`` and go into the JSON result
(``--json``) that ``run_all.py`` turns into bench/README.md's table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

import genai_prices
import numpy as np
import polars as pl
from genai_prices import Usage, calc_price

from llmtrace.pricing import PriceBook, price_calls

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measure, Report, add_json_argument  # noqa: E402

# how run_all.py runs this script (read with ast.literal_eval, never imported by it)
RUN_ALL = {
    "name": "pricing",
    "order": 10,
    "full": ["--rows", "1000000", "10000000"],
    "quick": ["--rows", "20000", "--sample", "300", "--repeats", "1"],
}

# (provider as recorded, model as recorded): genai-prices ids, plus record spellings that
# exercise normalisation (aws.bedrock, gcp.vertex_ai, provider/ prefixes).
MODELS: list[tuple[str, str]] = [
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-sonnet-4-5-20250929"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-sonnet-4"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o-2024-05-13"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("openai", "o1"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"),
    ("openai", "gpt-5.2"),
    ("openai", "gpt-5.6-sol"),
    ("openai", "openai/gpt-4o"),
    ("azure", "gpt-4o"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.0-flash"),
    ("google", "claude-sonnet-4-5@20250929"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("deepseek", "deepseek-v4-flash"),
    ("deepseek", "deepseek-v4-pro"),
    ("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("aws", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("x-ai", "grok-4"),
    ("x-ai", "grok-3"),
    ("x-ai", "grok-3-mini"),
    ("mistral", "mistral-large-latest"),
    ("mistral", "mistral-small-latest"),
    ("mistral", "codestral-latest"),
    ("groq", "llama-3.3-70b-versatile"),
    ("groq", "llama-3.1-8b-instant"),
    ("perplexity", "sonar"),
    ("perplexity", "sonar-pro"),
    ("perplexity", "sonar-deep-research"),
    ("openrouter", "qwen/qwen3-coder-flash"),
    ("openrouter", "perplexity/sonar-deep-research"),
    ("openrouter", "anthropic/claude-sonnet-4.5"),
    ("openrouter", "openai/gpt-4o"),
    ("zai", "glm-5.3-flash"),
    ("cohere", "command-r-plus"),
    ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
    ("fireworks", "accounts/fireworks/models/deepseek-v3-0324"),
    ("moonshotai", "kimi-k2"),
]

START = datetime(2026, 8, 1, tzinfo=UTC)
SPAN_US = 90 * 86_400 * 1_000_000
TOKENS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def usable_models(book: PriceBook, *, reference: bool = False) -> list[tuple[str, str]]:
    """The listed models the book prices (the list must survive data updates); with
    ``reference``, only those genai-prices' ``calc_price`` also finds under the same spelling
    (it has no ``provider/`` prefix stripping), for the loop and the equality check."""
    keep = []
    for provider, model in MODELS:
        if book.rates_for(provider, model, START) is None:
            continue
        if reference:
            try:
                calc_price(Usage(input_tokens=1), model, provider_id=provider)
            except LookupError:
                continue
        keep.append((provider, model))
    return keep


def synthetic_calls(n: int, models: list[tuple[str, str]], seed: int = 42) -> pl.DataFrame:
    """``n`` call records with realistic token mixes; everything drawn from one seeded RNG."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(models), n)
    big = rng.random(n) < 0.10
    inp = np.where(big, rng.integers(200_001, 400_000, n), rng.integers(50, 40_000, n))
    cached = rng.random(n) < 0.5
    cr = (inp * rng.uniform(0.0, 0.9, n) * cached).astype(np.int64)
    writes = rng.random(n) < 0.2
    cw = ((inp - cr) * rng.uniform(0.0, 0.5, n) * writes).astype(np.int64)
    cw1h = (cw * (rng.random(n) < 0.3)).astype(np.int64)
    out = rng.integers(0, 8_000, n)
    rs = (out * rng.uniform(0.0, 0.9, n) * (rng.random(n) < 0.3)).astype(np.int64)
    start_us = int(START.timestamp() * 1_000_000) + rng.integers(0, SPAN_US, n)
    providers = pl.Series([p for p, _ in models], dtype=pl.String)
    names = pl.Series([m for _, m in models], dtype=pl.String)
    index = pl.Series(which, dtype=pl.UInt32)
    return pl.DataFrame(
        {
            "trace_id": pl.Series(np.arange(n)).cast(pl.String),
            "span_id": pl.Series(np.zeros(n, dtype=np.int64)).cast(pl.String),
            "provider": providers.gather(index),
            "model": names.gather(index),
            "start_time": pl.Series(start_us).cast(pl.Datetime("us", "UTC")),
            "input_tokens": inp,
            "cache_read_tokens": cr,
            "cache_write_tokens": cw,
            "cache_write_1h_tokens": cw1h,
            "output_tokens": out,
            "reasoning_tokens": rs,
        }
    )


def loop_prices(sample: pl.DataFrame) -> list[float]:
    """The reference: genai-prices' ``calc_price`` once per row."""
    totals = []
    for row in sample.iter_rows(named=True):
        usage = Usage(
            input_tokens=row["input_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            cache_write_1h_tokens=row["cache_write_1h_tokens"],
            output_tokens=row["output_tokens"],
            output_reasoning_tokens=row["reasoning_tokens"],
        )
        result = calc_price(
            usage,
            row["model"],
            provider_id=row["provider"],
            genai_request_timestamp=row["start_time"],
        )
        totals.append(float(result.total_price))
    return totals


def time_vectorized(
    calls: pl.DataFrame, repeats: int = 3
) -> tuple[dict[str, float], list[float], pl.DataFrame]:
    """``price_calls`` ``repeats`` times, each with a fresh book (so key resolution is part of
    the time, as in a one-shot import): the median run's figures (by wall time; peak RSS over
    all runs, including the input already in memory) and every run's wall time."""
    runs, result = [], calls
    for _ in range(repeats):
        book = PriceBook()
        with Measure() as measure:
            result = price_calls(calls, book)
        runs.append(measure)
    walls = [m.wall_s for m in runs]
    median = sorted(runs, key=lambda m: m.wall_s)[len(runs) // 2]
    figures = median.figures()
    figures["cpu_s"] = round(statistics.median(m.cpu_s for m in runs), 4)
    figures["peak_rss_mb"] = max(m.peak_rss_mb for m in runs)
    loads = [x for m in runs for x in m.load]
    figures["load_average_1m"] = [min(loads), max(loads)]
    return figures, walls, result


def _rate(rows: float) -> str:
    return f"{rows / 1e6:.2f}M" if rows >= 1e6 else f"{rows:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--sample", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=3, help="price_calls runs per size")
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("pricing")

    models = usable_models(PriceBook())
    reference_models = usable_models(PriceBook(), reference=True)
    print(
        f"models: {len(models)} of {len(MODELS)} listed ({len(reference_models)} in the loop "
        f"sample); polars {pl.__version__}, genai-prices {genai_prices.__version__}"
    )
    sample = synthetic_calls(args.sample, reference_models, seed=7)
    with Measure() as loop:
        reference = loop_prices(sample)
    loop_rate = args.sample / loop.wall_s
    loop_cpu_rate = args.sample / max(loop.cpu_s, 1e-9)
    check = price_calls(sample, PriceBook())["total_cost"].to_numpy()
    worst = float(np.max(np.abs(check - reference) / np.maximum(np.abs(reference), 1e-300)))
    print(
        f"calc_price loop: {args.sample:,} rows in {loop.wall_s:.2f} s (CPU {loop.cpu_s:.2f} s)"
        f" = {loop_rate:,.0f} rows/s"
    )
    print(f"largest relative difference vectorized vs loop on the sample: {worst:.1e}")

    for n in args.rows:
        calls = synthetic_calls(n, models)
        figures, walls, priced = time_vectorized(calls, args.repeats)
        rate = n / figures["wall_s"]
        cpu_rate = n / max(figures["cpu_s"], 1e-9)
        keys = priced.select("provider", "model", "day").n_unique()
        statuses = dict(priced["price_status"].value_counts().iter_rows())
        print(
            f"price_calls: {n:,} rows in {figures['wall_s']:.2f} s (median of {args.repeats}; "
            f"CPU {figures['cpu_s']:.2f} s) = {rate:,.0f} rows/s, {cpu_rate:,.0f} rows per "
            f"CPU-s; {cpu_rate / loop_cpu_rate:,.0f}x the loop per CPU-s; {keys:,} "
            f"(provider, model, day) keys; statuses {statuses}"
        )
        report.row(
            figure="**pricing** rate (`price_calls`, fresh price book)",
            size=f"{n:,} rows",
            result=f"{_rate(rate)} rows/s; {_rate(cpu_rate)} rows per CPU-s",
            measure=figures,
            baseline=(
                f"per-row `calc_price` loop: {loop_cpu_rate:,.0f} rows per CPU-s "
                f"({args.sample:,}-row sample) → **{cpu_rate / loop_cpu_rate:,.0f}×** per CPU-s; "
                f"max relative difference {worst:.1e}"
            ),
            n_rows=n,
            rows_per_s=rate,
            rows_per_cpu_s=cpu_rate,
            walls_s=walls,
            repeats=args.repeats,
            loop_rows_per_s=loop_rate,
            loop_rows_per_cpu_s=loop_cpu_rate,
            loop_sample=args.sample,
            max_relative_difference=worst,
            keys=keys,
        )
        del calls, priced
    report.write(args.json)


if __name__ == "__main__":
    main()
