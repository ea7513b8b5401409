"""``llmtrace audit --format html`` end to end: ``llmtrace demo`` into a real store, the real CLI.

The page must show every finding with its saving, draw bars proportional to the savings, keep
inconclusive savings out of the total, fetch nothing from the network, nest its tags properly and
show hostile data (a prompt called ``<script>``, markup in a custom rule) as text, never as markup.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from test_audit_cli import isolated, run  # noqa: F401  (autouse: no developer config leaks in)

from llmtrace.commands.audit import audit
from llmtrace.commands.demo import demo
from llmtrace.config import CONFIG_ENV
from llmtrace.demo import NO_FINDING, PLANTED
from llmtrace.report import render
from llmtrace.report.html import EVIDENCE_CHARTS
from llmtrace.report.text import money
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult, AuditWindow, RuleError
from llmtrace.store import Store

UNTIL = ["--until", "2026-11-20"]
EVIL = "<script>alert(1)</script>\"'&"
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"}
# Every tag and attribute the renderer writes; anything else was injected by the data.
TAGS = {
    *("html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "strong"),
    *("div", "ul", "li", "figure", "figcaption", "svg", "rect", "line", "text", "table"),
    *("caption", "thead", "tbody", "tfoot", "tr", "th", "td", "a", "span", "section"),
    *("code", "footer"),
}
ATTRIBUTES = {
    *("lang", "charset", "name", "content", "class", "id", "href", "viewbox", "width"),
    *("height", "role", "aria-label", "x", "y", "x1", "y1", "x2", "y2", "fill", "stroke"),
    *("stroke-width", "stroke-dasharray", "text-anchor", "font-size", "font-weight", "scope"),
}


class Page(HTMLParser):
    """Parses a page and records its tags, attributes, text and any nesting error.

    The renderer closes every element it opens (SVG shapes as ``<line/>``), so a strict stack
    check is the right test: an unclosed or misnested tag is a bug, not a browser's problem.
    """

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(source)
        self.close()
        self.errors += [f"unclosed <{tag}>" for tag in self.stack]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and (cls is None or cls in (attrs.get("class") or "").split())
        ]


def audit_to(store: Path, out: Path, *args: str) -> str:
    result = run(audit, "--store", str(store), *UNTIL, "--format", "html", "-o", str(out), *args)
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """14 days of demo calls, made by ``llmtrace demo``."""
    path = tmp_path_factory.mktemp("html") / "store"
    args = ["--store", str(path), "--end", "2026-11-20"]
    result = CliRunner().invoke(demo, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def reports(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """The HTML and the JSON report of the same audit (all built-in rules)."""
    where = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        patch.delenv(CONFIG_ENV, raising=False)
        patch.delenv("LLMTRACE_PRICES", raising=False)
        page = audit_to(demo_store, where / "audit.html")
        data = json.loads(audit_to_json(demo_store))
    return page, data


def audit_to_json(store: Path) -> str:
    result = run(audit, "--store", str(store), *UNTIL, "--format", "json")
    assert result.exit_code == 0, result.output
    return result.stdout


def saving_text(finding: dict) -> str:
    amount = money(finding["monthly_savings_usd"])
    return f"({amount})" if finding["severity"] == "info" else amount


def section(page: str, index: int) -> str:
    match = re.search(rf'<section class="finding" id="finding-{index}">(.*?)</section>', page)
    assert match, f"no section {index}"
    return match.group(1)


def test_every_finding_has_a_section_with_rule_prompt_and_saving(reports) -> None:
    page, data = reports
    findings = sorted(data["findings"], key=lambda f: -f["monthly_savings_usd"])
    planted = {p.rule for p in PLANTED if p.expected != NO_FINDING}
    assert {f["rule"] for f in findings} == planted | {"LT503"}
    for index, finding in enumerate(findings, 1):
        body = section(page, index)
        assert finding["rule"] in body
        # LT503 is about a service's agent sessions, not one prompt
        assert html.escape(finding["prompt"] or f"service {finding['service']}") in body
        assert f"{html.escape(saving_text(finding))} per month" in body
        assert "Fix:" in body and "<caption>Evidence</caption>" in body
    assert f'id="finding-{len(findings) + 1}"' not in page


def test_bar_chart_has_one_proportional_bar_per_finding(reports) -> None:
    page, data = reports
    savings = sorted((f["monthly_savings_usd"] for f in data["findings"]), reverse=True)
    bars = Page(page).find("rect", "bar")
    assert len(bars) == len(savings)
    widths = [float(bar["width"] or "nan") for bar in bars]
    assert widths == sorted(widths, reverse=True)  # largest first
    per_dollar = widths[0] / savings[0]
    for width, saving in zip(widths, savings, strict=True):
        assert width == pytest.approx(saving * per_dollar, rel=1e-3, abs=0.02)
    severities = [
        f["severity"] for f in sorted(data["findings"], key=lambda f: -f["monthly_savings_usd"])
    ]
    fills = {sev: bar["fill"] for sev, bar in zip(severities, bars, strict=True)}
    assert len(set(fills.values())) == len(fills)  # one colour per severity


def test_info_saving_is_bracketed_and_left_out_of_the_total(reports) -> None:
    page, data = reports
    info = [f for f in data["findings"] if f["severity"] == "info"]
    assert info, "the demo plants an inconclusive LT101 case"
    counted = sum(f["monthly_savings_usd"] for f in data["findings"] if f["severity"] != "info")
    assert data["total_monthly_savings_usd"] == pytest.approx(counted, abs=1e-3)
    total = re.search(r'<p class="total">.*?<strong>(.*?) per month</strong>', page)
    assert total and total.group(1) == money(data["total_monthly_savings_usd"])
    everything = data["total_monthly_savings_usd"] + sum(f["monthly_savings_usd"] for f in info)
    assert money(everything) != total.group(1)
    footer = re.search(r"<tfoot>.*?Total.*?<td class=\"num\">(.*?)</td>", page)
    assert footer and footer.group(1) == total.group(1)
    for finding in info:
        assert f"({money(finding['monthly_savings_usd'])})" in page
    assert "not in the total" in page


def test_page_is_self_contained_and_well_formed(reports) -> None:
    page, _ = reports
    assert page.startswith("<!DOCTYPE html>")
    parsed = Page(page)
    assert parsed.errors == []
    assert {tag for tag, _ in parsed.tags} <= TAGS
    assert not parsed.find("script") and not parsed.find("link") and not parsed.find("img")
    for _, attrs in parsed.tags:
        assert "src" not in attrs
        for value in attrs.values():
            assert "://" not in (value or "")
        assert (attrs.get("href") or "#").startswith("#")
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style and "url(" not in style.group(1) and "@import" not in style.group(1)


def test_charts_carry_their_numbers_and_units(reports) -> None:
    page, data = reports
    parsed = Page(page)
    charts = [c for c in parsed.find("svg") if c.get("class") != "spark"]  # sparklines aside
    pictured = [f for f in data["findings"] if f["rule"] in EVIDENCE_CHARTS]
    assert len(charts) == 1 + len(pictured)  # savings + one per finding of a pictured rule
    assert all(c["role"] == "img" and c["aria-label"] for c in charts)
    labels = [c["aria-label"] or "" for c in charts]
    assert all(f["rule"] in labels[0] for f in data["findings"])
    text = " ".join(parsed.text)
    for unit in ("USD/month", "tokens", "share"):
        assert unit in text
    lt201 = next(f for f in data["findings"] if f["rule"] == "LT201")
    assert len(parsed.find("rect", "gap")) == len(lt201["evidence"]["inter_arrival"]["histogram"])
    assert "short cache TTL 5m" in text
    assert "no labels" in text  # the unverified LT101 case has no accuracy labels
    assert "CI of gain" in text
    assert "model of the fit" in text and "Not measured points" in " ".join(labels)


def test_stdout_and_exit_codes_as_other_formats(demo_store: Path, reports) -> None:
    _, data = reports
    total = data["total_monthly_savings_usd"]
    base = ["--store", str(demo_store), *UNTIL, "--format", "html"]
    printed = run(audit, *base)
    assert printed.exit_code == 0
    assert printed.stdout.startswith("<!DOCTYPE html>") and printed.stdout.rstrip().endswith(
        "</html>"
    )
    assert run(audit, *base, "--fail-on-savings", str(total / 2)).exit_code == 1
    assert run(audit, *base, "--fail-on-savings", str(total * 2)).exit_code == 0
    assert "--format html" in run(audit, "--help").stdout


def test_no_findings_page(demo_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    # an hour of calls and the one rule that needs a baseline, which that hour lacks
    window = ["--since", "2026-11-19 12:00", "--until", "2026-11-19 13:00", "--select", "LT101"]
    result = run(audit, "--store", str(demo_store), *window, "--format", "html", "-o", str(out))
    assert result.exit_code == 0
    page = out.read_text()
    assert "No findings in " in page
    parsed = Page(page)
    assert parsed.errors == [] and not parsed.find("svg") and not parsed.find("table")


@pytest.fixture
def evil_store(demo_store: Path, tmp_path: Path) -> Path:
    """The demo calls with one prompt renamed to markup, and a custom rule full of markup."""
    calls = Store(demo_store).scan().collect()
    renamed = calls.with_columns(
        pl.when(pl.col("prompt") == "clause-risk@v5")
        .then(pl.lit(EVIL))
        .otherwise(pl.col("prompt"))
        .alias("prompt")
    )
    path = tmp_path / "evil"
    Store(path).append(renamed)
    (tmp_path / "evil.yaml").write_text(
        "code: X666\n"
        "name: '<img src=x onerror=alert(2)>'\n"
        "summary: s\n"
        "severity: high\n"
        "where: \"model = 'o3'\"\n"
        "group_by: [prompt, model, service]\n"
        "saving: SUM(total_cost)\n"
        "message: '<b onmouseover=\"alert(3)\">{calls}</b> calls of {prompt}'\n"
        "doc: {what: w, why: y, fix: '<iframe src=\"https://evil.example\"></iframe>'}\n"
    )
    (tmp_path / "llmtrace.toml").write_text('[rules]\ncustom = ["evil.yaml"]\n')
    return path


def assert_inert(page: str) -> Page:
    """No tag, attribute or URL the data carried made it into the markup."""
    assert EVIL not in page and "<script" not in page.lower()
    assert "<img" not in page and "<iframe" not in page and "<b " not in page
    parsed = Page(page)
    assert parsed.errors == []
    assert {tag for tag, _ in parsed.tags} <= TAGS
    for _, attrs in parsed.tags:
        assert set(attrs) <= ATTRIBUTES
        assert not any(name.startswith("on") for name in attrs)
        assert (attrs.get("href") or "#").startswith("#")
    return parsed


def test_markup_in_the_data_is_shown_as_text(evil_store: Path, tmp_path: Path) -> None:
    result = run(audit, "--store", str(evil_store), *UNTIL, "--format", "html", "-o", "evil.html")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "evil.html").read_text()
    parsed = assert_inert(page)
    text = "".join(parsed.text)
    assert EVIL in text  # the prompt is shown, as text
    assert "<img src=x onerror=alert(2)>" in text and "<b onmouseover=" in text
    assert html.escape(EVIL, quote=True) in page
    labels = " ".join(a["aria-label"] or "" for a in parsed.find("svg"))
    assert f"LT101 {EVIL}" in labels and "X666" in labels  # in attributes, escaped


def test_markup_in_evidence_keys_values_and_arm_names() -> None:
    """Evidence reaches SVG text, titles and the definition table: all escaped."""
    since = datetime(2026, 11, 13, tzinfo=UTC)
    until = since + timedelta(days=7)
    evidence = {
        "arm_a": EVIL,
        "arm_b": "<svg onload=alert(4)>",
        "mean_reasoning_a": 100.0,
        "mean_reasoning_b": 300.0,
        "accuracy_a": 0.8,
        "accuracy_b": 0.81,
        "accuracy_gain_lower": -0.05,
        "accuracy_gain_upper": 0.07,
        EVIL: {"<i>": EVIL},
    }
    findings = [
        Finding(
            rule=rule,
            name=EVIL,
            severity="medium",
            prompt=EVIL,
            model=EVIL,
            service=EVIL,
            window_start=since,
            window_end=until,
            monthly_savings_usd=saving,
            message=EVIL,
            fix=EVIL,
            evidence=dict(evidence),
            key={EVIL: EVIL},
        )
        for rule, saving in (("LT101", 50.0), ("Z1", 25.0))
    ]
    window = AuditWindow(since, until, since - timedelta(days=7), since)
    result = AuditResult(findings, ["LT101", "Z1"], 10, window, [RuleError(EVIL, EVIL)])
    page = render(result, "html")
    parsed = assert_inert(page)
    assert "<h2>Errors</h2>" in page
    assert "<svg onload" not in page and "<i>" not in page
    assert len(parsed.find("svg")) == 2  # savings + LT101; the unknown rule gets a table only
    assert "".join(parsed.text).count(EVIL) >= 10


def test_the_chart_shows_the_largest_findings_and_the_table_all() -> None:
    """Hundreds of findings would make the chart a wall of slivers: it keeps the largest
    ``CHART_MAX_FINDINGS``, says how many more there are, and the table still lists all."""
    from llmtrace.report.html import CHART_MAX_FINDINGS

    since = datetime(2026, 11, 13, tzinfo=UTC)
    until = since + timedelta(days=7)
    count = CHART_MAX_FINDINGS + 12
    findings = [
        Finding(rule="Z1", name="custom", severity="low", prompt=f"p{i}", model="m",
                service="s", window_start=since, window_end=until,
                monthly_savings_usd=float(i + 1), message="m", fix="f")
        for i in range(count)
    ]  # fmt: skip
    window = AuditWindow(since, until, since - timedelta(days=7), since)
    page = render(AuditResult(findings, ["Z1"], 10, window, []), "html")
    parsed = assert_inert(page)
    bars = parsed.find("rect", "bar")
    assert len(bars) == CHART_MAX_FINDINGS
    assert "The 12 smaller finding(s) are in the table." in page
    assert all(f'id="finding-{i}"' in page for i in range(1, count + 1))
    shown = {t for t in parsed.text if t.startswith("Z1 p")}
    assert f"Z1 p{count - 1}" in shown and "Z1 p0" not in shown  # the largest, not the first
