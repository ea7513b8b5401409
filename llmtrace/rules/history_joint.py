"""LT202's and LT301's aggregates of one part from one replay of its conversations.

Why: both rules sort a part's conversation turns by (conversation, time) and replay LT202's
breakpoint layouts over them (``history_replay.replay_turns``). Run one after the other, each
read the part, sorted and replayed the same turns again (on the 10M window's spill, ~0.3 of
the ~1.3 CPU-s the two took per part). When the engine runs both over the same parts it builds
their plans here, from one read of the part and one replay, and collects them together
(``JointParts``).

Exact, not approximate: LT202's turns are LT301's conversation turns on a provider whose
caching LT202 models, replayed with LT202's model facts (``minimum`` with Gemini's implicit
caching, ``step``). A conversation replays from its own turns alone, in time order (the
previous turn, the last 1-hour anchor since the history last changed: ``replay_turns``), and
the replay's sort is stable. So a conversation whose every turn is on such a provider, with the
same facts under both rules ("shared"), replays the same for both: LT202 takes those turns from
LT301's replay (and drops a conversation wholly on providers it does not model, as it always
does). A part with any other conversation (a Gemini turn, whose facts differ; providers LT202
does and does not model in one conversation) gets LT202's own aggregate instead, as if the
rules ran apart. On the 10M demo window no part has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import polars as pl

from llmtrace.rules import lt202_history, lt301_cells, lt301_context
from llmtrace.rules.base import AuditContext
from llmtrace.rules.caching_model import min_tokens_expr, normalised_model_expr
from llmtrace.rules.history_replay import default_step, replay_turns
from llmtrace.rules.partition import present_columns

JOINT = ("LT202", "LT301")

Build = Callable[[str, pl.LazyFrame], pl.LazyFrame]


def joint_aggregates(
    calls: pl.LazyFrame, contexts: Mapping[str, AuditContext]
) -> tuple[dict[str, pl.LazyFrame], pl.LazyFrame]:
    """LT202's and LT301's aggregates of ``calls`` (a part holding both rules' columns) from one
    read and one replay, and a one-value frame: how many turns LT202 would replay otherwise
    (see the module docstring). LT301's frame is what its own ``aggregate`` gives (up to row
    order and float rounding), and LT202's too when that count is 0; otherwise it is not."""
    ctx = contexts["LT301"]
    params = lt301_cells.Params.from_mapping(ctx.params)
    base = lt301_cells.base_calls(calls, ctx).cache()
    keys = base.group_by("_k").agg(pl.col(*lt301_cells.KEY).first())
    facts = lt202_history.model_facts()
    kept = pl.col("provider").is_in(lt202_history.MODELLED)  # LT202's filter, by prompt key
    same_facts = min_tokens_expr(normalised_model_expr()).eq_missing(facts["minimum"]) & (
        default_step(facts["explicit"]) == facts["step"]
    ).fill_null(False)
    extra = {"_kept": kept, "_shared": kept & same_facts}
    conversations = lt301_cells.conversation_turns(base, keys, extra)
    replayed = replay_turns(conversations.rename({"input": "L"})).cache()
    lt301 = lt301_cells.cells_from_replay(base, keys, replayed.drop(*extra), params)
    lt202 = lt202_history.cells_from_replay(
        replayed.filter(pl.col("_shared")).select(lt202_history.REPLAYED), keys
    )
    shared = pl.col("_shared")
    # a turn LT202 keeps with other facts, or a conversation that is shared only in part (its
    # turns are adjacent, in time order: a change of the flag within one)
    otherwise = (pl.col("_kept") & ~shared) | (~pl.col("first") & (shared != shared.shift(1)))
    check = replayed.select(otherwise.fill_null(False).sum().alias("otherwise"))
    return {"LT202": lt202, "LT301": lt301}, check


def applies(entries: Mapping[str, Any], contexts: Mapping[str, AuditContext]) -> bool:
    """Both built-in rules chosen, over the same window (a custom rule under either code, or
    other windows, run on their own)."""
    rules = {"LT202": lt202_history.RULE, "LT301": lt301_context.RULE}
    if any(code not in entries or entries[code].rule is not rules[code] for code in JOINT):
        return False
    first, second = (contexts[code] for code in JOINT)
    return (first.since, first.until) == (second.since, second.until)


class JointParts:
    """The engine's aggregate of a part for each of ``JOINT``: the first one asked for a part
    builds both plans (``joint_aggregates`` over ``columns`` of the part) and collects them
    with one ``collect_all``; each code then gets its frame. If building or collecting fails,
    each code runs its own aggregate (``own``), so a failing rule is named by its own plan."""

    def __init__(
        self, contexts: Mapping[str, AuditContext], columns: list[str], own: Build
    ) -> None:
        self._contexts, self._columns, self._own = contexts, columns, own
        self._part: pl.LazyFrame | None = None
        self._frames: dict[str, pl.DataFrame] = {}

    def aggregate(self, code: str, part: pl.LazyFrame) -> pl.LazyFrame:
        """``code``'s aggregate over ``part`` (a frame already collected, as a LazyFrame)."""
        if part is not self._part:
            self._part, self._frames = part, {}
            try:
                plans, check = joint_aggregates(
                    part.select(present_columns(part, self._columns)), self._contexts
                )
                *frames, otherwise = pl.collect_all([*plans.values(), check])
                self._frames = dict(zip(plans, frames, strict=True))
                if otherwise.item() > 0:  # LT202's own replay of the part (see the module)
                    del self._frames["LT202"]
            except Exception:  # each rule's own plan reports what failed
                self._frames = {}
        frame = self._frames.pop(code, None)
        return frame.lazy() if frame is not None else self._own(code, part)
