"""Render the README's sample outputs and the audit pictures from one seeded demo store.

Every fenced block in README.md preceded by a marker line

    <!-- render: llmtrace costs --by model --since 2026-10-21 --until 2026-11-20 -->

is replaced by what that command prints (``$ command`` on its first line), run against a demo
store made by ``llmtrace demo --end 2026-11-20`` (seed 7): the same calls, the same dates and
the same figures on every machine, because the windows are explicit. ``<!-- render: COLUMNS=150
llmtrace ... -->`` sets the terminal width rich lays the table out for (default 100).
``<!-- render[SCENE]: llmtrace ... -->`` runs the command in a scene set up by ``SCENES`` (a
copy of the demo store with a price file for ``reprice``, a store of service-tier calls, the
loopback billing server of tests/billing_server.py serving the demo store's bill for
``reconcile``), so those samples are real runs too. The
pictures (docs/audit-report.html, docs/audit-savings.svg) come from the same store with
``SOURCE_DATE_EPOCH`` fixing the report's "generated at". tests/test_readme.py fails when the
README differs from what this produces.

    python docs/render_readme.py            # rewrite README.md and the pictures
    python docs/render_readme.py --check    # exit 1 and show the difference if out of date

docs/cost-overview.png needs Prometheus and matplotlib: docs/render_cost_overview.py.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
README = ROOT / "README.md"
DEMO_END = "2026-11-20"
# 2026-11-20 00:00 UTC: the report's "generated at", so the pictures do not change every run
SOURCE_DATE_EPOCH = "1795132800"
DEFAULT_COLUMNS = 100
MARKER = re.compile(
    r"^<!-- render(?:\[(?P<scene>[\w-]+)\])?: (?P<command>.+?) -->\n```[^\n]*\n.*?^```\n",
    re.M | re.S,
)
# the README's price file: Anthropic's Claude models at half the list price
HALF_CLAUDE = '[[price]]\nmodel = "claude-*"\nmultiplier = 0.5\n'
ADMIN_KEY = "sk-admin-test-0123456789abcdef"  # the loopback billing server's key, not a secret

sys.path.insert(0, str(DOCS))
from render_audit_report import standalone_savings_chart  # noqa: E402


def environment(columns: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMTRACE_", "OTEL_", "LANGFUSE_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        COLUMNS=str(columns),
        LINES="50",
        TERM="dumb",
        NO_COLOR="1",
        SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH,
        PYTHONPATH=str(ROOT),
    )
    env.pop("FORCE_COLOR", None)
    return env


def run(
    words: list[str],
    workdir: Path,
    columns: int = DEFAULT_COLUMNS,
    env: dict[str, str] | None = None,
) -> str:
    """``llmtrace WORDS`` in ``workdir`` (whose ./.llmtrace is the demo store): its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "llmtrace.cli", *words],
        cwd=workdir,
        env={**environment(columns), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"llmtrace {shlex.join(words)} failed: {done.stderr}")
    return done.stdout


def make_store(workdir: Path) -> None:
    """The seeded demo store every sample reads (./.llmtrace in ``workdir``)."""
    run(["demo", "--end", DEMO_END], workdir)


# -- scenes: samples that need more than the demo store ------------------------------------------


def _copy_of_demo(workdir: Path, name: str) -> Path:
    """A scene's own folder holding a copy of the demo store (so a command that writes, such
    as reprice, leaves the other samples' store as it was)."""
    scene = workdir / "scenes" / name
    if not scene.exists():
        shutil.copytree(workdir / ".llmtrace", scene / ".llmtrace")
    return scene


def _reprice_scene(workdir: Path, stack: ExitStack) -> tuple[Path, dict[str, str]]:
    """The demo store with ``claude-*`` at half price in prices.toml, named by llmtrace.toml."""
    scene = _copy_of_demo(workdir, "reprice")
    (scene / "prices.toml").write_text(HALF_CLAUDE)
    (scene / "llmtrace.toml").write_text('prices = "prices.toml"\n')
    return scene, {}


# (tier, provider, model, calls, reasoning tokens per call): the service-tier example's calls
TIER_CALLS = [
    ("standard", "openai", "gpt-4o", 400, 0),
    ("batch", "anthropic", "claude-sonnet-4-5", 200, 0),
    ("flex", "openai", "o3", 300, 600),  # genai-prices prices o3 flex (from 2026-10-12)
    ("flex", "openai", "gpt-4o", 120, 0),  # no flex price for gpt-4o: stays unpriced
    ("priority", "anthropic", "claude-sonnet-4-5", 50, 0),  # nor priority for sonnet
]
TIER_DAY = "2026-12-02T12:00:00+00:00"


def _tiers_scene(workdir: Path, stack: ExitStack) -> tuple[Path, dict[str, str]]:
    """A store of calls on each service tier (12k input tokens, 4k of them cache reads, 900
    output), priced as an import would price them."""
    from datetime import datetime

    import polars as pl

    from llmtrace.pricing import PriceBook, price_calls
    from llmtrace.store import Store

    scene = workdir / "scenes" / "tiers"
    if not (scene / ".llmtrace").exists():
        at = datetime.fromisoformat(TIER_DAY)
        rows = [
            {
                "trace_id": f"tier-{tier}-{model}-{i}",
                "span_id": f"s{i}",
                "provider": provider,
                "model": model,
                "service_tier": tier,
                "start_time": at,
                "input_tokens": 12_000,
                "cache_read_tokens": 4_000,
                "output_tokens": 900,
                "reasoning_tokens": reasoning,
            }
            for tier, provider, model, count, reasoning in TIER_CALLS
            for i in range(count)
        ]
        Store(scene / ".llmtrace").append(price_calls(pl.DataFrame(rows), PriceBook()))
    return scene, {}


def _billing_scene(provider: str, cost_factor: float):
    """The loopback billing server (tests/billing_server.py) serving ``provider``'s usage and
    cost reports for the demo store's calls, billed at ``cost_factor`` x list; the command
    reaches it through the provider's base-URL variable, so the shown command has no port."""

    def scene(workdir: Path, stack: ExitStack) -> tuple[Path, dict[str, str]]:
        sys.path.insert(0, str(ROOT / "tests"))
        try:
            from billing_server import BillingServer
        finally:
            sys.path.remove(str(ROOT / "tests"))
        from llmtrace.store import Store

        calls = Store(workdir / ".llmtrace").scan().collect()
        server = stack.enter_context(
            BillingServer(calls, provider, key=ADMIN_KEY, cost_factor=cost_factor)
        )
        upper = provider.upper()
        return workdir, {f"{upper}_ADMIN_KEY": ADMIN_KEY, f"{upper}_BASE_URL": server.base_url}

    return scene


SCENES = {
    "reprice-half-claude": _reprice_scene,
    "service-tiers": _tiers_scene,
    "billing-openai": _billing_scene("openai", 1.0),
    "billing-anthropic-half": _billing_scene("anthropic", 0.5),
}


def block(command: str, workdir: Path, env: dict[str, str] | None = None) -> str:
    """The fenced block for one marker's command."""
    words = shlex.split(command)
    columns = DEFAULT_COLUMNS
    if words and words[0].startswith("COLUMNS="):
        columns = int(words.pop(0).split("=", 1)[1])
    if not words or words[0] != "llmtrace":
        raise SystemExit(f"a render marker must run llmtrace, not {command!r}")
    output = run(words[1:], workdir, columns, env)
    lines = [line.rstrip() for line in output.rstrip("\n").splitlines()]
    shown = shlex.join(words)
    return "```\n$ " + shown + "\n" + "\n".join(lines) + "\n```\n"


def rendered_readme(text: str, workdir: Path) -> str:
    """``text`` (the README) with every marked block replaced by its command's output."""
    with ExitStack() as stack:
        ready: dict[str, tuple[Path, dict[str, str]]] = {}

        def replace(match: re.Match[str]) -> str:
            command, scene = match.group("command"), match.group("scene")
            if scene is None:
                return f"<!-- render: {command} -->\n" + block(command, workdir)
            if scene not in SCENES:
                raise SystemExit(f"unknown render scene {scene!r} (known: {', '.join(SCENES)})")
            if scene not in ready:
                ready[scene] = SCENES[scene](workdir, stack)
            where, env = ready[scene]
            return f"<!-- render[{scene}]: {command} -->\n" + block(command, where, env)

        return MARKER.sub(replace, text)


def pictures(workdir: Path) -> dict[Path, str]:
    """docs/audit-report.html and docs/audit-savings.svg from the demo store."""
    page = run(["audit", "--until", DEMO_END, "--format", "html"], workdir)
    return {
        DOCS / "audit-report.html": page,
        DOCS / "audit-savings.svg": standalone_savings_chart(page),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is out of date")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        make_store(workdir)
        outputs = {README: rendered_readme(README.read_text(encoding="utf-8"), workdir)}
        outputs.update(pictures(workdir))
    stale = 0
    for path, text in outputs.items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        stale += 1
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), str(path), "rendered", lineterm=""
            )
            print("\n".join(list(diff)[:80]))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        raise SystemExit(f"{stale} file(s) out of date: run python docs/render_readme.py")


if __name__ == "__main__":
    main()
