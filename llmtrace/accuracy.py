"""Which evaluation scores count as accuracy, and what a categorical label is worth.

One definition for every place that turns scores into a call's ``accuracy``: the OTLP importer
(``gen_ai.evaluation.result`` events), the Langfuse importer (scores) and the audit (LT101
recomputes accuracy from stored scores when ``[accuracy] names`` is configured). Two imports of
the same evaluations therefore score a call alike, and a changed config means the same thing
everywhere.

Configuration (``llmtrace.toml`` or ``[tool.llmtrace]``)::

    [accuracy]
    names = ["accuracy", "correctness"]   # score names that count; default DEFAULT_NAMES

    [accuracy.categories]                 # label -> 0..1; replaces DEFAULT_CATEGORIES whole
    correct = 1
    partially_correct = 0.5
    incorrect = 0

Names and labels compare case-insensitively. A score that counts is worth its value when that
lies in [0, 1], else its label's value from the categories, else nothing; a call's accuracy is
the mean over the scores that are worth something, null when none is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import polars as pl

from llmtrace.config import Config, ConfigError, load_config

# Score names evaluators commonly use for "was the answer right".
DEFAULT_NAMES: tuple[str, ...] = (
    "accuracy",
    "correctness",
    "correct",
    "is_correct",
    "exact_match",
)
# Labels of categorical and pass/fail scores (OTel ``gen_ai.evaluation.score.label``, Langfuse
# CATEGORICAL scores) -> 0..1.
DEFAULT_CATEGORIES: Mapping[str, float] = MappingProxyType(
    {
        "correct": 1.0,
        "partially_correct": 0.5,
        "incorrect": 0.0,
        "pass": 1.0,
        "passed": 1.0,
        "fail": 0.0,
        "failed": 0.0,
        "true": 1.0,
        "false": 0.0,
        "yes": 1.0,
        "no": 0.0,
    }
)


@dataclass(frozen=True)
class AccuracyConfig:
    """Which scores are accuracy (``names``) and what each label is worth (``categories``).

    Both are lower-cased on construction. ``names_configured`` says whether the config named
    the scores: the audit then recomputes accuracy from stored scores, and otherwise trusts
    the ``accuracy`` column the importers wrote.
    """

    names: frozenset[str] = frozenset(DEFAULT_NAMES)
    categories: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_CATEGORIES))
    names_configured: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(str(n).lower() for n in self.names))
        lowered = {str(k).lower(): float(v) for k, v in self.categories.items()}
        object.__setattr__(self, "categories", lowered)

    @classmethod
    def from_config(cls, config: Config | None = None) -> AccuracyConfig:
        """``[accuracy] names`` and ``[accuracy.categories]`` of ``config`` (default: the one
        ``load_config()`` finds); absent keys keep the defaults. Raises ``ConfigError`` naming
        the file for a value of the wrong type or a category outside 0..1."""
        config = config if config is not None else load_config()
        section = config.section("accuracy")
        names = section.get("names")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)
        ):
            raise ConfigError(f"{config.path}: [accuracy] names must be a list of score names")
        categories = section.get("categories", DEFAULT_CATEGORIES)
        if not isinstance(categories, Mapping):
            raise ConfigError(f"{config.path}: [accuracy.categories] must be a table")
        for label, value in categories.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ConfigError(
                    f"{config.path}: [accuracy.categories] {label} = {value!r}: "
                    "expected a number from 0 to 1"
                )
        return cls(
            names=frozenset(DEFAULT_NAMES if names is None else names),
            categories=categories,
            names_configured=names is not None,
        )

    @classmethod
    def resolve(
        cls, names: Iterable[str] | None = None, categories: Mapping[str, float] | None = None
    ) -> AccuracyConfig:
        """The config's accuracy settings with ``names`` / ``categories`` given by a caller
        (an API argument) taking their place; the config is read only for what is not given."""
        if names is not None and categories is not None:
            return cls(frozenset(names), categories, names_configured=True)
        found = cls.from_config()
        return cls(
            frozenset(names) if names is not None else found.names,
            categories if categories is not None else found.categories,
            names_configured=names is not None or found.names_configured,
        )

    def score_value(self, name: pl.Expr, value: pl.Expr, label: pl.Expr) -> pl.Expr:
        """What one score is worth as accuracy (0..1), null when it does not count."""
        by_label = label.str.to_lowercase().replace_strict(
            dict(self.categories), default=None, return_dtype=pl.Float64
        )
        worth = pl.when(value.is_between(0.0, 1.0)).then(value).otherwise(by_label)
        return pl.when(name.str.to_lowercase().is_in(sorted(self.names))).then(worth)

    def from_scores(self, scores: str | pl.Expr = "scores") -> pl.Expr:
        """A call's accuracy from its ``scores`` list column (the record's score structs): the
        mean of what its scores are worth; null when none counts (or the list is null)."""
        column = pl.col(scores) if isinstance(scores, str) else scores
        score = pl.element().struct
        worth = self.score_value(score.field("name"), score.field("value"), score.field("label"))
        return column.list.eval(worth).list.mean()
