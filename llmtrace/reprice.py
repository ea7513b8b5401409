"""Re-price stored calls: the current price data and the user's overrides, applied to the store.

Calls are priced once, when they are imported, with the prices in force then. A negotiated rate
added later, a corrected price file or a newer genai-prices release would otherwise reach only
calls imported afterwards. ``reprice`` runs ``price_calls`` again over the stored calls of a
window and writes back the calls whose priced fields (``PRICED_FIELDS``: costs, status, source)
change, through ``Store.rewrite`` -- the store's journalled file replacement, the same one late
scores and compaction use -- so a crash leaves every call exactly once.

Idempotent: pricing is a pure function of the call and the price book, so a second run with the
same book changes nothing and rewrites no file. Without overrides it restores list prices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from llmtrace.pricing import PRICED_FIELDS, PriceBook, price_calls
from llmtrace.record import COST_FIELDS
from llmtrace.store import Store

# Costs closer than this (relative) are the same price: the live path and the bulk path compute
# one formula in a different order, and a rewrite for rounding noise would be churn, not news.
_REL_TOLERANCE = 1e-9
# What "a call's price changed" means in the report: its costs or its status. A changed
# ``price_source`` alone (an unpriced call now consulted with an override file) is written but
# not counted.
_PRICE_FIELDS = (*COST_FIELDS, "price_status")


@dataclass
class RepriceResult:
    """What a reprice found and did.

    ``calls``: calls in the window; ``changed``: calls whose costs or status changed; ``files`` /
    ``rewritten``: files read / replaced; ``before_total`` / ``after_total``: the window's summed
    ``total_cost`` (priced calls only) before and after; ``before_unpriced`` /
    ``after_unpriced``: calls without a cost before and after. With ``write=False`` nothing is
    written and the "after" figures say what a reprice would do.
    """

    calls: int = 0
    changed: int = 0
    files: int = 0
    rewritten: int = 0
    before_total: float = 0.0
    after_total: float = 0.0
    before_unpriced: int = 0
    after_unpriced: int = 0


def window_mask(since: datetime | None, until: datetime | None) -> pl.Expr:
    """``since <= start_time < until`` as an expression (either bound optional)."""
    mask = pl.lit(True)
    if since is not None:
        mask = mask & (pl.col("start_time") >= since.astimezone(UTC))
    if until is not None:
        mask = mask & (pl.col("start_time") < until.astimezone(UTC))
    return mask


def changed_expr(suffix: str = "_new", fields: tuple[str, ...] = PRICED_FIELDS) -> pl.Expr:
    """True where a call's ``fields`` differ from the ``<field><suffix>`` columns."""
    differs = []
    for name in fields:
        old, new = pl.col(name), pl.col(f"{name}{suffix}")
        if name in COST_FIELDS:
            far = (old - new).abs() > _REL_TOLERANCE * new.abs()
            differs.append((old.is_null() != new.is_null()) | far.fill_null(False))
        else:
            differs.append(old.ne_missing(new))
    return pl.any_horizontal(differs)


def reprice(
    store: Store,
    book: PriceBook,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    write: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> RepriceResult:
    """Price the stored calls with ``since <= start_time < until`` again with ``book`` and write
    back those that changed (see the module docstring). ``progress(done, total)`` per file."""
    result = RepriceResult()
    inside = window_mask(since, until)

    def transform(frame: pl.DataFrame) -> pl.DataFrame | None:
        old = frame.filter(inside)
        if old.is_empty():
            return None
        new = price_calls(old, book)
        suffixed = new.select(pl.col(name).alias(f"{name}_new") for name in PRICED_FIELDS)
        both = pl.concat([old.select(PRICED_FIELDS), suffixed], how="horizontal")
        tally = both.select(
            pl.len().alias("calls"),
            changed_expr().sum().alias("rewrite"),
            changed_expr(fields=_PRICE_FIELDS).sum().alias("changed"),
            pl.col("total_cost").sum().alias("before"),
            pl.col("total_cost_new").sum().alias("after"),
            pl.col("total_cost").is_null().sum().alias("before_unpriced"),
            pl.col("total_cost_new").is_null().sum().alias("after_unpriced"),
        ).row(0, named=True)
        result.calls += tally["calls"]
        result.changed += tally["changed"]
        result.before_total += tally["before"] or 0.0
        result.after_total += tally["after"] or 0.0
        result.before_unpriced += tally["before_unpriced"]
        result.after_unpriced += tally["after_unpriced"]
        if not tally["rewrite"] or not write:
            return None
        return pl.concat([frame.filter(~inside), new])

    rewrite = store.rewrite(transform, since, until, progress=progress)
    result.files, result.rewritten = rewrite.files, rewrite.rewritten
    return result


# Columns no cost view reads and that dominate memory: left out of a what-if's priced frame.
_HEAVY = ("prefix_hashes", "prefix_tokens", "scores", "input_content", "output_content")


def what_if(calls: pl.LazyFrame, book: PriceBook) -> pl.LazyFrame:
    """``calls`` priced on the fly with ``book``, nothing written (``costs --prices``).

    The window is priced as one frame, without the fingerprint, score and content columns
    (null in the result): a what-if of a very large window needs memory for its other columns.
    """
    return price_calls(calls.drop(_HEAVY), book).lazy()
