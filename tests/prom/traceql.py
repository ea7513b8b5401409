"""A TraceQL syntax checker for the subset dashboards use (Grafana's grammar is JavaScript only).

Grammar (after Grafana variables are substituted), following Tempo's TraceQL documentation:

    query      := spanset ( "|" stage )*
    spanset    := filter ( ( "&&" | "||" | ">>" | ">" | "<<" | "<" | "~" ) filter )*
    filter     := "{" [ expr ] "}"
    expr       := and ( "||" and )*
    and        := cmp ( "&&" cmp )*
    cmp        := operand [ ( "=" | "!=" | ">" | ">=" | "<" | "<=" | "=~" | "!~" ) operand ]
    operand    := "(" expr ")" | attribute | intrinsic | static
    stage      := "select" "(" attribute ( "," attribute )* ")"
                | aggregate "(" [ attribute ] ")" cmp-op static
                | "by" "(" attribute ")"  |  metrics-function "(" [ attribute ] ")" [ "by" "(" attrs ")" ]

Beyond syntax it enforces what Tempo silently gets wrong: an attribute compared with a number
must be compared with the literal of its type (``span.gen_ai.usage.cost > 1`` never matches a
float attribute, grafana/tempo#4332), and a regex (``=~``) needs a string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCOPES = ("span", "resource", "event", "link", "instrumentation", "trace")
INTRINSICS = {
    "status", "statusMessage", "kind", "name", "duration", "rootName", "rootServiceName",
    "traceDuration", "nestedSetLeft", "nestedSetRight", "nestedSetParent", "childCount",
}  # fmt: skip
STATUS_VALUES = {"ok", "error", "unset"}
KIND_VALUES = {"unspecified", "internal", "server", "client", "producer", "consumer"}
AGGREGATES = {"count", "avg", "min", "max", "sum"}
METRICS = {
    "rate", "count_over_time", "sum_over_time", "avg_over_time", "min_over_time",
    "max_over_time", "quantile_over_time", "histogram_over_time",
}  # fmt: skip
COMPARISONS = {"=", "!=", ">", ">=", "<", "<=", "=~", "!~"}
STRUCTURAL = {"&&", "||", ">>", ">", "<<", "<", "~", "!>>", "!>", "!<<", "!<", "!~"}
# Attributes llmtrace writes as doubles: a comparison with an int literal never matches.
FLOAT_ATTRIBUTES = re.compile(r"^(span\.)?(gen_ai\.usage\.cost|llmtrace\.cost\.\w+)$")

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<duration>\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))
    | (?P<float>\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)
    | (?P<int>\d+)
    | (?P<attr>(?:span|resource|event|link|instrumentation|trace)?\.[A-Za-z_][\w.\-/]*
                |(?:span|event|link|trace|instrumentation):[A-Za-z]+)
    | (?P<op>=~|!~|!=|>=|<=|&&|\|\||>>|<<|!>>|!<<|[{}()|,=<>~!+\-*/^%])
    | (?P<word>[A-Za-z_][\w]*)
    )""",
    re.VERBOSE,
)


class TraceQLError(ValueError):
    """The query does not parse (or compares a float attribute with an int)."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(query: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        if query[pos:].strip() == "":
            break
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            raise TraceQLError(f"unexpected character {query[pos:].lstrip()[:1]!r} at {pos}")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0

    # -- token helpers ------------------------------------------------------------------------

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, message: str) -> TraceQLError:
        token = self.peek()
        where = f"at {token.pos} ({token.text!r})" if token else "at the end"
        return TraceQLError(f"{message} {where} in {self.query!r}")

    def take(self, text: str | None = None, kind: str | None = None) -> Token:
        token = self.peek()
        if token is None or (text and token.text != text) or (kind and token.kind != kind):
            raise self.fail(f"expected {text or kind}")
        self.i += 1
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and token.text == text and token.kind in ("op", "word"):
            self.i += 1
            return True
        return False

    # -- grammar --------------------------------------------------------------------------------

    def query_(self) -> None:
        self.spanset()
        while self.accept("|"):
            self.stage()
        if self.peek() is not None:
            raise self.fail("unexpected token")

    def spanset(self) -> None:
        self.filter_()
        while (
            (token := self.peek()) is not None and token.kind == "op" and token.text in STRUCTURAL
        ):
            self.i += 1
            self.filter_()

    def filter_(self) -> None:
        if self.accept("("):
            self.spanset()
            self.take(")")
            return
        self.take("{")
        if not self.accept("}"):
            self.expr()
            self.take("}")

    def expr(self) -> None:
        self.and_()
        while self.accept("||"):
            self.and_()

    def and_(self) -> None:
        self.comparison()
        while self.accept("&&"):
            self.comparison()

    def comparison(self) -> None:
        left = self.operand()
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in COMPARISONS:
            self.i += 1
            right = self.operand()
            self._check_types(left, token.text, right)

    def operand(self) -> Token:
        token = self.peek()
        if token is None:
            raise self.fail("expected an attribute or a value")
        if token.text == "(" and token.kind == "op":
            self.i += 1
            self.expr()
            self.take(")")
            return token
        if token.kind == "op" and token.text == "-":  # negative number
            self.i += 1
            return self.take(kind=self.peek().kind if self.peek() else "int")
        if token.kind in ("attr", "string", "float", "int", "duration"):
            self.i += 1
            return token
        if token.kind == "word" and (
            token.text in INTRINSICS
            or token.text in STATUS_VALUES | KIND_VALUES
            or token.text in ("true", "false", "nil")
        ):
            self.i += 1
            return token
        raise self.fail("expected an attribute or a value")

    def _check_types(self, left: Token, op: str, right: Token) -> None:
        attribute, value = (left, right) if left.kind == "attr" else (right, left)
        if op in ("=~", "!~") and right.kind != "string":
            raise self.fail(f"{op} needs a string regex")
        if attribute.kind == "attr" and FLOAT_ATTRIBUTES.match(attribute.text.lstrip(".")):
            if value.kind == "int":
                raise TraceQLError(
                    f"{attribute.text} is a float: compare it with a float literal "
                    f"({value.text}.0), an int never matches (grafana/tempo#4332)"
                )
            if value.kind not in ("float", "attr", "word") or value.text == "true":
                raise TraceQLError(f"{attribute.text} compared with {value.text!r}")

    def attribute_list(self) -> None:
        self.take(kind="attr") if self.peek() and self.peek().kind == "attr" else self._intrinsic()
        while self.accept(","):
            self.take(
                kind="attr"
            ) if self.peek() and self.peek().kind == "attr" else self._intrinsic()

    def _intrinsic(self) -> None:
        token = self.take(kind="word")
        if token.text not in INTRINSICS:
            self.i -= 1
            raise self.fail("expected an attribute")

    def stage(self) -> None:
        token = self.take(kind="word")
        name = token.text
        if name in ("select", "by"):
            self.take("(")
            self.attribute_list()
            self.take(")")
        elif name in AGGREGATES:
            self.take("(")
            if not self.accept(")"):
                self.take(kind="attr")
                self.take(")")
            op = self.take(kind="op")
            if op.text not in COMPARISONS - {"=~", "!~"}:
                raise self.fail("expected a comparison after the aggregate")
            self.operand()
        elif name in METRICS:
            self.take("(")
            if not self.accept(")"):
                self.take(kind="attr")
                self.take(")")
            if self.accept("by"):
                self.take("(")
                self.attribute_list()
                self.take(")")
        else:
            self.i -= 1
            raise self.fail("unknown pipeline stage")


def check(query: str) -> None:
    """Raise ``TraceQLError`` unless ``query`` is valid TraceQL of the supported subset."""
    if not query.strip():
        raise TraceQLError("empty query")
    _Parser(query).query_()


def attributes(query: str) -> list[str]:
    """Scoped attribute names (``span.x``, ``resource.y``) a query uses, in order."""
    return [t.text for t in tokenize(query) if t.kind == "attr"]
