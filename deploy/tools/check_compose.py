#!/usr/bin/env python3
"""Validate docker-compose.yml and docker-compose.yml + docker-compose.cpu.yml.

* Each file, and the merge of both (Compose's merge rules for the keys used here, including
  the `!reset` tag), is validated against the Compose Specification JSON schema that
  check-jsonschema ships (vendor.compose-spec).
* Cross-checks: build targets exist in the Dockerfile, bind-mounted files exist, named volumes
  are declared, GPU reservations are on the API and worker of the GPU stack and gone in the CPU
  stack, the CPU stack builds the *-cpu targets, RAMAN_* variables are real service settings.

Docker Compose itself cannot run here (no engine, no compose plugin), hence this.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

import check_jsonschema
import jsonschema
import yaml
from common import EXTRA_ENV, REPO, Problems, settings_env_names

RESET = object()


class ComposeLoader(yaml.SafeLoader):
    """YAML loader that understands Compose's `!reset` and `!override` tags."""


def _reset(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return RESET


class Override:
    def __init__(self, value: Any) -> None:
        self.value = value


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", _reset)
ComposeLoader.add_constructor("!override", _override)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def resolve(value: Any) -> Any:
    """A single file as Compose reads it alone: `!reset` drops the key, `!override` is the value."""
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [resolve(v) for v in value if v is not RESET]
    if isinstance(value, Override):
        return resolve(value.value)
    return value


def merge(base: Any, over: Any) -> Any:
    """Compose merge: maps merge, `!reset` removes, `!override` replaces, sequences append."""
    if over is RESET:
        return RESET
    if isinstance(over, Override):
        return copy.deepcopy(over.value)
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            merged = merge(out[key], value) if key in out else resolve(value)
            if merged is RESET:
                out.pop(key, None)
            else:
                out[key] = merged
        return out
    if isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return copy.deepcopy(over)


def schema() -> dict:
    path = (
        Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    )
    return json.loads(path.read_text())


def dockerfile_targets() -> set[str]:
    text = (REPO / "Dockerfile").read_text()
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE))


def env_keys(service: dict) -> set[str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return {e.split("=", 1)[0] for e in env}
    return set(env)


def gpu_devices(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def main() -> int:
    p = Problems("compose")
    spec = schema()
    validator = jsonschema.validators.validator_for(spec)(spec)
    base_path, cpu_path = REPO / "docker-compose.yml", REPO / "docker-compose.cpu.yml"
    base, cpu = load(base_path), load(cpu_path)
    merged = merge(base, cpu)
    for label, doc in (
        ("docker-compose.yml", resolve(base)),
        ("docker-compose.cpu.yml", resolve(cpu)),
        ("docker-compose.yml + docker-compose.cpu.yml", merged),
    ):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            p.add(f"{label}: {'/'.join(map(str, e.path))}: {e.message}")
        if not errors:
            p.note(f"{label}: valid against the compose-spec schema")

    targets = dockerfile_targets()
    settings = settings_env_names()
    if settings is None:
        p.warn("service/settings.py not found: RAMAN_* names not checked")
    for label, doc, flavour in (("gpu stack", resolve(base), "gpu"), ("cpu stack", merged, "cpu")):
        services = doc.get("services", {})
        for name in ("api", "worker", "prometheus", "grafana"):
            p.check(name in services, f"{label}: service {name} missing")
        declared = set(doc.get("volumes", {}) or {})
        for sname, svc in services.items():
            build = svc.get("build")
            if isinstance(build, dict) and "target" in build:
                p.check(
                    build["target"] in targets,
                    f"{label}: {sname} builds unknown target {build['target']}",
                )
            for vol in svc.get("volumes", []):
                src = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
                if src.startswith((".", "/")):
                    p.check((REPO / src).exists(), f"{label}: {sname} mounts missing {src}")
                elif src:
                    p.check(src in declared, f"{label}: {sname} uses undeclared volume {src}")
            if settings is not None:
                for key in env_keys(svc):
                    if key.startswith("RAMAN_"):
                        p.check(
                            key in settings | EXTRA_ENV,
                            f"{label}: {sname} sets {key}, no service setting",
                        )
        for sname in ("api", "worker"):
            svc = services.get(sname, {})
            devices = gpu_devices(svc)
            target = svc.get("build", {}).get("target", "")
            image = svc.get("image", "")
            p.check(
                target == f"{sname}-{flavour}",
                f"{label}: {sname} should build target {sname}-{flavour}, not {target}",
            )
            p.check(
                image.endswith(f"-{flavour}"),
                f"{label}: {sname} image tag should end in -{flavour}: {image}",
            )
            if flavour == "gpu":
                p.check(
                    any(
                        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
                        for d in devices
                    ),
                    f"{label}: {sname} has no NVIDIA GPU reservation",
                )
            else:
                p.check(not devices, f"{label}: {sname} still reserves GPUs in the CPU stack")
            for m in ("/data/models", "/data/jobs"):
                p.check(
                    any(str(v).endswith(":" + m) for v in svc.get("volumes", [])),
                    f"{label}: {sname} lacks volume {m}",
                )
            p.check(
                svc.get("read_only") is True,
                f"{label}: {sname} should run with a read-only root filesystem",
            )
        api = services.get("api", {})
        hc = api.get("healthcheck", {}).get("test", [])
        p.check(
            "ready" in hc and any("healthcheck.py" in str(t) for t in hc),
            f"{label}: api healthcheck must probe readiness",
        )
        providers = api.get("environment", {}).get("RAMAN_PROVIDERS", "")
        if flavour == "cpu":
            p.check(
                providers == "CPUExecutionProvider",
                f"{label}: api RAMAN_PROVIDERS should be CPUExecutionProvider",
            )
    for sname, svc in resolve(base)["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if (
                re.search(r"KEY|SECRET|PASSWORD|TOKEN", key)
                and value
                and not str(value).startswith("${")
            ):
                p.add(f"docker-compose.yml: {sname} hard-codes {key}; take it from the environment")
    return p.report()


if __name__ == "__main__":
    sys.exit(main())
