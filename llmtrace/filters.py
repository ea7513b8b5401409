"""Which calls a view looks at: ``--service``, ``--model``, ``--provider``, ``--prompt``,
``--action``, ``--environment`` with shell-style globs, shared by ``costs`` and ``audit``.

The options are a data table (``FILTERS``: option → call-record field), so a new field is one
line, and every command that takes filters gets it. Several values for one option (repeated, or
comma-separated) match any of them; different options must all match. A call whose field is
null matches no pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl

    from llmtrace.store import Store

# option name (without --) -> (call-record field, what it matches, an example; for --help)
FILTERS: dict[str, tuple[str, str, str]] = {
    "service": ("service", "service.name", "chat-*"),
    "model": ("model", "model", "gpt-4o*"),
    "provider": ("provider", "provider", "anthropic"),
    "prompt": ("prompt", "prompt (name@version or template fingerprint)", "checkout@*"),
    "action": ("action", "action", "contract-*"),
    "environment": ("environment", "deployment environment", "prod*"),
}


def split_values(values: Iterable[str]) -> tuple[str, ...]:
    """Repeated and comma-separated values as one tuple, blanks dropped, order kept."""
    out: list[str] = []
    for value in values:
        out += [part.strip() for part in value.split(",") if part.strip()]
    return tuple(dict.fromkeys(out))


def filter_expr(chosen: Mapping[str, Sequence[str]]) -> pl.Expr | None:
    """The Polars predicate for ``{option: patterns}`` (None when nothing is chosen)."""
    import polars as pl

    parts: list[pl.Expr] = []
    for option, patterns in chosen.items():
        if not patterns:
            continue
        field = FILTERS[option][0]
        regex = "|".join(f"(?:{_regex(p)})" for p in patterns)
        parts.append(pl.col(field).str.contains(regex).fill_null(False))
    if not parts:
        return None
    return pl.all_horizontal(parts)


def _regex(pattern: str) -> str:
    """A glob (``*``, ``?``, ``[abc]``, ``[!abc]``) as an anchored regex Polars' (Rust) regex
    engine reads; everything else is literal."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        end = pattern.find("]", i + 2) if char == "[" else -1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif end != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = re.sub(r"([\\\[\]^])", r"\\\1", body[1:] if negate else body)
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "(?s)^" + "".join(out) + "$"


def describe(chosen: Mapping[str, Sequence[str]]) -> str:
    """``service=chat-*, model=gpt-4o`` for titles and empty-window messages ('' if none)."""
    return ", ".join(f"{o}={'|'.join(p)}" for o, p in chosen.items() if p)


def apply(calls: pl.LazyFrame, chosen: Mapping[str, Sequence[str]]) -> pl.LazyFrame:
    """``calls`` restricted to the chosen patterns."""
    expr = filter_expr(chosen)
    return calls if expr is None else calls.filter(expr)


def filtered_store(store: Store, chosen: Mapping[str, Sequence[str]]) -> Store:
    """``store`` whose ``scan`` yields only the matching calls: what the audit engine reads, so
    its rules see the filtered calls without knowing about filters."""
    expr = filter_expr(chosen)
    if expr is None:
        return store
    from llmtrace.store import Store

    class FilteredStore(Store):
        def scan(self, *args: Any, **kwargs: Any) -> pl.LazyFrame:
            return super().scan(*args, **kwargs).filter(expr)

    filtered = FilteredStore.__new__(FilteredStore)
    filtered.__dict__.update(store.__dict__)
    return filtered
