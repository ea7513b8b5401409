"""Rates: the prices of one model in one price period, and the cost formula over them.

Shared by the price book (``llmtrace.pricing``) and the user's price file
(``llmtrace.price_file``) without either importing the other, and free of genai-prices types:
``pricing`` turns genai-prices' prices into ``Rate``/``Rates``, and everything after reads these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Cost components in record order; "request" is per call, the rest per token.
COMPONENTS: tuple[str, ...] = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "output",
    "reasoning",
    "request",
)
# How many units a quoted price is for: tokens per million, requests per thousand.
PER: Mapping[str, int] = {name: 1_000_000 for name in COMPONENTS} | {"request": 1_000}
# What one unit costs is its quoted price times 1 / PER, never the price divided by PER: Polars
# divides a column by a scalar as a multiply by the scalar's reciprocal when the column has more
# than one row, and divides exactly for one row (pola-rs/polars#20038, #27753: by design), so
# ``count * price / PER`` gave a call priced alone (``price_one``, the live pricer, a one-call
# batch) a cost one ulp off the same call's in a larger batch for ~30% of calls. Multiplying by
# the reciprocal everywhere gives every path the bulk path's bits (stored costs do not move).
PER_INVERSE: Mapping[str, float] = {name: 1 / per for name, per in PER.items()}
# Price-file / genai-prices price keys -> component.
PRICE_KEYS: Mapping[str, str] = {
    "input_mtok": "input",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_mtok": "output",
    "output_reasoning_mtok": "reasoning",
    "requests_kcount": "request",
}
MULTIPLIER_KEYS: Mapping[str, tuple[str, ...]] = {
    "multiplier": COMPONENTS,
    "input_multiplier": ("input",),
    "cache_read_multiplier": ("cache_read",),
    "cache_write_multiplier": ("cache_write", "cache_write_1h"),
    "output_multiplier": ("output",),
    "reasoning_multiplier": ("reasoning",),
    "request_multiplier": ("request",),
}
# A component without its own price is billed like this one (genai-prices' unit hierarchy:
# a child unit without a price stays inside its parent's leaf).
FALLBACK: Mapping[str, str] = {
    "cache_read": "input",
    "cache_write": "input",
    "cache_write_1h": "cache_write",
    "reasoning": "output",
}


# -- rates ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rate:
    """One component's price in USD per ``PER[component]`` units, with cliff tiers.

    ``tiers`` holds ``(start, price)`` pairs in ascending ``start``: once the call's total input
    tokens exceed ``start``, that price applies to every unit of the component.
    """

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def price_at(self, input_tokens: int) -> float:
        """The quoted price in force for a call with ``input_tokens`` total input tokens."""
        if not self.tiers:
            return self.base
        for start, price in reversed(self.tiers):
            if input_tokens > start:
                return price
        return self.base

    def scaled(self, factor: float) -> Rate:
        """This rate times ``factor`` (a discount or premium), tiers included."""
        return Rate(self.base * factor, tuple((s, p * factor) for s, p in self.tiers))


@dataclass(frozen=True, slots=True)
class Rates:
    """Everything needed to price calls of one model in one price period.

    ``provider_id`` / ``model_id`` are the genai-prices ids matched (``model_id`` is None for a
    model priced only by the user's file), ``period`` says which dated or time-of-day price it
    is, ``overrides`` which price-file entries changed it and ``fallbacks`` which components
    have no price of their own and are billed like another.
    """

    input: Rate
    cache_read: Rate
    cache_write: Rate
    cache_write_1h: Rate
    output: Rate
    reasoning: Rate
    request: Rate
    provider_id: str | None = None
    model_id: str | None = None
    period: str = "always"
    overrides: tuple[str, ...] = ()
    fallbacks: tuple[tuple[str, str], ...] = ()
    source: str = ""  # price_source of calls priced with these (set by the price book)

    def component(self, name: str) -> Rate:
        """The rate of a component by name (``input``, ``cache_read``, ... ``request``)."""
        return getattr(self, name)

    def cost(
        self,
        input_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        cache_write_1h_tokens: int = 0,
        output_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> dict[str, float]:
        """Disjoint costs of one call with valid usage; the same formula as ``price_calls``."""
        return dict(
            zip(
                COST_FIELDS,
                self.cost_values(
                    input_tokens,
                    cache_read_tokens,
                    cache_write_tokens,
                    cache_write_1h_tokens,
                    output_tokens,
                    reasoning_tokens,
                ),
                strict=True,
            )
        )

    def cost_values(
        self,
        inp: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        cache_write_1h_tokens: int,
        output_tokens: int,
        reasoning_tokens: int,
    ) -> tuple[float, float, float, float, float, float, float]:
        """``cost``'s values as a tuple in ``COST_FIELDS`` order (the live worker's form: no
        dict per call). The total adds the components in ``sum_costs``' order."""
        # times the reciprocal (``PER_INVERSE``: price_calls' bits), read once: the live hot path
        token, request = PER_INVERSE["input"], PER_INVERSE["request"]
        # each rate's ``price_at(inp)``, its base read directly when it has no tiers (most
        # models: a method call per component was a fifth of this)
        rate = self.input
        input_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.cache_read
        cache_read_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.cache_write
        cache_write_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.cache_write_1h
        cache_write_1h_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.output
        output_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.reasoning
        reasoning_price = rate.price_at(inp) if rate.tiers else rate.base
        rate = self.request
        request_price = rate.price_at(inp) if rate.tiers else rate.base
        input_cost = (inp - cache_read_tokens - cache_write_tokens) * input_price * token
        cache_read_cost = cache_read_tokens * cache_read_price * token
        cache_write_cost = (
            cache_write_tokens - cache_write_1h_tokens
        ) * cache_write_price * token + cache_write_1h_tokens * cache_write_1h_price * token
        output_cost = (output_tokens - reasoning_tokens) * output_price * token
        reasoning_cost = reasoning_tokens * reasoning_price * token
        request_cost = 1 * request_price * request
        return (
            input_cost,
            cache_read_cost,
            cache_write_cost,
            output_cost,
            reasoning_cost,
            request_cost,
            input_cost
            + cache_read_cost
            + cache_write_cost
            + output_cost
            + reasoning_cost
            + request_cost,
        )


COST_FIELDS = (
    "input_cost",
    "cache_read_cost",
    "cache_write_cost",
    "output_cost",
    "reasoning_cost",
    "request_cost",
    "total_cost",
)
"""The cost fields ``Rates.cost`` gives, in its order (components, then their sum)."""


def sum_costs(costs: Mapping[str, float]) -> float:
    """Sum of the components in a fixed order, so both pricing paths round identically."""
    return (
        costs["input_cost"]
        + costs["cache_read_cost"]
        + costs["cache_write_cost"]
        + costs["output_cost"]
        + costs["reasoning_cost"]
        + costs["request_cost"]
    )


def complete_rates(
    given: Mapping[str, Rate],
) -> tuple[dict[str, Rate], tuple[tuple[str, str], ...]]:
    """Fill components without a price the way genai-prices bills them (see ``FALLBACK``)."""
    rates: dict[str, Rate] = {}
    fallbacks: list[tuple[str, str]] = []
    for name in COMPONENTS:
        if name in given:
            rates[name] = given[name]
        elif name in FALLBACK:
            rates[name] = rates[FALLBACK[name]]
            fallbacks.append((name, FALLBACK[name]))
        else:  # no input/output/request price: the data says this unit is free
            rates[name] = Rate(0.0)
    return rates, tuple(fallbacks)
