"""deploy/grafana/: the dashboard's queries are PromQL; tests/test_metrics.py checks that
every metric it and the alert rules use is one a running `deskbot run` serves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml
from conftest import HERE, require

DEPLOY = HERE.parent / "deploy"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*", "${datasource}": ""}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "deskbot.json").read_text())


def dashboard_queries() -> list[str]:
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, stand_in in GRAFANA_VARIABLES.items():
                query = query.replace(variable, stand_in)
            queries.append(query)
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "deskbot.rules.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_every_dashboard_query_is_promql_that_promtool_accepts(tmp_path: Path):
    queries = dashboard_queries()
    assert len(queries) >= 20 and not any("$" in q for q in queries)
    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{i}", "expr": q} for i, q in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(as_rules))
    result = subprocess.run(
        [require("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_has_one_id_per_panel_and_picks_its_prometheus_and_instances():
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "deskbot_sends_in_flight" in variables["instance"]["definition"]
    titles = {panel["title"] for panel in board["panels"]}
    for shown in ("Deliveries by outcome", "Command: taken to last answer", "Deliveries by site"):
        assert shown in titles
    for shown in ("Confirmations", "SIP worker restarts", "Audit log write time"):
        assert shown in titles
