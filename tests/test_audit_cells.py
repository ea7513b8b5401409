"""The aggregate step gives the same cells as before its rework (issue 15), in one pass and in
key-hash parts: every built-in rule's merged aggregate on the seeded demo store equals the copy
frozen in tests/fixtures/audit-cells/ (see ``audit_cells``; costs left out, they follow the
price data)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from audit_cells import cells, demo_store, differences, frozen

from llmtrace.rules.partition import aggregate_spilled
from llmtrace.store import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return demo_store(tmp_path_factory.mktemp("cells") / "store")


def test_the_frozen_copy_covers_the_rules_the_rework_touched() -> None:
    want = frozen()
    assert {"LT101", "LT201", "LT202", "LT203", "LT301", "LT502"} <= set(want)
    for code in ("LT201", "LT202", "LT203", "LT301"):
        assert want[code].height > 100, code  # many cells: a real comparison


@pytest.mark.parametrize(
    "rows_per_part",
    [10**12, 8_000, 25_000, 31_000],
    # 60k calls: 8 parts, each family spilled alone; 3 parts: the session and lineage families
    # share one grid spill; 2 parts: all three families do (partition.group_families)
    ids=["one pass", "parts", "grid of two families", "grid of three families"],
)
def test_cells_equal_the_frozen_copy(store: Store, rows_per_part: int) -> None:
    got = cells(store, rows_per_part)
    want = frozen()
    assert set(got) == set(want)
    problems = {code: differences(got[code], want[code]) for code in want}
    assert not any(problems.values()), problems


def test_a_changed_token_is_caught(store: Store) -> None:
    """The comparison can fail: one cell's token count off by one is reported."""
    want = frozen()["LT301"]
    column = next(c for c in want.columns if c == "input")
    changed = want.with_columns(
        want[column].scatter(0, want[column][0] + 1)  # one token more in the first cell
    )
    assert differences(changed, want) == [f"{column}: 1 values differ"]
    assert not differences(want, want)
    assert Path(__file__).parent.joinpath("fixtures", "audit-cells", "LT301.parquet").exists()


def test_lt502_spilled_when_its_repeated_calls_are_many(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LT502 runs in one pass on the calls of repeated requests, or, when those are more than
    a part should hold, spills them by fingerprint: the same cells either way."""
    from llmtrace.rules import lt502_duplicates

    spilled: list[int] = []

    def spill(*args: object, **kwargs: object) -> list[pl.DataFrame]:
        spilled.append(1)
        return aggregate_spilled(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lt502_duplicates, "PARTITION_ROWS", 500)
    monkeypatch.setattr(lt502_duplicates, "aggregate_spilled", spill)
    got = cells(store, 10**12)["LT502"]
    assert spilled, "the demo's repeated calls should exceed 500"
    assert not differences(got, frozen()["LT502"])
