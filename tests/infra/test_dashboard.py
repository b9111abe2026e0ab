"""The observability files: the Grafana dashboard, the Prometheus config, the KubeRay scrape settings.

Fast and offline. No Grafana JSON schema ships as a Python package (Grafana keeps its dashboard
schema in CUE inside the AGPL server), so the dashboard's structure is checked here directly:
the keys Grafana needs, unique panel ids, a grid of 24 columns without overlaps, one Prometheus
datasource variable used by every panel. Every PromQL expression passes a small syntax check
(balanced brackets, closed strings, label matchers, range durations, known functions) and every
metric it queries is one the README's metrics table exposes or one Ray Serve
exports (as Ray's own Serve dashboards name it). Where `promtool` is installed, it parses every
expression too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "infra" / "grafana" / "specroute.json"
PROMETHEUS = REPO / "infra" / "prometheus" / "prometheus.yml"
RAYSERVICE = REPO / "infra" / "kuberay" / "rayservice.yaml"
PODMONITOR = REPO / "infra" / "kuberay" / "podmonitor.yaml"
REFERENCE = REPO / "README.md"  # its "Observability" section holds the metrics table
RAY_METRICS_PORT = 8080  # KubeRay's metrics export port
GRID_COLUMNS = 24

PROMQL_FUNCTIONS = {
    "rate", "irate", "increase", "delta", "idelta", "sum", "min", "max", "avg", "count", "topk", "bottomk",
    "quantile", "stddev", "histogram_quantile", "abs", "clamp_min", "clamp_max", "clamp", "vector", "scalar",
    "absent", "label_replace", "time", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "count_over_time", "deriv", "round", "sort", "sort_desc",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}
GRAFANA_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range|\{?\w+\}?)")


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return out


def _targets(dashboard: dict) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]


def _exposed_names() -> set[str]:
    """The `exposed` column of the README's metrics table, histograms expanded."""
    text = REFERENCE.read_text().split("## Observability", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`ray_"):
            continue
        name, kind = cells[1].strip("`"), cells[2]
        names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind.startswith("Histogram") else {name}
    return names


def _ray_serve_names() -> set[str]:
    """Metric names Ray's own Serve dashboards query (the installed Ray's source)."""
    import ray.dashboard.modules.metrics.dashboards as boards

    folder = Path(boards.__file__).parent
    text = "".join(p.read_text() for p in folder.glob("serve*_panels.py"))
    return set(re.findall(r"\bray_serve_\w+", text))


# --- a small PromQL check ------------------------------------------------------------------------

def _promql_metric_names(expr: str) -> set[str]:
    """Check `expr`'s syntax roughly and return the metric names it selects; AssertionError if bad."""
    e = GRAFANA_VARIABLES.sub("VAR", expr)
    strings = re.findall(r'"(?:[^"\\]|\\.)*"', e)
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '"S"', e)
    assert '"' not in e.replace('"S"', ""), f"unclosed string in {expr!r}"
    stack = []
    for ch in e:
        if ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            assert stack and stack.pop() + ch in ("()", "[]", "{}"), f"unbalanced {ch!r} in {expr!r}"
    assert not stack, f"unclosed {stack} in {expr!r}"
    for matchers in re.findall(r"\{([^}]*)\}", e):
        for m in filter(None, (x.strip() for x in matchers.split(","))):
            assert re.fullmatch(r'[a-zA-Z_]\w*\s*(=~|!~|!=|=)\s*"S"', m), f"bad label matcher {m!r} in {expr!r}"
    for duration in re.findall(r"\[([^\]]*)\]", e):
        assert re.fullmatch(r"VAR|\d+(ms|s|m|h|d|w|y)", duration.strip()), f"bad range [{duration}] in {expr!r}"
    assert all(s.count("$") == 0 or GRAFANA_VARIABLES.search(s) for s in strings)
    e = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][\w:]*", e):
        word, after = m.group(), e[m.end():].lstrip()[:1]
        if after == "(":
            assert word in PROMQL_FUNCTIONS, f"unknown function {word!r} in {expr!r}"
        elif word not in PROMQL_KEYWORDS and word not in ("VAR", "S") and not re.fullmatch(r"\d.*", word):
            names.add(word)
    return names


def test_the_promql_check_catches_mistakes():
    assert _promql_metric_names('sum by (le) (rate(x_bucket{a=~"$task"}[$__rate_interval]))') == {"x_bucket"}
    for bad in ('rate(x[5m]', 'x{a="b}', 'x{a=b}', 'rate(x[5 minutes])', 'rated(x[5m])', 'sum(x))'):
        with pytest.raises(AssertionError):
            _promql_metric_names(bad)


# --- the dashboard -------------------------------------------------------------------------------

def test_dashboard_has_the_keys_grafana_needs():
    d = _dashboard()
    for key in ("title", "uid", "panels", "schemaVersion", "templating", "time", "annotations"):
        assert key in d, key
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36  # Grafana 9+ (timeseries, uids)
    assert re.fullmatch(r"[\w-]{1,40}", d["uid"])
    for panel in _panels(d):
        for key in ("id", "type", "title", "gridPos"):
            assert key in panel, (panel.get("title"), key)
        assert panel["type"] in ("row", "timeseries", "stat", "gauge", "table", "bargauge", "heatmap")
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_uses_one_prometheus_datasource_variable():
    d = _dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    (ds,) = [v for v in variables.values() if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    ref = {"type": "prometheus", "uid": "${%s}" % ds["name"]}
    for panel in _panels(d):
        if panel["type"] != "row":
            assert panel["datasource"] == ref, panel["title"]
            assert all(t.get("datasource", ref) == ref for t in panel["targets"]), panel["title"]
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == ref, v["name"]
    used = set(re.findall(r"\$(\w+)", json.dumps([e for _, e in _targets(d)])))
    assert used - {"__rate_interval"} <= set(variables), used


def test_panel_ids_are_unique_and_the_grid_has_no_overlaps():
    panels = _panels(_dashboard())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["w"] >= 1 and g["h"] >= 1 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= GRID_COLUMNS, f"{p['title']} sticks out of the {GRID_COLUMNS}-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_expression_parses_and_queries_known_metrics():
    known = _exposed_names() | _ray_serve_names()
    assert "ray_specroute_rounds_total" in known and "ray_serve_deployment_replica_healthy" in known
    d = _dashboard()
    exprs = _targets(d) + [(v["name"], v["definition"]) for v in d["templating"]["list"] if v["type"] == "query"]
    for title, expr in exprs:
        expr = re.sub(r"^label_values\((\w+),\s*\w+\)$", r"\1", expr)
        unknown = _promql_metric_names(expr) - known
        assert not unknown, f"{title}: {sorted(unknown)} are neither in the README's metrics table nor Ray Serve's"


def test_the_dashboard_has_the_panels_the_issue_asks_for():
    exprs = "\n".join(e for _, e in _targets(_dashboard()))
    for needed in ("ray_specroute_generated_tokens_total", "ray_specroute_rounds_total",
                   "ray_specroute_accepted_tokens_per_position_total", "ray_specroute_ttft_seconds_bucket",
                   "ray_specroute_inter_token_latency_seconds_bucket", "ray_specroute_e2e_latency_seconds_bucket",
                   "ray_specroute_requests_total", "ray_specroute_verifier_trees_per_forward",
                   "ray_specroute_verifier_batch_tokens", "ray_specroute_verifier_queue_wait_seconds_bucket",
                   "ray_specroute_verifier_kv_slots_used", "ray_specroute_verifier_kv_slots_free",
                   "ray_specroute_verifier_sessions_open", "ray_specroute_verifier_sessions_refused_total",
                   "ray_specroute_router_decisions_total", "ray_specroute_router_redis_up",
                   "ray_specroute_router_buffered_records", "ray_serve_deployment_replica_healthy"):
        assert needed in exprs, needed
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (le) (rate(ray_specroute_ttft_seconds_bucket" in exprs


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_parses_every_expression(tmp_path):
    d = _dashboard()
    rules = []
    for i, (_, expr) in enumerate(_targets(d)):
        expr = expr.replace("$__rate_interval", "1m")
        expr = re.sub(r"\$\{?(\w+)\}?", ".*", expr)
        rules.append({"record": f"specroute:dashboard_{i}", "expr": expr})
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Prometheus and KubeRay ----------------------------------------------------------------------

def test_prometheus_config_scrapes_ray_discovery_and_the_local_node():
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"ray", "specroute-local"}
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    (sd,) = jobs["ray"]["file_sd_configs"]
    assert sd["files"] == [f"/tmp/ray/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]  # Ray links it there
    (static,) = jobs["specroute-local"]["static_configs"]
    assert static["targets"] == [f"127.0.0.1:{RAY_METRICS_PORT}"]
    assert re.fullmatch(r"\d+s", config["global"]["scrape_interval"])


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run(["promtool", "check", "config", "--syntax-only", str(PROMETHEUS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ray_pod_exposes_and_annotates_the_metrics_port():
    (service,) = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d["kind"] == "RayService"]
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    assert len(templates) == 1 + len(cluster["workerGroupSpecs"])
    for template in templates:
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(RAY_METRICS_PORT)
        ray_container = template["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in ray_container["ports"]}
        assert ports["metrics"] == RAY_METRICS_PORT
    pod_labels = [t["metadata"]["labels"] for t in templates]

    (monitor,) = yaml.safe_load_all(PODMONITOR.read_text())
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "PodMonitor"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(selector.items() <= labels.items() for labels in pod_labels)
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
