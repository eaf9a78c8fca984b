"""EventBridge schedule expressions, checked by the lint (E123) before a deploy would be refused."""

from __future__ import annotations

import pytest

from ndr_compiler.lint.environments import schedule_problem

VALID = [
    "cron(0 2 1 * ? *)", "cron(0/15 * * * ? *)", "cron(0 18 ? * MON-FRI *)", "cron(0 10 ? * 6L 2026)",
    "cron(0 8 ? * 2#1 *)", "cron(15 10 L * ? *)", "cron(0 0 15W * ? *)", "cron(0,30 9-17 ? JAN-MAR mon *)",
    "cron(*/5 * * * ? 2026-2030)", "rate(1 minute)", "rate(5 minutes)", "rate(1 day)", "rate(12 hours)",
]
INVALID = {
    "rate(0 minutes)": "at least 1",
    "rate(1 minutes)": "write rate(1 minute)",
    "rate(5 minute)": "write rate(5 minutes)",
    "rate(2 weeks)": "rate(<whole number>",
    "rate(-1 days)": "rate(<whole number>",
    "cron(0 4 2 * *)": "6 fields",
    "cron(60 * * * ? *)": "minutes: '60' is not a minutes value (0-59)",
    "cron(0 24 * * ? *)": "hours: '24'",
    "cron(0 0 32 * ? *)": "day-of-month: '32'",
    "cron(0 0 ? 13 MON *)": "month: '13'",
    "cron(0 0 ? * FUNDAY *)": "day-of-week: 'FUNDAY'",
    "cron(0 0 * * * *)": "exactly one of day-of-month and day-of-week",
    "cron(0 0 ? * ? *)": "exactly one of day-of-month and day-of-week",
    "cron(0/0 * * * ? *)": "increment",
    "cron(0 0 1 * ? 1969)": "year: '1969'",
    "cron(0 0 ? * 8#1 *)": "day-of-week: '8#1'",
}


@pytest.mark.parametrize("expression", VALID)
def test_valid_expressions_pass(expression: str):
    assert schedule_problem(expression) is None


@pytest.mark.parametrize(("expression", "says"), sorted(INVALID.items()))
def test_invalid_expressions_say_what_is_wrong(expression: str, says: str):
    problem = schedule_problem(expression)
    assert problem is not None and says in problem, problem
