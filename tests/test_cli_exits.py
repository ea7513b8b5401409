"""Exit codes a nightly job can trust, for every command, through the real ``llmtrace`` group.

0 ok, 1 findings over the threshold or rejected input, 2 usage or configuration error; an error
is one line on stderr with no traceback, unless ``--debug`` asks for it. Also: the group loads
each command only when it runs, so ``import llmtrace.cli`` pulls in neither polars nor langfuse.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmtrace.cli import COMMANDS, cli
from llmtrace.commands.import_group import IMPORTERS
from llmtrace.config import CONFIG_ENV


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (CONFIG_ENV, "LLMTRACE_PRICES", "LLMTRACE_STORE", "LLMTRACE_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("exits") / "store"
    args = ["demo", "--store", str(path), "--days", "2", "--end", "2026-11-20", "--scale", "0.2"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return path


def invoke(*args: str, env: dict[str, str | None] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def one_line_error(result) -> str:
    """The whole error output: one line, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert lines[0].startswith("llmtrace: error: ")
    return lines[0]


BAD_USAGE = {
    # every command, each with the bad paths, values and credentials users hit
    "audit output folder missing": ["audit", "-o", "/nonexistent/dir/x.json"],
    "audit output is a folder": ["audit", "-o", "{tmp}"],
    "audit bad --since": ["audit", "--since", "last tuesday"],
    "audit config missing": ["audit", "--config", "/nonexistent/llmtrace.toml"],
    "audit price file missing": ["audit", "--prices", "/nonexistent/prices.toml"],
    "audit unknown rule page": ["audit", "--explain", "LT999"],
    "audit bad format": ["audit", "--format", "pdf"],
    "costs store is a file": ["costs", "--store", "{file}"],
    "costs bad --by": ["costs", "--by", "colour"],
    "costs bad --until": ["costs", "--until", "tomorrowish"],
    "prices price file missing": ["prices", "gpt-4o", "--prices", "/nonexistent/prices.toml"],
    "prices bad --at": ["prices", "gpt-4o", "--at", "noon"],
    "import unknown source": ["import", "splunk"],
    "import otlp path missing": ["import", "otlp", "/nonexistent/traces.jsonl"],
    "import otlp price file missing": ["import", "otlp", "{file}", "--prices", "/nonexistent.toml"],
    "import langfuse no keys": ["import", "langfuse"],
    "import langfuse bad host": ["import", "langfuse", "--host", "ftp://example"],
    "rules unknown code": ["rules", "LT999"],
    "rules config missing": ["rules", "--config", "/nonexistent/llmtrace.toml"],
    "run unknown exporter": ["run", "--exporters", "bogus", "--", "true"],
    "reconcile no admin key": ["reconcile", "openai"],
    "reconcile unknown provider": ["reconcile", "bedrock"],
    "demo bad --days": ["demo", "--days", "0"],
    "demo store is a file": ["demo", "--store", "{file}"],
    "unknown command": ["bogus"],
}


@pytest.mark.parametrize("case", sorted(BAD_USAGE))
def test_usage_and_config_errors_exit_2_in_one_line(case: str, tmp_path: Path, store: Path):
    file = tmp_path / "a-file.txt"
    file.write_text("")
    args = [a.format(tmp=tmp_path, file=file) for a in BAD_USAGE[case]]
    if args[0] not in ("import", "run", "bogus") and "--store" not in args and args[0] != "rules":
        args += ["--store", str(store)]
    env = {
        "LANGFUSE_PUBLIC_KEY": None,
        "LANGFUSE_SECRET_KEY": None,
        "OPENAI_ADMIN_KEY": None,
        "ANTHROPIC_ADMIN_KEY": None,
    }
    if case == "import langfuse bad host":
        env = {"LANGFUSE_PUBLIC_KEY": "pk-lf-x", "LANGFUSE_SECRET_KEY": "sk-lf-x"}
    result = invoke(*args, env=env)
    assert result.exit_code == 2, (case, result.output)
    one_line_error(result)


# every command that reads the store: the same answer to a store that is not there
READERS = {
    "audit": ["audit"],
    "costs": ["costs"],
    "prices": ["prices"],
    "reprice": ["reprice"],
    "reconcile": ["reconcile", "openai"],
    "store check": ["store", "check"],
}


@pytest.mark.parametrize("command", sorted(READERS))
def test_a_named_store_that_does_not_exist_exits_2_naming_it(command: str, tmp_path: Path):
    missing = tmp_path / "typo"
    result = invoke(*READERS[command], "--store", str(missing), env={"OPENAI_ADMIN_KEY": "x"})
    assert result.exit_code == 2, result.output
    assert one_line_error(result) == f"llmtrace: error: no store at {missing} (check --store)"
    by_env = invoke(*READERS[command], env={"LLMTRACE_STORE": str(missing)})
    assert by_env.exit_code == 2, by_env.output
    assert (
        one_line_error(by_env) == f"llmtrace: error: no store at {missing} (check $LLMTRACE_STORE)"
    )
    assert not missing.exists()  # reading never creates it


@pytest.mark.parametrize("command", ["costs", "prices", "store check"])
def test_the_default_store_missing_is_a_first_run_not_an_error(command: str, tmp_path: Path):
    result = invoke(*READERS[command])  # cwd is tmp_path: ./.llmtrace does not exist
    assert result.exit_code == 0, result.output
    if command != "store check":
        assert "llmtrace demo" in result.output


def test_the_unwritable_output_fails_before_the_audit_runs(store: Path) -> None:
    result = invoke("audit", "--store", str(store), "-o", "/nonexistent/dir/x.json")
    assert result.exit_code == 2
    assert "'/nonexistent/dir' does not exist" in one_line_error(result)
    assert result.stdout == ""


def test_missing_langfuse_keys_name_the_variables() -> None:
    result = invoke(
        "import", "langfuse", env={"LANGFUSE_PUBLIC_KEY": "", "LANGFUSE_SECRET_KEY": ""}
    )
    assert result.exit_code == 2
    assert "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY not set" in one_line_error(result)


def test_run_refuses_a_bad_live_setting_in_the_environment() -> None:
    result = invoke("run", "--", "true", env={"LLMTRACE_EXPORTERS": "stdout"})
    assert result.exit_code == 2
    assert "LLMTRACE_EXPORTERS='stdout'" in one_line_error(result)


def test_findings_over_threshold_and_rejected_input_exit_1(store: Path, tmp_path: Path) -> None:
    base = ["audit", "--store", str(store), "--until", "2026-11-20", "--since", "2026-11-18"]
    assert invoke(*base, "--format", "json").exit_code == 0
    assert invoke(*base, "--format", "json", "--fail-on-savings", "0").exit_code == 1
    assert invoke("prices", "no-such-model-xyz").exit_code == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    assert invoke("import", "otlp", str(bad), "--store", str(tmp_path / "s")).exit_code == 1


def test_ok_commands_exit_0(store: Path) -> None:
    for args in (
        ["costs", "--store", str(store), "--since", "2026-11-01", "--until", "2026-11-21"],
        ["rules"],
        ["prices", "gpt-4o"],
        ["--version"],
        ["--help"],
        ["import", "--help"],
    ):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmtrace.commands.costs as costs_module

    def broken(*args, **kwargs):
        raise RuntimeError("the cost table\nbroke")

    monkeypatch.setattr(costs_module, "open_existing_store", broken)
    plain = invoke("costs", "--store", str(store))
    assert plain.exit_code == 2
    assert "RuntimeError: the cost table broke (internal error; run with --debug" in (
        one_line_error(plain)
    )
    debug = invoke("--debug", "costs", "--store", str(store))
    assert debug.exit_code == 2  # the same exit code: a job run with --debug reads it right
    assert "Traceback (most recent call last)" in debug.stderr
    via_env = invoke("costs", "--store", str(store), env={"LLMTRACE_DEBUG": "1"})
    assert "Traceback (most recent call last)" in via_env.stderr


def test_every_registered_command_loads_under_its_name() -> None:
    for table in (COMMANDS, IMPORTERS):
        for name, entry in table.items():
            group = cli if table is COMMANDS else cli.get_command(None, "import")  # type: ignore[arg-type]
            command = group.get_command(None, name)  # type: ignore[union-attr,arg-type]
            assert command is not None and command.name == name
            # the summary --help lists (without importing) is the command's own first line
            assert entry.summary == command.get_short_help_str(limit=1_000), name


def test_help_lists_every_summary_in_full() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands  # click cuts summaries at 45 characters with "..."
    for name, entry in COMMANDS.items():
        assert entry.summary in " ".join(result.output.split()), name


def test_the_cli_module_imports_no_heavy_dependency() -> None:
    """``llmtrace --help`` must not pay for polars, langfuse or the OpenTelemetry SDK."""
    code = (
        "import sys, llmtrace.cli; "
        "heavy = [m for m in ('polars', 'langfuse', 'opentelemetry.sdk', 'genai_prices', 'numpy') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_rules_code_shows_the_rule_page() -> None:
    page = invoke("rules", "lt201")
    assert page.exit_code == 0
    assert page.stdout == invoke("audit", "--explain", "LT201").stdout
    assert "## How to fix it" in page.stdout
