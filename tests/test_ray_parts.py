"""The Ray engine's task body (``ray_engine.aggregate_part``) over key parts, run without Ray.

Why: tests/test_ray_engine.py needs Ray and skips where it is not installed (developers'
venvs), so a Ray-only break could reach CI unseen. In the ninth round one did: a rule's
partition key read a column the rule had come to read only through a derived one, and the task
filtered its part after selecting the rule's columns. ``aggregate_part`` is a plain function
(Ray only ships it to workers), so every built-in rule with a key is run here as
``aggregate_on_ray`` runs it: the whole window in one task, and split into key parts; the parts
must not fail and must merge to the whole's cells.
"""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
from audit_cells import END, demo_store
from polars.testing import assert_frame_equal

from llmtrace.config import Config
from llmtrace.rules import ray_engine
from llmtrace.rules.engine import AggregateJob, audit_window, load_catalogue
from llmtrace.rules.engine import rule_contexts as contexts_of
from llmtrace.store import Store

PARTS = 3
FAMILY_RULES = {"LT201", "LT202", "LT203", "LT301"}  # keyed, with cells in the demo window


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return demo_store(tmp_path_factory.mktemp("ray-parts") / "store")


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order whatever order the parts came in: by every column that is neither
    a float (sums may differ in the last digit) nor nested."""
    keys = [n for n, t in frame.schema.items() if not (t.is_float() or t.is_nested())]
    return frame.sort(keys, nulls_last=True) if keys else frame


def test_every_keyed_rule_aggregates_by_key_part_as_ray_tasks_do(store: Store) -> None:
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, END, config)
    entries = catalogue.entries
    job = AggregateJob(
        source=store,
        window=window,
        entries=entries,
        contexts=contexts_of(catalogue, entries, window, config),
    )
    location = ray_engine._location(store)
    keyed = []
    for code, entry in entries.items():
        key = job.key(code)
        if key is None:
            continue
        keyed.append(code)
        ctx = dataclasses.replace(job.contexts[code], price=ray_engine._no_pricing)
        columns = tuple(job.column_exprs(code))
        task = ray_engine.RuleTask(code, entry.rule, ctx, columns, job.start(code), window.until)
        whole = ray_engine.aggregate_part(location, [task], task.since, task.until)[code]
        assert not isinstance(whole, str), f"{code}: {whole}"
        parts = [
            ray_engine.aggregate_part(location, [task], task.since, task.until, key, i, PARTS)[code]
            for i in range(PARTS)
        ]
        failed = [part for part in parts if isinstance(part, str)]
        assert not failed, f"{code}: {failed[0]}"
        merged_whole = _sorted(entry.rule.merge([whole], ctx))
        merged_parts = _sorted(entry.rule.merge(parts, ctx))
        assert merged_whole.height > 0 or code not in FAMILY_RULES, code  # cells to compare
        assert_frame_equal(merged_parts, merged_whole, check_exact=False, rel_tol=1e-9)
    assert set(keyed) >= FAMILY_RULES
