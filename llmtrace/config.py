"""Project configuration: ``llmtrace.toml``, else ``[tool.llmtrace]`` in ``pyproject.toml``.

Found the way ruff finds its settings: the nearest file walking up from the working directory.
Sections are owned by the code that reads them (``[rules]`` / ``[rules.LT101]`` by the rule
engine, ``prices`` by pricing, ``[accuracy]`` by importers and rules), so this module only finds,
reads and reports errors with the file name.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtrace.errors import LlmtraceError

CONFIG_ENV = "LLMTRACE_CONFIG"


class ConfigError(LlmtraceError, ValueError):
    """A configuration file that cannot be read; the message names the file and the problem.
    Exit 2 from the CLI (``llmtrace.errors``)."""


@dataclass(frozen=True)
class Config:
    """The settings in force and the file they came from (None: built-in defaults only)."""

    data: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        """A top-level table, or {} when absent; a non-table value is a ConfigError."""
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}: [{name}] must be a table, not {type(value).__name__}")
        return value

    def resolve_path(self, value: str) -> Path:
        """A path written in the config file, relative to that file's folder."""
        path = Path(value).expanduser()
        if not path.is_absolute() and self.path is not None:
            path = self.path.parent / path
        return path


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def find_config(start: Path | None = None) -> Path | None:
    """The config file in force: ``$LLMTRACE_CONFIG``, else the nearest llmtrace.toml or
    pyproject.toml with a [tool.llmtrace] table, walking up from ``start``."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    directory = (start or Path.cwd()).resolve()
    for folder in (directory, *directory.parents):
        candidate = folder / "llmtrace.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "llmtrace" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def load_config(path: Path | str | None = None, *, start: Path | None = None) -> Config:
    """Read the config file (``path``, else the one ``find_config`` finds)."""
    chosen = Path(path) if path is not None else find_config(start)
    if chosen is None:
        return Config()
    if not chosen.is_file():
        raise ConfigError(f"{chosen}: config file not found")
    data = _read_toml(chosen)
    if chosen.name == "pyproject.toml":
        data = data.get("tool", {}).get("llmtrace", {})
        if not isinstance(data, dict):
            raise ConfigError(f"{chosen}: [tool.llmtrace] must be a table")
    return Config(data=data, path=chosen)
