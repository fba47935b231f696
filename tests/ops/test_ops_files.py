"""The dashboard and alert rules only name metrics a node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ops import metrics

OPS = Path(__file__).resolve().parents[2] / "ops"
NAME = re.compile(r"\bcutover_[a-z_]+")


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    """Every series name the node's registry can export."""
    return {
        family.name + suffix
        for family in metrics.REGISTRY.collect()
        for suffix in SUFFIXES[family.type]
    }


def test_dashboard_queries_name_exported_metrics():
    dashboard = json.loads((OPS / "dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    names = {name for expr in exprs for name in NAME.findall(expr)}
    assert names and names <= exported(), names - exported()


def test_alert_rules_name_exported_metrics():
    text = (OPS / "alerts.yml").read_text()
    names = set(NAME.findall(text))
    assert "cutover_send_buffer_overflows_total" in names
    assert names <= exported(), names - exported()
