"""Pricing against genai-prices' real data: list prices, history, time of day, overrides, and
equality with genai-prices' own per-call ``calc_price`` on a randomized frame."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import genai_prices
import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from genai_prices import Usage, calc_price

from llmtrace.cli import cli
from llmtrace.commands.prices import prices as prices_command
from llmtrace.config import ConfigError
from llmtrace.pricing import PRICES_ENV, PriceBook, Rates, price_calls
from llmtrace.record import CALL_SCHEMA, COST_FIELDS, TOKEN_FIELDS

SOURCE = f"genai-prices {genai_prices.__version__}"
M = 1_000_000


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def calls(*rows: dict) -> pl.DataFrame:
    """Call records from partial rows; defaults keep each test about the fields it sets."""
    base = {"provider": "anthropic", "model": "claude-sonnet-4-5", "start_time": T2026}
    return pl.DataFrame([base | row for row in rows], infer_schema_length=None)


def one(book: PriceBook, **row) -> dict:
    return price_calls(calls(row), book).row(0, named=True)


T2026 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def reference(provider: str, model: str, at: datetime, **tokens: int) -> float:
    """genai-prices' own answer for one call (tokens in record names)."""
    usage = Usage(
        input_tokens=tokens.get("input_tokens", 0),
        cache_read_tokens=tokens.get("cache_read_tokens", 0),
        cache_write_tokens=tokens.get("cache_write_tokens", 0),
        cache_write_1h_tokens=tokens.get("cache_write_1h_tokens", 0),
        output_tokens=tokens.get("output_tokens", 0),
        output_reasoning_tokens=tokens.get("reasoning_tokens", 0),
    )
    result = calc_price(usage, model, provider_id=provider, genai_request_timestamp=at)
    return float(result.total_price)


# -- published list prices -------------------------------------------------------------------


def test_claude_sonnet_45_list_prices(book: PriceBook) -> None:
    rates = book.rates_for("anthropic", "claude-sonnet-4-5", T2026)
    assert rates is not None
    assert (rates.input.base, rates.output.base) == (3.0, 15.0)
    assert rates.cache_read.base == pytest.approx(0.30)
    assert rates.cache_write.base == pytest.approx(3.75)
    assert rates.cache_write_1h.base == pytest.approx(6.0)
    assert rates.input.tiers == ((200_000, 6.0),)
    assert rates.output.tiers == ((200_000, 22.5),)
    assert (rates.provider_id, rates.model_id) == ("anthropic", "claude-sonnet-4-5")


def test_sonnet_cache_and_tier_costs(book: PriceBook) -> None:
    cached = one(
        book,
        input_tokens=10_000,
        cache_read_tokens=8_000,
        cache_write_tokens=1_000,
        output_tokens=500,
    )
    assert cached["input_cost"] == pytest.approx(1_000 * 3 / M)
    assert cached["cache_read_cost"] == pytest.approx(8_000 * 0.30 / M)
    assert cached["cache_write_cost"] == pytest.approx(1_000 * 3.75 / M)
    assert cached["total_cost"] == pytest.approx(0.01665)
    one_hour = one(
        book,
        input_tokens=10_000,
        cache_read_tokens=8_000,
        cache_write_tokens=1_000,
        cache_write_1h_tokens=1_000,
        output_tokens=500,
    )
    assert one_hour["cache_write_cost"] == pytest.approx(1_000 * 6 / M)
    assert one_hour["total_cost"] == pytest.approx(0.0189)
    # the >200k cliff: every token of the call at the higher rate
    long = one(book, input_tokens=250_000, output_tokens=500)
    assert long["input_cost"] == pytest.approx(1.50)
    assert long["output_cost"] == pytest.approx(500 * 22.5 / M)
    at_edge = one(book, input_tokens=200_000, output_tokens=0)
    assert at_edge["input_cost"] == pytest.approx(0.60)


def test_gpt_4o_list_prices(book: PriceBook) -> None:
    rates = book.rates_for("openai", "gpt-4o", T2026)
    assert rates is not None
    assert (rates.input.base, rates.output.base, rates.cache_read.base) == (2.5, 10.0, 1.25)
    row = one(book, provider="openai", model="gpt-4o", input_tokens=M, output_tokens=M)
    assert row["total_cost"] == pytest.approx(12.50)
    cached = one(book, provider="openai", model="gpt-4o", input_tokens=M, cache_read_tokens=M)
    assert cached["total_cost"] == pytest.approx(1.25)


def test_o3_is_priced_by_call_date(book: PriceBook) -> None:
    frame = calls(
        *(
            {"provider": "openai", "model": "o3", "start_time": at, "input_tokens": M}
            | {"output_tokens": M, "reasoning_tokens": 800_000}
            for at in (
                datetime(2025, 5, 1, tzinfo=UTC),
                datetime(2025, 6, 9, 23, 59, tzinfo=UTC),
                datetime(2025, 6, 10, tzinfo=UTC),
                T2026,
            )
        )
    )
    priced = price_calls(frame, book)
    assert priced["total_cost"].to_list() == pytest.approx([50.0, 50.0, 10.0, 10.0])
    # reasoning is billed at the output rate: 800k of the 1M output at $40, then $8
    assert priced["reasoning_cost"].to_list() == pytest.approx([32.0, 32.0, 6.4, 6.4])
    assert priced["output_cost"].to_list() == pytest.approx([8.0, 8.0, 1.6, 1.6])


def test_deepseek_time_of_day_needs_more_than_a_day_key(book: PriceBook) -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    times = [day + timedelta(hours=h, minutes=m) for h, m in ((0, 10), (0, 30), (9, 0), (20, 0))]
    frame = calls(
        *(
            {"provider": "deepseek", "model": "deepseek-chat", "start_time": at}
            | {"input_tokens": M, "output_tokens": 0}
            for at in times
        )
    )
    got = price_calls(frame, book)["total_cost"].to_list()
    expected = [reference("deepseek", "deepseek-chat", at, input_tokens=M) for at in times]
    assert got == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) == 2  # same UTC day, two prices
    early, late = (book.rates_for("deepseek", "deepseek-chat", t) for t in times[1:3])
    assert early is late  # one cached Rates per band
    assert book.rates_for("deepseek", "deepseek-chat", times[0]) is not early


def test_article_example_sonnet_thousand_calls(book: PriceBook) -> None:
    frame = calls(*({"input_tokens": 10_000, "output_tokens": 500} for _ in range(1000)))
    priced = price_calls(frame, book)
    assert priced["input_cost"].sum() == pytest.approx(30.00)
    assert priced["output_cost"].sum() == pytest.approx(7.50)
    assert priced["total_cost"].sum() == pytest.approx(37.50)


def test_request_fee_and_reasoning_rate(book: PriceBook) -> None:
    sonar = one(book, provider="perplexity", model="sonar", input_tokens=1000, output_tokens=100)
    assert sonar["request_cost"] == pytest.approx(0.012)
    assert sonar["total_cost"] == pytest.approx(0.012 + 1100 / M)
    deep = one(
        book,
        provider="perplexity",
        model="sonar-deep-research",
        input_tokens=M,
        output_tokens=2 * M,
        reasoning_tokens=M,
    )
    assert (deep["output_cost"], deep["reasoning_cost"]) == pytest.approx((8.0, 3.0))


# -- statuses and normalisation ----------------------------------------------------------------


def test_unpriced_calls_get_null_costs_and_a_reason(book: PriceBook) -> None:
    frame = calls(
        {"model": "my-fancy-model", "provider": "acme", "input_tokens": 10, "output_tokens": 1},
        {"model": None, "input_tokens": 10},
        {"model": "  ", "input_tokens": 10},
        {"input_tokens": None, "output_tokens": None},
        {"input_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 5},
        {"input_tokens": 10, "output_tokens": 5, "reasoning_tokens": 6},
        {"input_tokens": -1, "output_tokens": 5},
        {"input_tokens": 10, "cache_write_tokens": 2, "cache_write_1h_tokens": 3},
        {"input_tokens": 10},
    )
    priced = price_calls(frame, book)
    assert priced["price_status"].to_list() == [
        "unknown_model",
        "no_model",
        "no_model",
        "no_usage",
        "invalid_usage",
        "invalid_usage",
        "invalid_usage",
        "invalid_usage",
        "ok",
    ]
    unpriced = priced.filter(pl.col("price_status") != "ok")
    for name in COST_FIELDS:
        assert unpriced[name].null_count() == unpriced.height, name
    assert priced["total_cost"][-1] == pytest.approx(10 * 3 / M)  # output null counts as 0
    assert priced["price_source"].to_list() == [SOURCE] * priced.height


def test_output_keeps_the_call_record_schema(book: PriceBook) -> None:
    frame = calls({"input_tokens": 100, "service": "api", "output_tokens": 1}).with_columns(
        pl.lit("junk").alias("not_a_record_field")
    )
    priced = price_calls(frame.lazy(), book)
    assert priced.schema == CALL_SCHEMA
    assert priced["service"].to_list() == ["api"]
    assert priced["input_tokens"].to_list() == [100]


@pytest.mark.parametrize(
    ("provider", "model", "provider_id", "model_id"),
    [
        ("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "aws", None),
        ("gcp.vertex_ai", "claude-sonnet-4-5@20250929", "google", "claude-sonnet-4-5"),
        ("gcp.gemini", "models/gemini-2.5-flash", "google", "gemini-2.5-flash"),
        ("azure.ai.openai", "gpt-4o", "azure", "gpt-4o"),
        ("x_ai", "grok-3", "x-ai", "grok-3"),
        ("mistral_ai", "mistral-large-latest", "mistral", "mistral-large"),
        ("openai", "openai/gpt-4o", "openai", "gpt-4o"),
        ("openai", "GPT-4o-2024-08-06", "openai", "gpt-4o"),
        (None, "anthropic/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        (None, "gpt-4o", "openai", "gpt-4o"),
        ("openrouter", "anthropic/claude-sonnet-4.5", "openrouter", None),
        ("ibm.watsonx.ai", "gpt-4o", "openai", "gpt-4o"),  # unknown provider: guessed by model
    ],
)
def test_provider_and_model_names_are_normalised(
    book: PriceBook, provider: str | None, model: str, provider_id: str, model_id: str | None
) -> None:
    rates = book.rates_for(provider, model, T2026)
    assert rates is not None, (provider, model)
    assert rates.provider_id == provider_id
    if model_id is not None:
        assert rates.model_id == model_id
    row = one(book, provider=provider, model=model, input_tokens=1000, output_tokens=10)
    assert row["price_status"] == "ok"
    assert row["total_cost"] == pytest.approx(rates.cost(1000, output_tokens=10)["total_cost"])


def test_one_provider_alias_table_maps_to_genai_prices_ids(book: PriceBook) -> None:
    """Dialects normalise at the edge and pricing maps with the same table; a record holding
    a raw alias (written by hand, or before normalisation) prices like its normalised twin."""
    from llmtrace import dialects, pricing

    assert pricing.PROVIDER_ALIASES is dialects.PROVIDER_ALIASES
    known = {provider.id for provider in book._snapshot.providers}
    assert set(dialects.PROVIDER_ALIASES.values()) <= known
    assert known.isdisjoint(dialects.PROVIDER_ALIASES)  # an id is never renamed
    assert dialects.normalize_provider(" AWS.Bedrock ") == "aws"
    assert dialects.normalize_provider("openai") == "openai"
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    raw = one(book, provider="aws.bedrock", model=model, input_tokens=1000, output_tokens=10)
    normalised = one(book, provider="aws", model=model, input_tokens=1000, output_tokens=10)
    assert raw["price_status"] == normalised["price_status"] == "ok"
    assert raw["total_cost"] == normalised["total_cost"]


def test_known_provider_is_not_second_guessed(book: PriceBook) -> None:
    # a Bedrock call must not silently get Anthropic's direct (10% cheaper) price
    assert book.rates_for("aws.bedrock", "claude-unknown-9", T2026) is None
    bedrock = book.rates_for("aws.bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", T2026)
    assert bedrock is not None and bedrock.input.base == pytest.approx(3.3)


# -- equality with genai-prices on a randomized frame -----------------------------------------

RANDOM_MODELS = [
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-sonnet-4"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o-2024-05-13"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("openai", "gpt-4.1"),
    ("openai", "gpt-5"),
    ("openai", "gpt-5.6-sol"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.0-flash"),
    ("google", "claude-sonnet-4-5@20250929"),
    ("deepseek", "deepseek-chat"),
    ("deepseek", "deepseek-reasoner"),
    ("deepseek", "deepseek-v4-flash"),
    ("openrouter", "qwen/qwen3-coder-flash"),
    ("openrouter", "perplexity/sonar-deep-research"),
    ("perplexity", "sonar"),
    ("perplexity", "sonar-pro"),
    ("perplexity", "sonar-deep-research"),
    ("aws", "us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    ("x-ai", "grok-4"),
    ("mistral", "mistral-large-latest"),
    ("groq", "llama-3.3-70b-versatile"),
    ("zai", "glm-5.3-flash"),
    ("azure", "gpt-4o"),
]


@pytest.fixture(scope="module")
def random_calls() -> pl.DataFrame:
    """3,000 calls: every token field, tiers crossed, dates from 2025 to late 2026 (history),
    times across the day (deepseek bands). Usage is valid, so every row must be priced."""
    rng = np.random.default_rng(20261127)
    n = 3000
    which = rng.integers(0, len(RANDOM_MODELS), n)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    span = int((datetime(2026, 11, 27, tzinfo=UTC) - start).total_seconds())
    late = rng.random(n) < 0.3  # enough calls after qwen's 2026-10-19 tiered price
    seconds = np.where(late, span - rng.integers(0, 60 * 86_400, n), rng.integers(0, span, n))
    inp = np.exp(rng.uniform(0, math.log(600_000), n)).astype(np.int64)
    cr = (inp * rng.uniform(0, 0.8, n) * (rng.random(n) < 0.5)).astype(np.int64)
    cw = ((inp - cr) * rng.uniform(0, 0.9, n) * (rng.random(n) < 0.4)).astype(np.int64)
    cw1h = (cw * rng.uniform(0, 1, n) * (rng.random(n) < 0.5)).astype(np.int64)
    out = rng.integers(0, 30_000, n)
    rs = (out * rng.uniform(0, 1, n) * (rng.random(n) < 0.4)).astype(np.int64)
    return pl.DataFrame(
        {
            "provider": [RANDOM_MODELS[i][0] for i in which],
            "model": [RANDOM_MODELS[i][1] for i in which],
            "start_time": [start + timedelta(seconds=int(s)) for s in seconds],
            "input_tokens": inp,
            "cache_read_tokens": cr,
            "cache_write_tokens": cw,
            "cache_write_1h_tokens": cw1h,
            "output_tokens": out,
            "reasoning_tokens": rs,
        }
    )


def test_price_calls_equals_calc_price_on_every_row(
    book: PriceBook, random_calls: pl.DataFrame
) -> None:
    priced = price_calls(random_calls, book)
    assert priced["price_status"].unique().to_list() == ["ok"]
    expected = [
        reference(
            row["provider"],
            row["model"],
            row["start_time"],
            **{k: row[k] for k in TOKEN_FIELDS},
        )
        for row in random_calls.iter_rows(named=True)
    ]
    got = priced["total_cost"].to_list()
    mismatched = [
        (i, g, e)
        for i, (g, e) in enumerate(zip(got, expected, strict=True))
        if not math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-15)
    ]
    assert not mismatched, mismatched[:5]
    # the frame really exercised tiers, 1h writes, both o3 periods and both deepseek bands
    tiered = priced.filter(
        (pl.col("model") == "claude-sonnet-4-5") & (pl.col("input_tokens") > 200_000)
    )
    assert tiered.height > 0
    assert (priced["cache_write_1h_tokens"] > 0).sum() > 100
    o3 = priced.filter(pl.col("model") == "o3")["start_time"].dt.date()
    assert o3.min() < date(2025, 6, 10) <= o3.max()
    two_tiers = priced.filter(
        (pl.col("model") == "qwen/qwen3-coder-flash")
        & (pl.col("start_time").dt.date() >= date(2026, 10, 19))
    )["input_tokens"]
    assert ((two_tiers > 32_000) & (two_tiers <= 128_000)).sum() > 0 and (
        two_tiers > 128_000
    ).sum() > 0
    deepseek = priced.filter(pl.col("model") == "deepseek-chat")["start_time"].dt.hour()
    assert deepseek.min() < 16 < deepseek.max()
    # components add up to the total
    parts = priced.select(pl.sum_horizontal(COST_FIELDS[:-1]))[:, 0]
    assert np.allclose(parts.to_numpy(), priced["total_cost"].to_numpy(), rtol=1e-12)


def test_price_one_agrees_with_price_calls(book: PriceBook, random_calls: pl.DataFrame) -> None:
    """Bit for bit, not approximately: a call priced alone (``price_one``: the live pricer's
    span attributes; a one-call ``price_calls`` batch) costs what the same call costs in a big
    batch (the store). Polars divides a multi-row column by a scalar through its reciprocal,
    so dividing by PER gave ~30% of these calls a different last bit (``rates.PER_INVERSE``)."""
    priced = price_calls(random_calls, book)
    for i, (row, frame_row) in enumerate(
        zip(
            random_calls.head(1000).iter_rows(named=True),
            priced.head(1000).iter_rows(named=True),
            strict=True,
        )
    ):
        single = book.price_one(
            row["provider"], row["model"], row["start_time"], **{k: row[k] for k in TOKEN_FIELDS}
        )
        assert single["price_status"] == frame_row["price_status"] == "ok"
        alone = price_calls(random_calls.slice(i, 1), book).row(0, named=True) if i < 200 else None
        for name in COST_FIELDS:
            assert single[name] == frame_row[name], (name, row)
            assert alone is None or alone[name] == frame_row[name], (name, row)


def test_price_one_statuses(book: PriceBook) -> None:
    assert book.price_one("openai", "gpt-4o", T2026)["price_status"] == "no_usage"
    assert book.price_one("openai", None, T2026, input_tokens=1)["price_status"] == "no_model"
    bad = book.price_one("openai", "gpt-4o", T2026, input_tokens=1, cache_read_tokens=2)
    assert bad["price_status"] == "invalid_usage" and bad["total_cost"] is None
    unknown = book.price_one("openai", "gpt-99", T2026, input_tokens=1)
    assert unknown["price_status"] == "unknown_model" and unknown["input_cost"] is None


# -- the user's price file ---------------------------------------------------------------------

PRICE_FILE = """
[[price]]
provider = "anthropic"
model = "claude-*"
multiplier = 0.8
since = 2026-01-01
until = "2026-07-01"

[[price]]
model = "o3"
reasoning_multiplier = 1.5

[[price]]
provider = "openai"
model = "ft:gpt-4o-mini:acme*"
input_mtok = 0.30
cache_read_mtok = 0.15
output_mtok = 1.20
note = "our fine-tune"

[[price]]
model = "house-model"
input_mtok = { base = 1.0, tiers = [{ start = 100000, price = 2.0 }] }
output_mtok = 4.0
"""


@pytest.fixture
def price_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(PRICE_FILE)
    return path


def test_discount_applies_only_between_its_dates(price_file: Path) -> None:
    book = PriceBook.load(price_file)
    days = [date(2025, 12, 31), date(2026, 1, 1), date(2026, 6, 30), date(2026, 7, 1)]
    frame = calls(
        *(
            {"start_time": datetime.combine(d, datetime.min.time(), UTC)}
            | {"input_tokens": 10_000, "output_tokens": 500}
            for d in days
        ),
        # same model through Vertex: the entry says provider = "anthropic"
        {"provider": "gcp.vertex_ai", "input_tokens": 10_000, "output_tokens": 500},
    )
    priced = price_calls(frame, book)
    assert priced["total_cost"].to_list() == pytest.approx([0.0375, 0.030, 0.030, 0.0375, 0.0375])
    rates = book.rates_for("anthropic", "claude-sonnet-4-5", T2026)
    assert rates is not None and rates.overrides and rates.overrides[0].startswith("prices.toml#1")


def test_reasoning_premium(price_file: Path) -> None:
    book = PriceBook.load(price_file)
    usage = {"input_tokens": M, "output_tokens": M, "reasoning_tokens": 500_000}
    for model in ("o3", "o3-2025-04-16"):  # the glob also matches the genai-prices model id
        row = one(book, provider="openai", model=model, **usage)
        assert row["reasoning_cost"] == pytest.approx(0.5 * 8 * 1.5)
        assert row["output_cost"] == pytest.approx(0.5 * 8)
        assert row["input_cost"] == pytest.approx(2.0)


def test_custom_model_with_absolute_rates(price_file: Path, book: PriceBook) -> None:
    model = "ft:gpt-4o-mini:acme:7xyz"
    assert book.rates_for("openai", model, T2026) is None  # unknown without the file
    custom = PriceBook.load(price_file)
    row = one(
        custom,
        provider="openai",
        model=model,
        input_tokens=M,
        cache_read_tokens=400_000,
        cache_write_tokens=100_000,
        output_tokens=M,
    )
    assert row["price_status"] == "ok"
    assert row["input_cost"] == pytest.approx(0.5 * 0.30)
    assert row["cache_read_cost"] == pytest.approx(0.4 * 0.15)
    assert row["cache_write_cost"] == pytest.approx(0.1 * 0.30)  # no write rate: input rate
    assert row["output_cost"] == pytest.approx(1.20)
    rates = custom.rates_for("openai", model, T2026)
    assert rates is not None and rates.model_id is None and "prices.toml#3" in rates.period
    assert dict(rates.fallbacks)["cache_write"] == "input"
    assert custom.rates_for("anthropic", model, T2026) is None  # provider glob holds
    tiered = one(custom, provider=None, model="house-model", input_tokens=150_000)
    assert tiered["input_cost"] == pytest.approx(0.15 * 2.0)


def test_source_names_the_file_and_its_hash(price_file: Path) -> None:
    book = PriceBook.load(price_file)
    digest = hashlib.sha256(price_file.read_bytes()).hexdigest()[:8]
    assert book.source == f"{SOURCE} + overrides prices.toml@{digest}"
    # each call names the entries that priced it; calls no entry touched keep the list source
    assert one(book, input_tokens=1)["price_source"] == f"{SOURCE} + prices.toml@{digest}#1"
    o3 = one(book, provider="openai", model="o3", input_tokens=1)
    assert o3["price_source"] == f"{SOURCE} + prices.toml@{digest}#2"
    assert one(book, provider="openai", model="gpt-4o", input_tokens=1)["price_source"] == SOURCE
    assert one(book, model="no-such-model", input_tokens=1)["price_source"] == book.source
    single = book.price_one("openai", "o3", T2026, input_tokens=1)
    assert single["price_source"] == f"{SOURCE} + prices.toml@{digest}#2"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[[price]]\nmodel = "x"\nmultipler = 0.8\n', ["entry 1", "'multipler'", "unknown"]),
        (
            '[[price]]\nmodel = "x"\nmultiplier = 0.8\n[[price]]\nmodel = "y"\nmultiplier = -1\n',
            ["entry 2", "'multiplier'"],
        ),
        ("[[price]]\nmultiplier = 0.8\n", ["entry 1", "'model'"]),
        ('[[price]]\nmodel = "x"\nmultiplier = 1\nsince = "last week"\n', ["entry 1", "'since'"]),
        (
            '[[price]]\nmodel = "x"\nmultiplier = 1\nsince = 2026-02-01\nuntil = 2026-01-01\n',
            ["'until'"],
        ),
        ('[[price]]\nmodel = "x"\ninput_mtok = 1.0\n', ["entry 1", "'output_mtok'"]),
        ('[[price]]\nmodel = "x"\ninput_mtok = "cheap"\noutput_mtok = 1\n', ["'input_mtok'"]),
        ('[[price]]\nmodel = "x"\n', ["entry 1", "changes nothing"]),
        ("[[price]\nmodel = ", ["not valid TOML"]),
        ('[prices]\nmodel = "x"\n', ["'prices'"]),
    ],
)
def test_bad_price_file_names_file_entry_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "bad-prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        PriceBook.load(path)
    message = str(caught.value)
    assert "bad-prices.toml" in message
    for fragment in fragments:
        assert fragment in message


def test_price_file_is_found_by_argument_env_then_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("arg", "env", "conf"):
        (tmp_path / f"{name}.toml").write_text(PRICE_FILE)
    (tmp_path / "llmtrace.toml").write_text('prices = "conf.toml"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    monkeypatch.setenv(PRICES_ENV, str(tmp_path / "env.toml"))
    assert "arg.toml@" in PriceBook.load(tmp_path / "arg.toml").source
    assert "env.toml@" in PriceBook.load().source
    monkeypatch.delenv(PRICES_ENV)
    assert "conf.toml@" in PriceBook.load().source
    (tmp_path / "llmtrace.toml").write_text("prices = 3\n")
    with pytest.raises(ConfigError, match="llmtrace.toml.*'prices'"):
        PriceBook.load()
    (tmp_path / "llmtrace.toml").write_text("")
    assert PriceBook.load().source == SOURCE
    with pytest.raises(ConfigError, match="missing.toml"):
        PriceBook.load(tmp_path / "missing.toml")


# -- llmtrace prices -------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli, [prices_command.name, *args], catch_exceptions=False)


def test_prices_command_table() -> None:
    result = invoke("claude-sonnet-4-5", "--at", "2026-03-01")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "anthropic / claude-sonnet-4-5" in text
    for money in ("$3.00", "$0.30", "$3.75", "$6.00", "$15.00", "> 200,000 input"):
        assert money in text, money
    assert SOURCE in text


def test_prices_command_json_by_date() -> None:
    before = json.loads(invoke("o3", "--at", "2025-05-01", "--format", "json").output)
    after = json.loads(invoke("o3", "--at", "2025-07-01", "--format", "json").output)
    assert (before["rates"]["input"]["base"], before["rates"]["output"]["base"]) == (10.0, 40.0)
    assert (after["rates"]["input"]["base"], after["rates"]["output"]["base"]) == (2.0, 8.0)
    assert after["matched"] == {"provider_id": "openai", "model_id": "o3"}
    assert after["period"].startswith("from 2025-06-10")
    assert after["rates"]["reasoning"]["billed_as"] == "output"


def test_prices_command_shows_override(price_file: Path) -> None:
    args = ["--prices", str(price_file), "--at", "2026-03-01", "--format", "json"]
    data = json.loads(invoke("claude-sonnet-4-5", *args).output)
    assert data["rates"]["input"]["base"] == pytest.approx(2.4)
    assert data["rates"]["input"]["tiers"][0]["price"] == pytest.approx(4.8)
    assert data["overrides"][0].startswith("prices.toml#1")
    assert re.search(
        r"\+ prices.toml@[0-9a-f]{8}#1 \(provider anthropic assumed\)$", data["source"]
    )


def test_prices_command_unknown_model_exits_1(tmp_path: Path) -> None:
    result = invoke("claude-sonet-4-5")
    assert result.exit_code == 1
    assert "no price for model 'claude-sonet-4-5'" in result.output
    assert "claude-sonnet-4-5" in result.output  # a close name is suggested
    bad = tmp_path / "p.toml"
    bad.write_text("[[price]]\nmodel = 1\n")
    failed = invoke("gpt-4o", "--prices", str(bad))
    assert failed.exit_code == 2 and "entry 1" in failed.output  # a config error, not 1


def test_prices_command_is_registered_with_help_example() -> None:
    from llmtrace.cli import cli

    result = CliRunner().invoke(cli, ["prices", "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and "llmtrace prices claude-sonnet-4-5" in result.output
    run = CliRunner().invoke(cli, ["prices", "gpt-4o", "--format", "json"])
    assert run.exit_code == 0 and json.loads(run.output)["rates"]["cache_read"]["base"] == 1.25


def test_rates_is_a_cached_value(book: PriceBook) -> None:
    first = book.rates_for("openai", "gpt-4o", T2026)
    again = book.rates_for("openai", "gpt-4o", T2026 + timedelta(days=30))
    assert isinstance(first, Rates) and first is again
    assert re.fullmatch(r"genai-prices \d+\.\d+\.\d+", first.source)


# -- calls without a provider ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "provider_id"),
    [
        ("text-embedding-3-small", "openai"),  # listed by azure and openai: azure resells openai
        ("text-embedding-ada-002", "openai"),
        ("gpt-4o", "openai"),  # genai-prices' own guess from the name
        ("claude-sonnet-4-5", "anthropic"),  # not google, which resells it
        ("llama-3.1-8b-instant", "groq"),  # only one provider lists it
    ],
)
def test_a_missing_provider_is_the_models_first_party(
    book: PriceBook, model: str, provider_id: str
) -> None:
    row = one(book, provider=None, model=model, input_tokens=1_000, output_tokens=10)
    assert (row["provider"], row["provider_assumed"], row["price_status"]) == (
        provider_id,
        True,
        "ok",
    )
    assert row["price_source"] == f"{SOURCE} (provider {provider_id} assumed)"
    assert row["total_cost"] == pytest.approx(
        reference(provider_id, model, T2026, input_tokens=1_000, output_tokens=10), rel=1e-12
    )
    single = book.price_one(None, model, T2026, input_tokens=1_000, output_tokens=10)
    assert single["total_cost"] == pytest.approx(row["total_cost"], rel=1e-12)
    assert single["price_source"] == row["price_source"]


def test_a_recorded_provider_is_kept_and_resellers_without_a_first_party_stay_unpriced(
    book: PriceBook,
) -> None:
    azure = one(book, provider="azure", model="text-embedding-3-small", input_tokens=1_000)
    assert (azure["provider"], azure["provider_assumed"], azure["price_source"]) == (
        "azure",
        False,
        SOURCE,
    )
    proxy = one(book, provider="my-proxy", model="gpt-4o", input_tokens=1_000)
    assert (proxy["provider"], proxy["provider_assumed"]) == ("my-proxy", False)
    assert proxy["price_source"] == f"{SOURCE} (provider openai assumed)"
    # an open-weights model hosted by several resellers at several prices: no guess
    hosted = one(book, provider=None, model="meta-llama/llama-3.3-70b-instruct", input_tokens=1)
    assert (hosted["price_status"], hosted["provider"], hosted["provider_assumed"]) == (
        "unknown_model",
        None,
        False,
    )


def test_pricing_again_assumes_the_provider_again(book: PriceBook) -> None:
    first = price_calls(
        calls({"provider": None, "model": "text-embedding-3-small", "input_tokens": 5}), book
    )
    again = price_calls(first, book)
    assert again.equals(first)
    # a stored call whose assumed provider no longer fits its model is re-assumed, not kept
    moved = first.with_columns(pl.lit("anthropic").alias("provider"))
    assert price_calls(moved, book).equals(first)
