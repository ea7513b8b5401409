"""Service tiers: read from the attributes real instrumentations emit, priced from genai-prices'
tier variants or the user's tier entries, and never priced at standard rates without a price.

Expected tier prices come from genai-prices' own ``calc_price(..., price_context=...)``, not from
llmtrace's pricing code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from genai_prices import Usage, calc_price
from live.clients import anthropic_client, openai_client

from llmtrace.cli import cli
from llmtrace.dialects import map_span, normalize_service_tier
from llmtrace.pricing import PriceBook, price_calls, tier_rates
from llmtrace.store import Store

pytest_plugins = ["live.fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)  # after the tier variants' start (2026-10-12/14)
BEFORE = datetime(2026, 9, 1, 12, tzinfo=UTC)  # before them
USAGE = {"input_tokens": 10_000, "cache_read_tokens": 2_000, "output_tokens": 800}


def genai(provider: str, model: str, at: datetime, context: dict[str, str] | None) -> float:
    """genai-prices' own price of ``USAGE`` (its answer for the tier's price context)."""
    usage = Usage(input_tokens=10_000, cache_read_tokens=2_000, output_tokens=800)
    result = calc_price(
        usage, model, provider_id=provider, genai_request_timestamp=at, price_context=context
    )
    return float(result.total_price)


def priced(book: PriceBook, rows: list[dict[str, Any]]) -> pl.DataFrame:
    return price_calls(pl.DataFrame(rows, infer_schema_length=None), book)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


# -- reading the tier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "tier"),
    [
        # official genai-openai 1.3b0 / OpenLLMetry: the served tier wins over the requested one
        ({"openai.request.service_tier": "flex", "openai.response.service_tier": "flex"}, "flex"),
        (
            {"openai.request.service_tier": "auto", "openai.response.service_tier": "default"},
            "standard",
        ),
        ({"openai.request.service_tier": "priority"}, "priority"),
        ({"openai.request.service_tier": "auto"}, None),
        ({"gen_ai.openai.response.service_tier": "scale"}, "scale"),  # semconv <= 1.36, openai-v2
        ({"gen_ai.openai.request.service_tier": "flex"}, "flex"),
        # anthropic SDK's own spans and OpenLLMetry's anthropic.chat
        (
            {
                "anthropic.request.service_tier": "standard_only",
                "anthropic.response.service_tier": "standard",
            },
            "standard",
        ),
        ({"anthropic.response.service_tier": "priority"}, "priority"),
        ({"anthropic.response.service_tier": "batch"}, "batch"),
        # Langfuse SDK spans: the OpenAI integration keeps the tier in model parameters
        ({"langfuse.observation.model.parameters": '{"service_tier": "flex"}'}, "flex"),
        ({"langfuse.observation.metadata.service_tier": "Priority"}, "priority"),
        ({}, None),
    ],
)
def test_tier_from_the_attributes_instrumentations_emit(
    attributes: dict[str, Any], tier: str | None
) -> None:
    span = {
        "trace_id": "t",
        "span_id": "s",
        "start_ns": 0,
        "end_ns": 1,
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 1,
            **attributes,
        },
    }
    assert map_span(span)["service_tier"] == tier


def test_tier_spellings() -> None:
    assert [
        normalize_service_tier(v) for v in ("default", "STANDARD", " flex ", "auto", "", 3)
    ] == [
        "standard",
        "standard",
        "flex",
        None,
        None,
        "3",
    ]


# -- pricing -----------------------------------------------------------------------------------

TIER_CASES = [
    # provider, model, tier, genai-prices price context
    ("openai", "o3", "flex", {"service_tier": "flex"}),
    ("openai", "o4-mini", "flex", {"service_tier": "flex"}),
    ("openai", "gpt-4o", "priority", {"service_tier": "priority"}),
    ("openai", "gpt-5", "priority", {"service_tier": "priority"}),
    ("openai", "gpt-4o", "batch", {"processing": "batch"}),
    ("anthropic", "claude-sonnet-4-5", "batch", {"processing": "batch"}),
    ("google", "gemini-2.5-flash", "batch", {"processing": "batch"}),
]


@pytest.mark.parametrize(("provider", "model", "tier", "context"), TIER_CASES)
def test_tier_prices_match_genai_prices_variants(
    book: PriceBook, provider: str, model: str, tier: str, context: dict[str, str]
) -> None:
    expected = genai(provider, model, AT, context)
    standard = genai(provider, model, AT, None)
    assert expected != pytest.approx(standard)  # the tier really changes the price
    rows = [
        {"provider": provider, "model": model, "start_time": AT, "service_tier": t, **USAGE}
        for t in (tier, tier.upper(), None, "default")
    ]
    frame = priced(book, rows)
    assert frame["price_status"].to_list() == ["ok"] * 4
    assert frame["total_cost"].to_list() == pytest.approx([expected, expected, standard, standard])
    one = book.price_one(provider, model, AT, service_tier=tier, **USAGE)
    assert one["total_cost"] == pytest.approx(expected, rel=1e-12)
    rates = tier_rates(provider, model, AT, tier, book=book)
    assert rates is not None and rates.period.startswith(f"{tier} price from 2026-10-1")


@pytest.mark.parametrize(
    ("provider", "model", "tier", "at"),
    [
        ("openai", "gpt-4o", "flex", AT),  # genai-prices has no flex price for gpt-4o
        ("openai", "o3", "scale", AT),  # Scale Tier is a capacity commitment
        ("anthropic", "claude-sonnet-4-5", "priority", AT),  # Priority Tier: commitment too
        ("openai", "o3", "flex", BEFORE),  # variants are only modelled from 2026-10-12
        ("anthropic", "claude-sonnet-4-5", "batch", BEFORE),  # ... and batch from 2026-10-14
    ],
)
def test_a_tier_without_a_price_is_never_priced_at_standard_rates(
    book: PriceBook, provider: str, model: str, tier: str, at: datetime
) -> None:
    row = {"provider": provider, "model": model, "start_time": at, "service_tier": tier, **USAGE}
    frame = priced(book, [row, {**row, "service_tier": None}])
    assert frame["price_status"].to_list() == [f"unpriced_tier:{tier}", "ok"]
    assert frame["total_cost"][0] is None and frame["input_cost"][0] is None
    one = book.price_one(provider, model, at, service_tier=tier, **USAGE)
    assert (one["price_status"], one["total_cost"]) == (f"unpriced_tier:{tier}", None)
    assert tier_rates(provider, model, at, tier, book=book) is None
    # an unknown model on a tier stays an unknown model
    unknown = book.price_one(provider, "no-such-model", at, service_tier=tier, **USAGE)
    assert unknown["price_status"] == "unknown_model"


TIER_FILE = """
[[price]]                 # flex at half the standard price of gpt-4o
provider = "openai"
model = "gpt-4o"
service_tier = "flex"
multiplier = 0.5

[[price]]                 # Anthropic priority at our contracted rates
provider = "anthropic"
model = "claude-sonnet-4-5"
service_tier = "priority"
input_mtok = 4.0
cache_read_mtok = 0.4
output_mtok = 20.0

[[price]]                 # o3 flex: genai-prices' flex price, 10% off
model = "o3"
service_tier = "flex"
multiplier = 0.9

[[price]]                 # a negotiated discount on everything Anthropic, every tier
provider = "anthropic"
model = "claude-*"
multiplier = 0.8
"""


def test_price_file_tier_entries(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(TIER_FILE)
    custom = PriceBook.load(path)
    gpt4o = genai("openai", "gpt-4o", AT, None)
    o3 = genai("openai", "o3", AT, None)
    rows = [
        {"provider": "openai", "model": "gpt-4o", "service_tier": "flex"},
        {"provider": "openai", "model": "gpt-4o", "service_tier": None},  # tier entry ignored
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "service_tier": "priority"},
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "service_tier": "batch"},
        {"provider": "openai", "model": "o3", "service_tier": "flex"},
        {"provider": "openai", "model": "gpt-4o", "service_tier": "scale"},
    ]
    frame = priced(custom, [{**r, "start_time": AT, **USAGE} for r in rows])
    priority = (8_000 * 4.0 + 2_000 * 0.4 + 800 * 20.0) / 1e6 * 0.8
    batch = genai("anthropic", "claude-sonnet-4-5", AT, {"processing": "batch"}) * 0.8
    assert frame["total_cost"].to_list()[:4] == pytest.approx([gpt4o / 2, gpt4o, priority, batch])
    assert frame["total_cost"][4] == pytest.approx(o3 * 0.9)  # standard x 0.9, not flex x 0.9
    assert frame["price_status"].to_list()[-1] == "unpriced_tier:scale"
    digest = custom.source.rsplit("@", 1)[1]
    assert frame["price_source"].to_list()[:4] == [
        f"genai-prices {_version()} + prices.toml@{digest}#1",
        f"genai-prices {_version()}",
        f"genai-prices {_version()} + prices.toml@{digest}#2#4",
        f"genai-prices {_version()} + prices.toml@{digest}#4",
    ]
    for row, cost in zip(rows, frame["total_cost"].to_list(), strict=True):
        one = custom.price_one(row["provider"], row["model"], AT, **USAGE, **_tier(row))
        expected = None if cost is None else pytest.approx(cost, rel=1e-12)  # unpriced: None
        assert one["total_cost"] == expected


def _tier(row: dict[str, Any]) -> dict[str, Any]:
    return {"service_tier": row["service_tier"]}


def _version() -> str:
    import genai_prices

    return genai_prices.__version__


def test_bad_tier_entry_names_the_field(tmp_path: Path) -> None:
    from llmtrace.config import ConfigError

    path = tmp_path / "prices.toml"
    path.write_text('[[price]]\nmodel = "x"\nservice_tier = 5\nmultiplier = 0.5\n')
    with pytest.raises(ConfigError, match="entry 1.*'service_tier'"):
        PriceBook.load(path)


# -- the CLI: costs by tier, the footnote's entry, and reprice ---------------------------------


def test_costs_by_tier_footnotes_the_entry_to_add_and_reprice_prices_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_PRICES", raising=False)
    now = datetime.now(UTC).replace(microsecond=0)
    rows = [
        {"model": "gpt-4o", "service_tier": "flex"},
        {"model": "gpt-4o", "service_tier": "flex"},
        {"model": "gpt-4o", "service_tier": "standard"},
        {"model": "o3", "service_tier": "flex"},
    ]
    calls = pl.DataFrame(
        [
            {
                "trace_id": f"t{i}",
                "span_id": f"s{i}",
                "provider": "openai",
                "start_time": now,
                **row,
                **USAGE,
            }
            for i, row in enumerate(rows)
        ]
    )
    store = Store(tmp_path / "store")
    store.append(price_calls(calls, PriceBook()))
    runner = CliRunner()
    args = ["costs", "--store", str(store.path), "--by", "service_tier"]
    table = runner.invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "unpriced_tier:flex: 2 (e.g. gpt-4o)" in table.output
    entry = '[[price]]\n    provider = "openai"\n    model = "gpt-4o"\n    service_tier = "flex"'
    assert entry in table.output
    data = json.loads(runner.invoke(cli, [*args, "--format", "json"]).output)
    by_tier = {row["service_tier"]: row for row in data}
    assert set(by_tier) == {"flex", "standard"}
    assert by_tier["flex"]["calls"] == 3 and by_tier["flex"]["unpriced_calls"] == 2

    (tmp_path / "prices.toml").write_text(
        '[[price]]\nprovider = "openai"\nmodel = "gpt-4o"\nservice_tier = "flex"\n'
        "multiplier = 0.5\n"
    )
    out = runner.invoke(
        cli, ["reprice", "--store", str(store.path), "--prices", str(tmp_path / "prices.toml")]
    )
    assert (
        out.exit_code == 0 and "changed: 2 calls" in out.output and "unpriced: 2 -> 0" in out.output
    )
    stored = store.scan().collect().sort("span_id")
    assert stored["total_cost"].to_list()[:2] == pytest.approx(
        [genai("openai", "gpt-4o", now, None) / 2] * 2
    )


# -- live: the real SDKs and instrumentations ---------------------------------------------------


def _priced_spans(receiver: Any, count: int) -> list[Any]:
    assert receiver.wait_for(
        lambda: sum(1 for s in receiver.spans if "llmtrace.price.status" in s.attributes) >= count
    )
    return [s for s in receiver.spans if "llmtrace.price.status" in s.attributes]


def test_live_openai_flex_is_priced_at_flex_or_left_unpriced(
    live: Any, provider: Any, receiver: Any
) -> None:
    client = openai_client(provider)
    messages = [{"role": "user", "content": "Say hello."}]
    client.chat.completions.create(model="o4-mini", messages=messages, service_tier="flex")
    client.chat.completions.create(model="gpt-4o", messages=messages, service_tier="flex")
    live.force_flush()
    spans = {s.attributes["gen_ai.request.model"]: s for s in _priced_spans(receiver, 2)}
    o4 = spans["o4-mini"].attributes
    assert o4["openai.response.service_tier"] == "flex"  # as the instrumentation emits it
    usage = provider.openai_usage_for("o4-mini")
    expected = calc_price(
        Usage(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
        ),
        "o4-mini",
        provider_id="openai",
        genai_request_timestamp=datetime.now(UTC),
        price_context={"service_tier": "flex"},
    )
    assert o4["llmtrace.price.status"] == "ok"
    assert o4["gen_ai.usage.cost"] == pytest.approx(float(expected.total_price), rel=1e-9)
    gpt4o = spans["gpt-4o"].attributes
    assert gpt4o["llmtrace.price.status"] == "unpriced_tier:flex"
    assert "gen_ai.usage.cost" not in gpt4o


def test_live_anthropic_priority_is_not_priced_at_standard_rates(
    live: Any, provider: Any, receiver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = provider.anthropic_usage_for("claude-sonnet-4-5") | {"service_tier": "priority"}
    monkeypatch.setitem(provider.anthropic_usage, "claude-sonnet-4-5", usage)
    client = anthropic_client(provider, live.tracer_provider)
    client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    live.force_flush()
    spans = _priced_spans(receiver, 1)
    sdk = [s for s in receiver.spans if s.scope == "com.anthropic.sdk.python"]
    assert sdk and sdk[0].attributes["anthropic.response.service_tier"] == "priority"
    statuses = {s.attributes["llmtrace.price.status"] for s in spans}
    assert statuses == {"unpriced_tier:priority"}
    assert not any("gen_ai.usage.cost" in s.attributes for s in receiver.spans)
