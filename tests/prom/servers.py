"""Prometheus and the Pushgateway as real processes on 127.0.0.1, for tests and scripts.

Each server gets a free loopback port and a private directory (config, TSDB, log), is started
with ``start()`` (which waits until it answers ``/-/ready``) and killed with ``stop()``. The
binaries are Debian's (``apt-get install prometheus prometheus-pushgateway``); ``missing()``
names the ones that are not installed, so a test can skip with that reason.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BINARIES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "pushgateway": ("prometheus-pushgateway", "pushgateway"),
}


def which(name: str) -> str | None:
    """Path of a server binary (Debian names first), or None."""
    for candidate in BINARIES[name]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def missing(*names: str) -> list[str]:
    """The binaries among ``names`` that are not installed."""
    return [name for name in names if which(name) is None]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class PromQLError(Exception):
    """Prometheus refused a query (parse or execution error); the message is Prometheus's."""


@dataclass
class Server:
    """A loopback server process with its own directory; subclasses build the command line."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    name = "server"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                http_get(f"{self.url}/-/ready", timeout=1.0)
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ScrapeJob:
    """One scrape target of the test Prometheus."""

    job: str
    target: str  # host:port
    honor_labels: bool = False


@dataclass
class Prometheus(Server):
    """Prometheus 2.42+ with a temporary TSDB (or a given one, e.g. backfilled blocks)."""

    scrape: Sequence[ScrapeJob] = ()
    interval: str = "1s"
    tsdb: Path | None = None
    retention: str = "15d"

    name = "prometheus"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": [
                {
                    "job_name": job.job,
                    "honor_labels": job.honor_labels,
                    "scrape_interval": self.interval,
                    "static_configs": [{"targets": [job.target]}],
                }
                for job in self.scrape
            ],
        }

    def command(self) -> list[str]:
        binary = which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        tsdb = self.tsdb or self.workdir / "tsdb"
        return [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    # -- HTTP API ---------------------------------------------------------------------------------

    def api(self, path: str, params: dict[str, Any]) -> Any:
        """GET ``/api/v1/<path>?params``; returns ``data`` or raises ``PromQLError``."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/{path}?{query}", timeout=30
            ) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = json.loads(exc.read())
            except ValueError:
                raise PromQLError(f"HTTP {exc.code} for {params}") from None
        if payload.get("status") != "success":
            raise PromQLError(f"{payload.get('errorType')}: {payload.get('error')}")
        return payload["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: list of ``{"metric": labels, "value": [t, "v"]}`` (vector or scalar)."""
        data = self.api("query", {"query": expr, "time": at})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range query: list of ``{"metric": labels, "values": [[t, "v"], ...]}``."""
        data = self.api("query_range", {"query": expr, "start": start, "end": end, "step": step})
        return data["result"]

    def wait_for(
        self,
        expr: str,
        ready: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 20.0,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until ``ready(result)``; the last result if it never is."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if ready(result):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{expr!r} not ready after {timeout}s; last result {result}")


@dataclass
class Pushgateway(Server):
    """The Prometheus Pushgateway, in memory only.

    Debian's build persists to /var/lib/prometheus/pushgateway.data by default: every test
    gateway would load the groups of the one before.
    """

    name = "pushgateway"

    def command(self) -> list[str]:
        binary = which("pushgateway")
        if binary is None:
            raise RuntimeError(
                "the Pushgateway is not installed (apt-get install prometheus-pushgateway)"
            )
        return [
            binary,
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--persistence.file=",
            "--log.level=warn",
        ]


def create_blocks(openmetrics: Path, tsdb: Path) -> None:
    """Backfill TSDB blocks from an OpenMetrics file with ``promtool``."""
    promtool = which("promtool")
    if promtool is None:
        raise RuntimeError("promtool is not installed (apt-get install prometheus)")
    tsdb.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(tsdb)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr[-2000:]}")
