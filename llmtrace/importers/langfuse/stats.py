"""What an import did (``ImportStats``) and the progress hooks a command implements
(``ImportReporter``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

_MAX_PROBLEMS = 10


@dataclass
class ImportStats:
    """What an import did; the command prints it, tests check it."""

    host: str
    api: str = "v2"
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    resumed: bool = False
    pages: int = 0
    observations: int = 0
    calls: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)
    scores: int = 0
    calls_with_scores: int = 0
    calls_with_accuracy: int = 0
    scores_new_calls: int = 0
    scores_stored_calls: int = 0
    scores_present: int = 0
    scores_unmatched: int = 0
    # scores edited at Langfuse since a stored call got them: the new version replaced the old
    scores_replaced: int = 0
    calls_rescored: int = 0
    prompt_versions: int = 0
    price_status: Counter[str] = field(default_factory=Counter)
    usage_mismatch: int = 0
    total_cost: float = 0.0
    reported_cost: float = 0.0
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0
    retries: int = 0
    watermark: datetime | None = None
    # scores skipped because a value could not be read (each also in ``problems``)
    scores_rejected: int = 0

    def problem(self, message: str) -> None:
        """Keep the first few problems verbatim; the count says how many there were."""
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)


class ImportReporter:
    """Hooks the command uses to show progress; every method is optional (no-op here)."""

    def notice(self, message: str) -> None:
        """Something the user should read once (fallback to old endpoints, a skipped row)."""

    def stage(self, description: str) -> None:
        """A new phase started (reading scores, a type pass)."""

    def fetched(self, stats: ImportStats) -> None:
        """A page arrived and is about to be stored."""

    def stored(self, stats: ImportStats) -> None:
        """A page was stored and the checkpoint moved past it."""

    def waiting(self, seconds: float, reason: str) -> None:
        """About to sleep ``seconds`` before a retry."""
