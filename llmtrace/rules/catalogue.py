"""The rules one audit can run: built-in and custom rules loaded into a catalogue, the codes
``select``/``ignore`` choose, and each rule's parameters from its YAML defaults and the config.

Why a module of its own: ``llmtrace rules`` and the audit engine both need the catalogue, and
the engine's job is running rules over a store, not reading rule files and config tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmtrace.config import Config, ConfigError, load_config
from llmtrace.rules.base import RuleSpec
from llmtrace.rules.loader import RuleEntry, builtin_logic, builtin_specs, load_custom_rules

_RULES_KEYS = {"select", "ignore", "custom", "baseline_days"}


@dataclass(frozen=True)
class RuleError:
    """A rule that could not run (or a rule file that could not be loaded), and why."""

    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass(frozen=True)
class Catalogue:
    """Every rule known to this run: runnable entries, plus specs whose logic failed to load."""

    entries: dict[str, RuleEntry]
    specs: dict[str, RuleSpec]
    origins: dict[str, str]
    errors: list[RuleError]


def load_catalogue(config: Config) -> Catalogue:
    """Built-in and custom rules; load problems become ``RuleError``s, not exceptions."""
    errors: list[RuleError] = []
    entries: dict[str, RuleEntry] = {}
    specs: dict[str, RuleSpec] = {}
    origins: dict[str, str] = {}
    try:
        builtin = builtin_specs()
    except ConfigError as exc:
        builtin = {}
        errors.append(RuleError("rules", str(exc)))
    for code, spec in builtin.items():
        specs[code], origins[code] = spec, "built-in"
        try:
            rule = builtin_logic(code)
        except (ImportError, LookupError) as exc:
            errors.append(RuleError(code, f"logic not available: {exc}"))
            continue
        entries[code] = RuleEntry(spec=spec, rule=rule, origin="built-in", source="rules")
    custom, custom_errors = load_custom_rules(config)
    errors.extend(RuleError("custom", message) for _, message in custom_errors)
    for entry in custom:
        code = entry.spec.code
        if code in specs:
            errors.append(
                RuleError(code, f"{entry.source}: code {code} is already used by another rule")
            )
            continue
        specs[code], origins[code], entries[code] = entry.spec, "custom", entry
    return Catalogue(entries=entries, specs=specs, origins=origins, errors=errors)


def codes_option(value: Any, where: str) -> list[str] | None:
    """A select/ignore value from the CLI (comma-separated) or the config (list or string)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of rule codes or prefixes")
    return [v.strip().upper() for v in value if v.strip()]


def select_codes(
    codes: Iterable[str], select: Sequence[str] | None, ignore: Sequence[str] | None
) -> list[str]:
    """Codes chosen by ``select`` (all when None; ``ALL`` too) minus ``ignore``, by prefix.

    A code or prefix that matches no rule is a ``ConfigError`` (a typo must not silently turn
    a rule off).
    """
    known = sorted(codes)
    for option, values in (("select", select), ("ignore", ignore)):
        for value in values or ():
            if value != "ALL" and not any(code.startswith(value) for code in known):
                raise ConfigError(
                    f"{option}: {value!r} matches no rule (rules: {', '.join(known)})"
                )

    def matches(code: str, prefixes: Sequence[str]) -> bool:
        return any(p == "ALL" or code.startswith(p) for p in prefixes)

    chosen = [c for c in known if select is None or matches(c, select)]
    return [c for c in chosen if not matches(c, ignore or ())]


# -- parameters ----------------------------------------------------------------------------------


def _compatible(default: Any, value: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list | str)
    return True


def resolve_params(spec: RuleSpec, config: Config) -> dict[str, Any]:
    """YAML defaults overlaid by ``[rules.<CODE>]``; unknown names and wrong types are errors."""
    overrides = config.section("rules").get(spec.code, {})
    where = f"{config.path}: [rules.{spec.code}]"
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where} must be a table of parameters")
    params = dict(spec.params)
    for name, value in overrides.items():
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise ConfigError(f"{where}: unknown parameter {name!r} (parameters: {known})")
        if not _compatible(params[name], value):
            raise ConfigError(
                f"{where}: parameter {name!r} must be like the default {params[name]!r}, "
                f"not {value!r}"
            )
        params[name] = value
    return params


def check_rules_section(config: Config, catalogue: Catalogue) -> None:
    """Every key of ``[rules]`` is a known setting or a table for a known code."""
    for key, value in config.section("rules").items():
        if key in _RULES_KEYS:
            continue
        if isinstance(value, dict) and key in catalogue.specs:
            continue
        if isinstance(value, dict):
            raise ConfigError(f"{config.path}: [rules.{key}]: no rule has the code {key!r}")
        raise ConfigError(
            f"{config.path}: [rules] unknown key {key!r} "
            f"(settings: {', '.join(sorted(_RULES_KEYS))}; or a [rules.<CODE>] table)"
        )


def rule_catalogue(config: Config | None = None) -> Catalogue:
    """The rules ``llmtrace rules`` lists (built-in and custom) and any load errors."""
    return load_catalogue(config if config is not None else load_config())


def params_table(spec: RuleSpec, config: Config | None = None) -> Mapping[str, Any]:
    """A rule's parameters in force: defaults overlaid by the config."""
    return resolve_params(spec, config) if config is not None else dict(spec.params)
