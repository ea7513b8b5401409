"""Every built-in rule's merged aggregate ("cells") on the seeded demo store, and a frozen copy.

Why: the aggregate step is where the audit spends its CPU, and it gets reworked for speed
(issue 15). A rework must not change one token: ``tests/test_audit_cells.py`` compares the cells
of one pass and of key-hash parts with the copy frozen here, which was taken before the rework.

Only columns that do not depend on the price data are compared (token counts, call counts,
keys, times, fits): costs come from genai-prices, whose data moves between releases, and the
rules' cost columns are sums the rework does not touch. Regenerate the copy only when a rule's
aggregate is meant to change (say so in the commit):

    python tests/audit_cells.py            # writes tests/fixtures/audit-cells/LTxxx.parquet
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from llmtrace import demo
from llmtrace.config import Config
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.rules.engine import (
    AggregateJob,
    aggregate_locally,
    audit_window,
    load_catalogue,
    rule_contexts,
)
from llmtrace.store import Store

END = datetime(2026, 11, 20, tzinfo=UTC)
FROZEN = Path(__file__).parent / "fixtures" / "audit-cells"
# price-dependent columns (costs, savings): not frozen
_PRICED = ("cost", "usd", "price")


def demo_store(path: Path) -> Store:
    """The 14-day demo workload (seed 7, planted cases included), priced, in a store."""
    store = Store(path)
    priced = price_calls(demo.generate(days=14, end=END, seed=7), PriceBook())
    for part in priced.partition_by("day"):
        store.append(part)
    return store


def cells(store: Store, rows_per_part: int) -> dict[str, pl.DataFrame]:
    """Each built-in rule's merged aggregate, by the local engine with ``rows_per_part``."""
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, END, config)
    contexts = rule_contexts(catalogue, catalogue.entries, window, config)
    job = AggregateJob(
        source=store,
        window=window,
        entries=dict(catalogue.entries),
        contexts=contexts,
        rows_per_part=rows_per_part,
    )
    errors: list = []
    partials, _ = aggregate_locally(job, errors, lambda _: None)
    assert not errors, errors
    return {
        code: normalise(entry.rule.merge(partials[code], contexts[code]))
        for code, entry in catalogue.entries.items()
        if code in partials
    }


def normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Price-independent columns in name order, rows sorted by every non-float column."""
    keep = sorted(c for c in frame.columns if not any(word in c for word in _PRICED))
    frame = frame.select(keep)
    order = [c for c in keep if not frame[c].dtype.is_float()]
    return frame.sort(order, nulls_last=True) if order else frame


def frozen() -> dict[str, pl.DataFrame]:
    return {path.stem: pl.read_parquet(path) for path in sorted(FROZEN.glob("*.parquet"))}


def differences(got: pl.DataFrame, want: pl.DataFrame) -> list[str]:
    """What differs (empty: the same). Floats (sums of fits, shares) within 1e-9 relative:
    Polars' parallel sums add in varying order; every other column exactly."""
    if got.columns != want.columns:
        return [f"columns {got.columns} != {want.columns}"]
    if got.height != want.height:
        return [f"{got.height} rows != {want.height}"]
    out = []
    for name in want.columns:
        a, b = got[name], want[name]
        if a.dtype != b.dtype:
            out.append(f"{name}: dtype {a.dtype} != {b.dtype}")
        elif a.dtype.is_float():
            close = ((a - b).abs() <= 1e-9 * (b.abs() + 1)) | (a.is_null() & b.is_null())
            if not close.fill_null(False).all():
                out.append(f"{name}: {(~close.fill_null(False)).sum()} values differ")
        elif not a.equals(b):
            out.append(f"{name}: {(a.ne_missing(b)).sum()} values differ")
    return out


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        found = cells(demo_store(Path(tmp) / "store"), rows_per_part=10**12)
    FROZEN.mkdir(parents=True, exist_ok=True)
    for code, frame in found.items():
        frame.write_parquet(FROZEN / f"{code}.parquet")
        print(f"{code}: {frame.height} cells, {frame.width} columns", file=sys.stderr)


if __name__ == "__main__":
    main()
