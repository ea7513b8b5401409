"""What the cost span processor keeps per span: in-progress spans (app thread), the items it
queues for its worker, actions being summed and spans held back for a twin (worker)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


class LiveSpan:
    """What is known about a span still in progress: its parent, whether it looks like an LLM
    call, its trace's local root (span id and name, the default ``action``) and, on a local
    root's own entry, whether LLM calls ended under it (so its end closes an action)."""

    __slots__ = ("parent", "llm", "root_name", "root", "calls", "agent", "run")

    def __init__(
        self,
        parent: int | None,
        llm: bool,
        root_name: str | None,
        root: int | None,
        agent: str | None = None,
        run: int | None = None,
    ) -> None:
        self.parent = parent
        self.llm = llm
        self.root_name = root_name
        self.root = root
        self.calls = False
        self.agent = agent  # the innermost agent (an invoke_agent span) this span runs in
        self.run = run  # that agent span's id (else the local root's): where tools are matched


class Job:
    """One LLM span on its way from ``on_end`` (app thread) to the worker.

    ``root_id`` is the local root whose action the call belongs to (None when unknown or when
    the root had already ended); ``is_root`` says the LLM span is that root itself, so its own
    processing closes the action.
    """

    __slots__ = ("span", "span_id", "root_name", "ancestor_id", "llm_at_start", "root_id",
                 "is_root", "agent", "tool")  # fmt: skip

    def __init__(
        self,
        span: ReadableSpan,
        span_id: int,
        root_name: str | None,
        ancestor_id: int | None,
        llm_at_start: bool,
        root_id: int | None = None,
        is_root: bool = False,
    ) -> None:
        self.span = span
        self.span_id = span_id
        self.root_name = root_name
        self.ancestor_id = ancestor_id
        self.llm_at_start = llm_at_start
        self.root_id = root_id
        self.is_root = is_root
        self.agent: str | None = None
        self.tool: str | None = None


class ActionEnd:
    """A local root that is not an LLM call ended with LLM calls under it: close its action.

    Queued behind the jobs of those calls (they ended first), so the worker has priced them all
    by the time it gets here."""

    __slots__ = ("root_id",)

    def __init__(self, root_id: int) -> None:
        self.root_id = root_id


class Flush:
    """``force_flush``'s marker: the worker sets ``done`` when it gets to it (FIFO)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class Action:
    """The calls of one action instance priced so far (worker only)."""

    __slots__ = ("call", "cost", "calls", "unpriced")

    def __init__(self, call: Mapping[str, Any]) -> None:
        self.call = call  # the first call: service, environment and action labels
        self.cost = 0.0
        self.calls = 0
        self.unpriced = 0


# Fields a priced twin takes from the held span of the same call when it lacks them.
FROM_HELD_TWIN = (
    "request_model",
    "model",
    "response_id",
    "conversation_id",
    "user_id",
    "prompt_name",
    "prompt_version",
    "prompt",
    "reasoning_effort",
    "action",
    "service_tier",
)


class Parked:
    """A span held back by ``_park`` with what is needed to finish it later."""

    __slots__ = ("deadline", "job", "span", "call", "extra")

    def __init__(
        self,
        deadline: float,
        job: Job,
        span: ReadableSpan,
        call: dict[str, Any],
        extra: dict[str, Any],
    ) -> None:
        self.deadline = deadline
        self.job = job
        self.span = span
        self.call = call
        self.extra = extra
