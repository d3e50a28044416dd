"""deploy/prometheus/: the alert rules load, and promtool's unit tests of each alert pass."""

from __future__ import annotations

import subprocess

import yaml
from conftest import HERE, require

RULES = HERE.parent / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=RULES
    )


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", "deskbot.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_every_alert_has_a_promtool_test_that_sees_it_fire_and_stay_quiet():
    rules = yaml.safe_load((RULES / "deskbot.rules.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load((RULES / "deskbot.rules.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == fired == quiet
    result = promtool("test", "rules", "deskbot.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
