"""Every built-in rule reads its parameters through ``RuleParams.from_mapping``: typed values,
and a bad value is a ConfigError naming the rule and the parameter, never a traceback."""

from __future__ import annotations

import importlib

import pytest

from llmtrace.config import ConfigError
from llmtrace.rules.loader import builtin_specs

MODULES = {
    "LT201": "lt201_caching",
    "LT202": "lt202_history",
    "LT203": "lt203_unread_writes",
    "LT301": "lt301_context",
    "LT401": "lt401_rightsizing",
    "LT501": "lt501_batch",
    "LT502": "lt502_duplicates",
    "LT503": "lt503_agent_loops",
}


def params_class(code: str) -> type:
    return importlib.import_module(f"llmtrace.rules.{MODULES[code]}").Params


@pytest.mark.parametrize("code", sorted(MODULES))
def test_yaml_defaults_read_to_the_dataclass_defaults(code: str) -> None:
    """rules/<CODE>.yaml and the dataclass agree, and ints stay ints."""
    cls = params_class(code)
    read = cls.from_mapping(builtin_specs()[code].params)
    assert read == cls()
    assert isinstance(read.min_monthly_savings_usd, float)


@pytest.mark.parametrize("code", sorted(MODULES))
@pytest.mark.parametrize("bad", ["ten", True, -1])
def test_a_bad_number_names_the_rule_and_the_parameter(code: str, bad: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{code}: parameter min_monthly_savings_usd must"):
        params_class(code).from_mapping({"min_monthly_savings_usd": bad})


def test_types_lists_and_unknown_names() -> None:
    lt501 = params_class("LT501").from_mapping(
        {"min_calls": 50.0, "offline_services": "etl, nightly ,", "not_a_param": 1}
    )
    assert lt501.min_calls == 50 and isinstance(lt501.min_calls, int)
    assert lt501.offline_services == ("etl", "nightly")
    with pytest.raises(ConfigError, match="LT501: parameter batch_providers must be a list"):
        params_class("LT501").from_mapping({"batch_providers": [1, 2]})


@pytest.mark.parametrize(
    ("code", "values", "message"),
    [
        ("LT201", {"min_calls": 1}, "min_calls >= 2"),
        ("LT301", {"min_turns": 1}, "summarize_after_turns"),
        ("LT401", {"alpha": 1.5}, "alpha and assumed_accuracy"),
        ("LT501", {"burst_hours": 25}, "burst_hours must be between 1 and 24"),
        ("LT503", {"min_repeats": 1}, "min_repeats must be at least 2"),
    ],
)
def test_each_rule_still_checks_its_combinations(code: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        params_class(code).from_mapping(values)
