"""Shared helpers of the deploy validators (standard library + PyYAML + packaging)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# The Prometheus metrics the service exports (the contract the dashboards, alerts and the HPA
# are written against). Histograms also expose _bucket, _sum and _count series.
COUNTERS = {
    "raman_http_requests_total": {"route", "method", "status"},
    "raman_queue_rejected_total": {"model"},
    "raman_identifications_total": {"model", "outcome"},
    "raman_finetune_jobs_total": {"state"},
}
GAUGES = {
    "raman_queue_depth": {"model"},
    "raman_model_info": {"name", "version", "provider"},
    "raman_finetune_jobs": {"state"},
}
HISTOGRAMS = {
    "raman_http_request_duration_seconds": {"route", "method", "status"},
    "raman_batch_size": {"model"},
    "raman_inference_duration_seconds": {"model"},
}
SERIES = (
    set(COUNTERS)
    | set(GAUGES)
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
METRIC_RE = re.compile(r"\braman_[a-z0-9_]+\b")

# Environment variables that the container support files read (not service settings).
EXTRA_ENV = {"RAMAN_SEED_MODELS", "RAMAN_DEFAULT_MODELS"}


class Problems:
    """Collects failures of one check; `report` prints PASS/FAIL and returns the exit status."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[str] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def check(self, condition: object, message: str) -> bool:
        if not condition:
            self.add(message)
        return bool(condition)

    def report(self) -> int:
        for note in self.notes:
            print(f"  {note}")
        for warning in self.warnings:
            print(f"  WARN {warning}")
        for item in self.items:
            print(f"  {item}", file=sys.stderr)
        return 1 if self.items else 0


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def settings_env_names() -> set[str] | None:
    """RAMAN_* names of the service's Settings fields, read from service/settings.py's AST.

    None when the file does not exist (yet). Parsing (not importing) keeps this check free of
    the service's dependencies.
    """
    path = REPO / "service" / "settings.py"
    if not path.exists():
        return None
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Settings":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    field = item.target.id
                    if field != "model_config":
                        names.add("RAMAN_" + field.upper())
    return names or None


def metric_names(text: str) -> set[str]:
    return set(METRIC_RE.findall(text))
