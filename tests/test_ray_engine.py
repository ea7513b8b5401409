"""``--engine ray``: the aggregate step as Ray tasks on a local two-worker cluster.

The findings must be identical to the local engine's, from a store path, a ``file://`` URL
(Polars' cloud reader, as for s3:// stores) and the CLI. Skipped only when Ray is not installed
(``pip install 'llmtrace[ray]'``; CI installs the extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

ray = pytest.importorskip("ray")

from audit_cells import END, demo_store  # noqa: E402
from findings_compare import same_up_to_summation_order  # noqa: E402

from llmtrace import demo  # noqa: E402
from llmtrace.cli import cli  # noqa: E402
from llmtrace.commands.audit import audit  # noqa: E402
from llmtrace.config import Config, ConfigError  # noqa: E402
from llmtrace.rules.engine import run_audit  # noqa: E402
from llmtrace.store import Store  # noqa: E402

BUILT_IN = ["LT101", "LT201", "LT202", "LT203", "LT301", "LT401", "LT501", "LT502", "LT503"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with two worker CPUs, shared by the module's tests."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The 14-day demo workload (planted findings of every rule), priced, one file per day."""
    return demo_store(tmp_path_factory.mktemp("ray") / "store")


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data={}, path=tmp_path / "llmtrace.toml")


def dicts(result) -> list[dict]:
    return [f.to_dict() for f in result.findings]


def test_ray_findings_are_identical_to_local(cluster, store: Store, config: Config) -> None:
    local = run_audit(store, until=END, config=config)
    # small parts: LT201/LT301 run as 6 key-hash tasks, LT101 as one task per day
    remote = run_audit(store, until=END, config=config, engine="ray", rows_per_part=8_000)
    assert not local.errors and not remote.errors
    assert remote.rules_run == local.rules_run == BUILT_IN
    assert remote.calls_scanned == local.calls_scanned
    assert same_up_to_summation_order(dicts(remote), dicts(local))
    found = {(f.rule, f.prompt) for f in remote.findings}
    planted = {(p.rule, p.prompt) for p in demo.PLANTED if p.expected == demo.FINDING}
    assert planted <= found


def test_object_store_url_gives_the_same_findings(cluster, store: Store, config: Config) -> None:
    """A URL is read by Polars' cloud reader on the workers (file:// here, s3:// in production)."""
    local = run_audit(store, until=END, config=config, select="LT2,LT3")
    url = store.path.resolve().as_uri()
    remote = run_audit(url, until=END, config=config, select="LT2,LT3", engine="ray")
    assert not remote.errors
    assert same_up_to_summation_order(dicts(remote), dicts(local)) and remote.findings


def test_a_failing_rule_is_named_and_the_others_still_run(
    cluster, store: Store, tmp_path: Path
) -> None:
    config = Config(data={"rules": {"LT201": {"min_calls": 1}}}, path=tmp_path / "x.toml")
    local = run_audit(store, until=END, config=config)
    remote = run_audit(store, until=END, config=config, engine="ray")
    assert [e.rule for e in remote.errors] == [e.rule for e in local.errors] == ["LT201"]
    assert "min_calls" in remote.errors[0].message
    assert remote.rules_run == local.rules_run == [r for r in BUILT_IN if r != "LT201"]
    assert same_up_to_summation_order(dicts(remote), dicts(local))


def test_ray_engine_needs_a_store(cluster, config: Config) -> None:
    with pytest.raises(ConfigError, match="store"):
        run_audit(pl.LazyFrame(), until=END, config=config, engine="ray")


def test_cli_engine_ray_matches_local(cluster, store: Store, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--store", str(store.path), "--until", END.isoformat(), "--format", "json"]
    args += ["--config", str(_empty_config(tmp_path))]
    local = runner.invoke(audit, args)
    remote = runner.invoke(audit, [*args, "--engine", "ray"])
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    # the whole report, numbers up to the order Ray's parts sum in (22.644137 vs 22.644138)
    assert same_up_to_summation_order(json.loads(remote.stdout), json.loads(local.stdout))
    wrong = runner.invoke(cli, ["audit", *args, "--address", "auto"])  # through the exit codes
    assert wrong.exit_code == 2 and "--address needs --engine ray" in wrong.output


def _empty_config(tmp_path: Path) -> Path:
    path = tmp_path / "llmtrace.toml"
    path.write_text("")
    return path
