"""An independent, plain-Python replay of prompt caching, written from the providers' docs.

Not llmtrace code and calling none: the tests compare LT202 with it. It keeps a cache of
entries per conversation (prefix hash -> expiry and lifetime) and walks the turns in time order:

* Anthropic (explicit): each request places breakpoints (a layout); a breakpoint finds the
  longest live entry at its own position or up to ``LOOKBACK`` message boundaries before it;
  the request reads the longest found (A) and refreshes that entry; it writes an entry at every
  breakpoint beyond A whose prefix reaches the model's minimum. Billing as documented:
  read A, 1-hour write = B - A (B: last 1-hour breakpoint written), 5-minute write = C - max(A, B)
  (C: the last breakpoint), nothing written when C is below the minimum.
* Automatic prefix caching (OpenAI; Gemini implicit): every request leaves an entry for its
  whole prompt; a request reads the longest live entry that is a prefix of it, rounded down to
  ``step`` tokens, and refreshes it.

Each call is then priced with genai-prices' ``calc_price`` directly, the history after the
system prefix re-split (the system prefix is billed as it was: LT201's part).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from genai_prices import Usage, calc_price

LOOKBACK = 20
SHORT, LONG = 300.0, 3600.0


@dataclass
class Turn:
    conversation: str
    at: datetime
    length: int
    hashes: list[int]  # message-boundary prefix hashes (system first)
    tokens: list[int]  # tokens up to each boundary
    read: int = 0
    write: int = 0
    write_1h: int = 0


def turns_of(rows: Iterable[dict[str, Any]]) -> list[Turn]:
    return [
        Turn(
            r["conversation_id"],
            r["start_time"],
            int(r["input_tokens"]),
            list(r["prefix_hashes"]),
            [int(t) for t in r["prefix_tokens"]],
        )
        for r in rows
    ]


def _breakpoints(turn: Turn, previous: Turn | None, layout: str) -> list[tuple[int, float]]:
    """(boundary index, lifetime) of each breakpoint the layout puts in this request."""
    last = len(turn.hashes) - 1
    if layout == "short":
        return [(last, SHORT)]
    if layout == "long":
        return [(last, LONG)]
    assert layout == "mixed"
    points = [(last, SHORT)]
    if previous is not None and previous.hashes[-1] in turn.hashes:
        at = turn.hashes.index(previous.hashes[-1])
        if at < last:
            points.insert(0, (at, LONG))
    return points


def replay_explicit(turns: list[Turn], layout: str, minimum: int) -> list[Turn]:
    """Anthropic breakpoints: fills read / write / write_1h of every turn."""
    cache: dict[tuple[str, int], tuple[float, float]] = {}  # (conv, hash) -> (expiry, ttl)
    previous: dict[str, Turn] = {}
    for turn in sorted(turns, key=lambda t: (t.conversation, t.at)):
        now = turn.at.timestamp()
        points = _breakpoints(turn, previous.get(turn.conversation), layout)
        best, best_key = 0, None
        for index, _ in points:
            for j in range(max(0, index - LOOKBACK), index + 1):
                key = (turn.conversation, turn.hashes[j])
                entry = cache.get(key)
                if entry and entry[0] >= now and turn.tokens[j] > best:
                    best, best_key = turn.tokens[j], key
        if best_key is not None:
            cache[best_key] = (now + cache[best_key][1], cache[best_key][1])
        last = turn.tokens[points[-1][0]]
        turn.read = best
        if last >= minimum:
            one_hour_end = best
            for index, ttl in points:
                size = turn.tokens[index]
                if size > best and size >= minimum:
                    cache[(turn.conversation, turn.hashes[index])] = (now + ttl, ttl)
                    if ttl == LONG:
                        one_hour_end = max(one_hour_end, size)
            turn.write = last - best
            turn.write_1h = one_hour_end - best
        previous[turn.conversation] = turn
    return turns


def replay_automatic(turns: list[Turn], minimum: int, step: int, ttl: float) -> list[Turn]:
    """Automatic prefix caching: each prompt is cached whole; later prompts read prefixes."""
    cache: dict[tuple[str, int], tuple[float, int]] = {}  # (conv, hash) -> (expiry, tokens)
    for turn in sorted(turns, key=lambda t: (t.conversation, t.at)):
        now = turn.at.timestamp()
        best, best_key = 0, None
        for h in turn.hashes:
            entry = cache.get((turn.conversation, h))
            if entry and entry[0] >= now and entry[1] > best:
                best, best_key = entry[1], (turn.conversation, h)
        if best_key is not None:
            cache[best_key] = (now + ttl, best)
        turn.read = best // step * step
        if turn.length >= minimum:
            turn.write = turn.length - turn.read
            cache[(turn.conversation, turn.hashes[-1])] = (now + ttl, turn.length)
    return turns


def history_cost(turns: list[Turn], model: str, provider: str, *, cached: bool) -> float:
    """USD of the history after the system prefix, as billed uncached or as replayed."""
    total = 0.0
    for turn in turns:
        system = turn.tokens[0]
        usage: dict[str, int] = {"input_tokens": turn.length}
        if cached:
            read = max(turn.read - system, 0)
            written = max(turn.read + turn.write - system, 0) - read
            one_hour = max(turn.read + turn.write_1h - system, 0) - read
            usage |= {
                "cache_read_tokens": read,
                "cache_write_tokens": written,
                "cache_write_1h_tokens": min(one_hour, written),
            }
        price = calc_price(Usage(**usage), model_ref=model, provider_id=provider).input_price
        whole = calc_price(Usage(input_tokens=system), model_ref=model, provider_id=provider)
        total += float(price) - float(whole.input_price)
    return total
