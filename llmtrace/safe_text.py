"""Make text from telemetry safe to print: one helper every report and problem line uses.

Span ids, prompt names, models and messages come from other people's data. Printed raw, a
newline in a span id forges a second ``FILE:LINE:`` problem line, an ANSI escape sequence
recolours or clears the user's terminal, and a right-to-left override (U+202E) makes text
read backwards. ``escape`` turns every such character into a visible escape (``\\n``,
``\\x1b``, ``\\u202e``) so what is printed is one line that shows what the data held.

Escaped: C0 controls (tab and newline included), DEL, C1 controls, the Unicode bidirectional
controls (embeddings, overrides, isolates, marks), line/paragraph separators, zero-width
joiners and the BOM, and lone surrogates (which cannot be encoded as UTF-8 at all).
"""

from __future__ import annotations

from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}

_UNSAFE: list[int] = [
    *range(0x00, 0x20),
    0x7F,
    *range(0x80, 0xA0),
    0x061C,  # Arabic letter mark
    *range(0x200B, 0x2010),  # zero-width space/joiners, LRM, RLM
    0x2028,  # line separator
    0x2029,  # paragraph separator
    *range(0x202A, 0x202F),  # LRE, RLE, PDF, LRO, RLO
    *range(0x2066, 0x206A),  # LRI, RLI, FSI, PDI
    0xFEFF,
    *range(0xD800, 0xE000),  # surrogates: only lone ones survive decoding
]


def _escape_of(code: int) -> str:
    char = chr(code)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_TABLE = {code: _escape_of(code) for code in _UNSAFE}
# The backslash is escaped only where the text also held something unsafe, so ordinary
# Windows paths print unchanged; an escaped line can then be read back unambiguously.
_TABLE_WITH_BACKSLASH = {**_TABLE, ord("\\"): "\\\\"}
_UNSAFE_SET = frozenset(chr(code) for code in _UNSAFE)


def is_safe(text: str) -> bool:
    """Whether ``text`` prints as itself (no control, bidi or surrogate character)."""
    return _UNSAFE_SET.isdisjoint(text)


def escape(value: Any) -> str:
    """``value`` as a one-line string with control, bidi and surrogate characters escaped."""
    text = value if isinstance(value, str) else str(value)
    if is_safe(text):
        return text
    return text.translate(_TABLE_WITH_BACKSLASH)


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (keys given in a host URL
    must not reach logs, output or file names)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def escape_optional(value: Any) -> str | None:
    """``escape`` that keeps ``None``."""
    return None if value is None else escape(value)


__all__ = ["escape", "escape_optional", "is_safe", "redact_url"]
