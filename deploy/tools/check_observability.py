#!/usr/bin/env python3
"""Check the Grafana dashboard, its provisioning, and the metric names everywhere.

    python deploy/tools/check_observability.py OUT_RULES_FILE

* the dashboard JSON parses, has unique panel ids and grid positions inside 24 columns, uses
  the provisioned data source, and covers latency percentiles, throughput, batch size, queue
  depth, the no-match rate and fine-tune jobs;
* every raman_* series named in the dashboard, the alert rules, the HPA and the
  prometheus-adapter rules is one the service exports (its metric contract);
* every dashboard query is written to OUT_RULES_FILE as a recording rule (Grafana variables
  replaced by constants) so that `promtool check rules` parses each one as PromQL;
* where service/ exists, each metric name should appear in its source (a warning until the
  service code is written, so the contract and the code are compared in CI).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml
from common import COUNTERS, GAUGES, HISTOGRAMS, REPO, SERIES, Problems, metric_names

DASHBOARD = REPO / "deploy/grafana/dashboards/raman-service.json"
PROVISIONING = REPO / "deploy/grafana/provisioning"
ALERTS = REPO / "deploy/prometheus/alerts.yml"

COVERAGE = {
    "latency percentiles": lambda e: (
        "histogram_quantile" in e and "raman_http_request_duration_seconds_bucket" in e
    ),
    "throughput": lambda e: "raman_http_requests_total" in e and "rate(" in e,
    "batch size": lambda e: "raman_batch_size" in e,
    "queue depth": lambda e: "raman_queue_depth" in e,
    "no-match rate": lambda e: 'outcome="no_match"' in e,
    "fine-tune jobs": lambda e: "raman_finetune_jobs" in e,
    "429 rejections": lambda e: "raman_queue_rejected_total" in e,
    "inference time": lambda e: "raman_inference_duration_seconds_bucket" in e,
}


def grafana_to_promql(expr: str) -> str:
    expr = (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
    )
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def main(argv: list[str]) -> int:
    p = Problems("observability")
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out_rules = Path(argv[1])
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    ids = [x["id"] for x in panels]
    p.check(len(ids) == len(set(ids)), "dashboard: panel ids are not unique")
    p.check(dash.get("uid"), "dashboard: needs a fixed uid (stable links)")
    exprs: list[tuple[str, str]] = []
    for panel in panels:
        g = panel["gridPos"]
        p.check(g["x"] + g["w"] <= 24, f"dashboard: panel {panel['title']!r} wider than the grid")
        for t in panel.get("targets", []):
            p.check(
                t.get("datasource", {}).get("type") == "prometheus",
                f"dashboard: {panel['title']!r} target without prometheus data source",
            )
            exprs.append((panel["title"], t["expr"]))
    p.check(exprs, "dashboard: no queries")
    joined = "\n".join(e for _, e in exprs)
    for topic, test in COVERAGE.items():
        p.check(any(test(e) for _, e in exprs), f"dashboard: nothing shows {topic}")
    # provisioning: the data source the dashboard defaults to exists
    ds = yaml.safe_load((PROVISIONING / "datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    var = next((v for v in dash["templating"]["list"] if v["type"] == "datasource"), None)
    p.check(
        var and var["current"]["value"] in uids,
        "dashboard: default data source is not the provisioned one",
    )
    prov = yaml.safe_load((PROVISIONING / "dashboards/raman.yml").read_text())
    p.check(
        prov["providers"][0]["options"]["path"] == "/etc/grafana/dashboards",
        "dashboard provider path differs from compose mount",
    )
    # metric names everywhere
    sources = {
        "dashboard": joined,
        "alerts.yml": ALERTS.read_text(),
        "hpa.yaml": (REPO / "deploy/k8s/overlays/gpu/hpa.yaml").read_text(),
        "prometheus-adapter-values.yaml": (
            REPO / "deploy/k8s/overlays/gpu/prometheus-adapter-values.yaml"
        ).read_text(),
    }
    used: set[str] = set()
    for label, text in sources.items():
        names = metric_names(
            "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        )
        used |= names
        for name in sorted(names - SERIES):
            p.add(f"{label}: {name} is not a metric the service exports")
    alert_doc = yaml.safe_load(ALERTS.read_text())
    alerts = {r["alert"]: r["expr"] for g in alert_doc["groups"] for r in g["rules"]}
    for needed, pattern in (
        ("error rate", r'status=~"5'),
        ("latency", "histogram_quantile"),
        ("queue saturation", "raman_queue_depth"),
        ("failed jobs", 'state="failed"'),
    ):
        p.check(any(pattern in e for e in alerts.values()), f"alerts.yml: no alert on {needed}")
    # label names used in `by (...)` must exist on the metric (or be Prometheus' own)
    for label, text in (("dashboard", joined), *((f"alert {k}", v) for k, v in alerts.items())):
        for group in re.findall(r"by\s*\(([^)]*)\)", text):
            for lab in (x.strip() for x in group.split(",")):
                known = set().union(*COUNTERS.values(), *GAUGES.values(), *HISTOGRAMS.values()) | {
                    "le",
                    "pod",
                    "instance",
                    "job",
                    "namespace",
                }
                p.check(lab in known, f"{label}: groups by unknown label {lab!r}")
    # write the dashboard queries as recording rules for promtool
    rules = [
        {"record": f"dashboard:query_{n}", "expr": grafana_to_promql(e)}
        for n, (_, e) in enumerate(exprs)
    ]
    out_rules.parent.mkdir(parents=True, exist_ok=True)
    out_rules.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False)
    )
    p.note(
        f"dashboard: {len(panels)} panels, {len(exprs)} queries;"
        f" metrics used: {len(used)} of {len(SERIES)} series"
    )
    # compare with the service's source, where it exists
    service = REPO / "service"
    if service.is_dir() and any(service.rglob("*.py")):
        code = "\n".join(
            f.read_text(encoding="utf-8", errors="replace") for f in service.rglob("*.py")
        )
        families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
        for fam in sorted(families):
            stem = fam.removeprefix("raman_")
            if fam not in code and not re.search(rf"[\"']{stem}(_total)?[\"']", code):
                p.warn(
                    f"service/ does not (yet) mention metric {fam}:"
                    " dashboards and alerts rely on it"
                )
    return p.report()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
