#!/usr/bin/env python3
"""Render the kustomizations under deploy/ and check what they produce.

    python deploy/tools/check_k8s.py render OUTDIR   # one YAML file per kustomization
    python deploy/tools/check_k8s.py policy OUTDIR   # production rules on the rendered objects

Rendering uses `kubectl kustomize` (kustomize v5 is built into kubectl) when kubectl is on the
PATH, else the small renderer below, which implements exactly the kustomize features these
manifests use (resources, components, namespace, labels, images, strategic-merge and JSON6902
patches, configMapGenerator without hash suffix). When kubectl is there, both renderings are
compared so the fallback cannot drift from the real thing.

The schema validation itself (every object against the Kubernetes OpenAPI schemas) is done by
`kubernetes-validate --strict` on OUTDIR, from deploy/validate.sh.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from common import (
    EXTRA_ENV,
    REPO,
    SERIES,
    Problems,
    load_yaml_all,
    metric_names,
    settings_env_names,
)

# name of the rendered file -> kustomization directory
KUSTOMIZATIONS = {
    "overlay-cpu": "deploy/k8s/overlays/cpu",
    "overlay-gpu": "deploy/k8s/overlays/gpu",
    "alert-rules": "deploy/prometheus",
}
# An overlay plus components that users add themselves: rendered through a generated
# kustomization under build/ to prove that each component applies cleanly.
WITH_COMPONENTS = {
    "overlay-gpu-single-node": (
        "deploy/k8s/overlays/gpu",
        ["deploy/k8s/components/single-node-storage"],
    ),
    "overlay-gpu-k8s-jobs": ("deploy/k8s/overlays/gpu", ["deploy/finetune"]),
    "overlay-cpu-single-node": (
        "deploy/k8s/overlays/cpu",
        ["deploy/k8s/components/single-node-storage"],
    ),
}
# Plain manifests outside any kustomization, validated as they are.
PLAIN = {"secret-example": "deploy/k8s/secret.example.yaml"}
# The fine-tune Job template of finetune.runner.KubectlRunner, with its placeholders filled in.
TEMPLATE = "deploy/finetune/job.yaml"
TEMPLATE_VALUES = {
    "JOB_ID": "0123456789abcdef0123456789abcdef",
    "JOB_NAME": "raman-finetune-0123456789abcdef0123",
}

CLUSTER_SCOPED = {
    "Namespace",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "RuntimeClass",
    "CustomResourceDefinition",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


# --------------------------------------------------------------------------- mini kustomize


def _smp(base: Any, patch: Any) -> Any:
    """Strategic merge (the subset used here): maps merge, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _smp(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
        and base
    ):
        merged = [copy.deepcopy(i) for i in base]
        index = {i["name"]: n for n, i in enumerate(merged)}
        new = []
        for item in patch:
            if item["name"] in index:
                merged[index[item["name"]]] = _smp(merged[index[item["name"]]], item)
            else:
                new.append(copy.deepcopy(item))
        return new + merged  # kustomize puts items that only the patch has first
    return copy.deepcopy(patch)


def _json6902(obj: dict, ops: list[dict]) -> dict:
    obj = copy.deepcopy(obj)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent = obj
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] in ("replace", "add"):
            if isinstance(parent, list) and last == "-":
                parent.append(op["value"])
            elif isinstance(parent, list) and op["op"] == "add":
                parent.insert(int(last), op["value"])
            elif isinstance(parent, list):
                parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"unsupported JSON6902 op {op['op']}")
    return obj


def _matches(obj: dict, target: dict) -> bool:
    return all(
        (key not in target)
        or (key == "kind" and obj.get("kind") == target["kind"])
        or (key == "name" and obj["metadata"].get("name") == target["name"])
        for key in ("kind", "name")
    )


def render_py(
    directory: Path, extra_components: list[Path] | None = None, namespace: str | None = None
) -> list[dict]:
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    objs: list[dict] = []
    for res in k.get("resources", []):
        path = directory / res
        if path.is_dir():
            objs += render_py(path)
        else:
            objs += load_yaml_all(path)
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.partition("=")
            src = src or key
            data[Path(key).name] = (directory / src).read_text()
        for lit in gen.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        if not (k.get("generatorOptions", {}) | gen.get("options", {})).get(
            "disableNameSuffixHash"
        ):
            raise ValueError("the fallback renderer needs disableNameSuffixHash: true")
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            }
        )
    objs = _apply_patches(objs, k.get("patches", []), directory)
    components = [directory / c for c in k.get("components", [])] + (extra_components or [])
    for comp in components:
        objs = _apply_component(objs, comp)
    if namespace:
        _set_namespace(objs, namespace)
    for image in k.get("images", []):
        for obj in objs:
            for c in _containers(obj):
                name, _, _tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in k:
        _set_namespace(objs, k["namespace"])
    for label in k.get("labels", []):
        for obj in objs:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates") and obj["kind"] in WORKLOADS:
                obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {}).update(
                    label["pairs"]
                )
    return objs


def _set_namespace(objs: list[dict], namespace: str) -> None:
    for obj in objs:
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        elif obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        if obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for subject in obj.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace


def _apply_component(objs: list[dict], comp: Path) -> list[dict]:
    ck = yaml.safe_load((comp / "kustomization.yaml").read_text())
    for res in ck.get("resources", []):
        objs = objs + load_yaml_all(comp / res)
    for gen in ck.get("configMapGenerator", []):
        data = {Path(f).name: (comp / f).read_text() for f in gen.get("files", [])}
        objs = [
            *objs,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"]},
                "data": data,
            },
        ]
    return _apply_patches(objs, ck.get("patches", []), comp)


def _apply_patches(objs: list[dict], patches: list[dict], directory: Path) -> list[dict]:
    for p in patches:
        body = yaml.safe_load((directory / p["path"]).read_text() if "path" in p else p["patch"])
        if isinstance(body, list):  # JSON6902
            objs = [_json6902(o, body) if _matches(o, p.get("target", {})) else o for o in objs]
        else:
            target = {"kind": body["kind"], "name": body["metadata"]["name"]}
            hit = False
            for n, o in enumerate(objs):
                if _matches(o, target):
                    objs[n] = _smp(
                        o, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
                    )
                    hit = True
            if not hit:
                raise ValueError(f"patch {p} matches nothing")
    return objs


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if obj.get("kind") in WORKLOADS else {}
    return pod.get("containers", []) + pod.get("initContainers", [])


def render_kubectl(directory: Path) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _canon(objs: list[dict]) -> str:
    return json.dumps(sorted(objs, key=lambda o: _key(o)), sort_keys=True)


def render(outdir: Path) -> int:
    p = Problems("render")
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.yaml"):
        old.unlink()
    kubectl = None if os.environ.get("RAMAN_DEPLOY_NO_KUBECTL") else shutil.which("kubectl")
    jobs: list[tuple[str, Path, list[Path]]] = [
        (n, REPO / rel, []) for n, rel in KUSTOMIZATIONS.items()
    ]
    gen_root = REPO / "build" / "deploy-rendered-src"
    for name, (overlay_rel, comp_rels) in WITH_COMPONENTS.items():
        gen = gen_root / name
        gen.mkdir(parents=True, exist_ok=True)
        up = Path(*([".."] * len(gen.relative_to(REPO).parts)))
        comps = "".join(f"  - {up / c}\n" for c in comp_rels)
        (gen / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: raman\n"
            f"resources:\n  - {up / overlay_rel}\ncomponents:\n{comps}"
        )
        jobs.append((name, gen, [REPO / c for c in comp_rels]))
    for name, directory, components in jobs:
        try:
            if components:
                overlay = REPO / WITH_COMPONENTS[name][0]
                py = render_py(overlay, components, namespace="raman")
            else:
                py = render_py(directory)
        except Exception as exc:  # the fallback renderer must handle every kustomization here
            p.add(f"{name}: fallback renderer failed: {exc!r}")
            py = []
        if kubectl:
            try:
                objs = render_kubectl(directory)
            except subprocess.CalledProcessError as exc:
                p.add(f"{name}: kubectl kustomize {directory} failed:\n{exc.stderr}")
                continue
            if py and _canon(py) != _canon(objs):
                p.add(f"{name}: the fallback renderer disagrees with kubectl kustomize")
            engine = "kubectl kustomize"
        else:
            objs = py
            engine = "fallback renderer (no kubectl on PATH)"
        with (outdir / f"{name}.yaml").open("w") as fh:
            yaml.safe_dump_all(objs, fh, sort_keys=False)
        p.note(f"{name}: {len(objs)} objects ({engine})")
    template = string.Template((REPO / TEMPLATE).read_text()).safe_substitute(TEMPLATE_VALUES)
    (outdir / "finetune-job-template.yaml").write_text(template)
    p.check(
        "$" not in "".join(x for x in template.splitlines() if not x.lstrip().startswith("#")),
        f"{TEMPLATE}: placeholders other than $JOB_ID and $JOB_NAME",
    )
    p.note(f"finetune-job-template: {TEMPLATE} with $JOB_ID/$JOB_NAME filled in")
    for name, rel in PLAIN.items():
        shutil.copy(REPO / rel, outdir / f"{name}.yaml")
        p.note(f"{name}: {rel}")
    return p.report()


# --------------------------------------------------------------------------- policy

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _quantity_s(value: Any) -> float:
    return float(str(value))


def policy(outdir: Path) -> int:
    p = Problems("policy")
    docs = {f.stem: load_yaml_all(f) for f in sorted(outdir.glob("*.yaml"))}
    settings = settings_env_names()
    if settings is None:
        p.warn("service/settings.py not found: RAMAN_* names not checked against the settings")
    base_pvcs = {
        o["metadata"]["name"]
        for o in docs.get("overlay-gpu", [])
        if o["kind"] == "PersistentVolumeClaim"
    }
    for bundle, objs in docs.items():
        by_kind: dict[str, dict[str, dict]] = {}
        for o in objs:
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
            name = o["metadata"]["name"]
            p.check(
                (DNS1123.match(name) and len(name) <= 63)
                or (o["kind"] == "ConfigMap" and DNS1123.match(name)),
                f"{bundle}: {o['kind']} name {name!r} is not a DNS-1123 name",
            )
            if o["kind"] not in CLUSTER_SCOPED and bundle != "finetune-job-template":
                p.check(
                    o["metadata"].get("namespace") == "raman",
                    f"{bundle}: {o['kind']}/{name} not in namespace raman",
                )
        configmaps = by_kind.get("ConfigMap", {})
        for cm in configmaps.values():
            if cm["metadata"]["name"] == "raman-settings":
                for key in cm.get("data", {}):
                    p.check(
                        key.startswith("RAMAN_"),
                        f"{bundle}: raman-settings key {key} lacks the RAMAN_ prefix",
                    )
                    if settings is not None and key not in settings | EXTRA_ENV:
                        p.add(
                            f"{bundle}: raman-settings sets {key},"
                            " which is no field of service.settings.Settings"
                        )
        for kind in WORKLOADS & set(by_kind):
            for wl in by_kind[kind].values():
                _check_workload(
                    p,
                    bundle,
                    wl,
                    configmaps,
                    base_pvcs | set(by_kind.get("PersistentVolumeClaim", {})),
                    settings,
                )
        _check_selectors(p, bundle, by_kind)
        _check_bundle(p, bundle, by_kind)
    _check_adapter(p)
    images = {
        bundle: {c["image"] for o in objs for c in _containers(o)} for bundle, objs in docs.items()
    }
    worker_gpu = {i for i in images.get("overlay-gpu", set()) if "/worker" in i}
    template = images.get("finetune-job-template", set())
    p.check(
        template
        and {i.rsplit(":", 1)[-1] for i in template} == {i.rsplit(":", 1)[-1] for i in worker_gpu},
        f"{TEMPLATE}: image tag {template} differs from the gpu overlay's worker {worker_gpu}",
    )
    return p.report()


def _check_workload(
    p: Problems, bundle: str, wl: dict, configmaps: dict, pvcs: set[str], settings: set[str] | None
) -> None:
    where = f"{bundle}: {wl['kind']}/{wl['metadata']['name']}"
    pod = wl["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    p.check(
        psc.get("runAsNonRoot") is True, f"{where}: pod securityContext.runAsNonRoot must be true"
    )
    p.check(psc.get("runAsUser", 0) != 0, f"{where}: pod must not run as uid 0")
    p.check(
        psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{where}: seccompProfile RuntimeDefault",
    )
    k8s_jobs = (
        configmaps.get("raman-settings", {}).get("data", {}).get("RAMAN_FINETUNE_WORKER")
        == "kubernetes"
    )
    is_api = wl["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    p.check(
        pod.get("automountServiceAccountToken") is False or (k8s_jobs and is_api),
        f"{where}: automountServiceAccountToken must be false"
        " (only the API of the kubernetes job mode needs it)",
    )
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for v in volumes.values():
        if "persistentVolumeClaim" in v:
            p.check(
                v["persistentVolumeClaim"]["claimName"] in pvcs,
                f"{where}: PVC {v['persistentVolumeClaim']['claimName']} not defined",
            )
        if "configMap" in v:
            p.check(
                v["configMap"]["name"] in configmaps,
                f"{where}: ConfigMap {v['configMap']['name']} not defined",
            )
    for c in pod["containers"]:
        cw = f"{where} container {c['name']}"
        image = c["image"]
        p.check(
            ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
            f"{cw}: image {image} needs a fixed tag",
        )
        res = c.get("resources", {})
        for k in ("cpu", "memory"):
            p.check(k in res.get("requests", {}), f"{cw}: resources.requests.{k} missing")
        p.check("memory" in res.get("limits", {}), f"{cw}: resources.limits.memory missing")
        sc = c.get("securityContext", {})
        p.check(
            sc.get("allowPrivilegeEscalation") is False,
            f"{cw}: allowPrivilegeEscalation must be false",
        )
        p.check(
            sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem must be true"
        )
        p.check(
            "ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: capabilities must drop ALL"
        )
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        p.check(
            "/tmp" in mounts and "emptyDir" in volumes.get(mounts["/tmp"]["name"], {})
            if "/tmp" in mounts
            else False,
            f"{cw}: a read-only root filesystem needs an emptyDir on /tmp",
        )
        for m in mounts.values():
            p.check(m["name"] in volumes, f"{cw}: mounts undefined volume {m['name']}")
        p.check("/data/models" in mounts, f"{cw}: the model store must be mounted at /data/models")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                p.check(
                    ef["configMapRef"]["name"] in configmaps or ef["configMapRef"].get("optional"),
                    f"{cw}: envFrom ConfigMap {ef['configMapRef']['name']} not defined",
                )
            if "secretRef" in ef:
                p.check(
                    ef["secretRef"].get("optional") is True,
                    f"{cw}: the Secret {ef['secretRef']['name']} is not in the manifests;"
                    " mark it optional",
                )
        for key in env:
            if key.startswith("RAMAN_") and settings is not None:
                p.check(
                    key in settings | EXTRA_ENV,
                    f"{cw}: env {key} is no field of service.settings.Settings",
                )
        gpu = res.get("limits", {}).get("nvidia.com/gpu")
        comp = wl["metadata"]["labels"].get("app.kubernetes.io/component")
        if bundle.startswith("overlay-gpu") or bundle == "finetune-job":
            p.check(
                gpu is not None and int(gpu) >= 1,
                f"{cw}: GPU bundle without an nvidia.com/gpu limit",
            )
            p.check(image.endswith("-gpu"), f"{cw}: GPU bundle uses image {image}")
            p.check(
                any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])),
                f"{cw}: GPU pods should tolerate the nvidia.com/gpu taint",
            )
        if bundle.startswith("overlay-cpu"):
            p.check(gpu is None, f"{cw}: CPU overlay must not ask for GPUs")
            p.check(image.endswith("-cpu"), f"{cw}: CPU overlay uses image {image}")
        if comp == "api":
            _check_api(p, cw, wl, c, configmaps)
        if comp == "finetune":
            args = c.get("args", [])
            p.check(
                args[:1] == ["torchrun"] and any(a.startswith("--nproc_per_node") for a in args),
                f"{cw}: the fine-tune Job must launch torchrun with --nproc_per_node",
            )
            p.check(pod.get("restartPolicy") == "Never", f"{cw}: Job pods restartPolicy Never")
            p.check("/dev/shm" in mounts, f"{cw}: torchrun/NCCL need a memory-backed /dev/shm")


def _check_api(p: Problems, cw: str, wl: dict, c: dict, configmaps: dict) -> None:
    probes = {
        k: c.get(k, {}).get("httpGet", {}).get("path")
        for k in ("readinessProbe", "livenessProbe", "startupProbe")
    }
    p.check(
        probes["readinessProbe"] == "/v2/health/ready",
        f"{cw}: readinessProbe must GET /v2/health/ready",
    )
    p.check(
        probes["livenessProbe"] == "/v2/health/live",
        f"{cw}: livenessProbe must GET /v2/health/live",
    )
    p.check(probes["startupProbe"] is not None, f"{cw}: a startupProbe must cover model loading")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    p.check(pre[:1] == ["sleep"], f"{cw}: preStop sleep lets the Service drain before SIGTERM")
    pre_s = float(pre[1]) if len(pre) > 1 else 0.0
    settings = configmaps.get("raman-settings", {}).get("data", {})
    timeout = float(settings.get("RAMAN_REQUEST_TIMEOUT_S", 10))
    graceful = float(settings.get("RAMAN_GRACEFUL_SHUTDOWN_S", 10))
    grace = wl["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    p.check(
        graceful >= timeout,
        f"{cw}: RAMAN_GRACEFUL_SHUTDOWN_S ({graceful}) < RAMAN_REQUEST_TIMEOUT_S ({timeout})",
    )
    p.check(
        grace > pre_s + graceful,
        f"{cw}: terminationGracePeriodSeconds {grace} <="
        f" preStop {pre_s} + graceful shutdown {graceful}",
    )
    spec = wl["spec"]
    p.check(
        spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
        f"{cw}: rolling updates must keep every ready replica (maxUnavailable 0)",
    )
    p.check(spec.get("replicas", 1) >= 2, f"{cw}: at least two replicas")
    p.check(
        spec["template"]["spec"].get("topologySpreadConstraints"),
        f"{cw}: spread replicas over nodes",
    )
    ann = spec["template"]["metadata"].get("annotations", {})
    p.check(ann.get("prometheus.io/path") == "/metrics", f"{cw}: scrape annotations for /metrics")


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _check_selectors(p: Problems, bundle: str, by_kind: dict) -> None:
    deployments = by_kind.get("Deployment", {})
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for d in deployments.values():
        p.check(
            _selects(
                d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
            ),
            f"{bundle}: Deployment/{d['metadata']['name']} selector does not match its pods",
        )
    for s in by_kind.get("Service", {}).values():
        p.check(
            any(_selects(s["spec"]["selector"], lab) for lab in pods),
            f"{bundle}: Service/{s['metadata']['name']} selects no pod",
        )
        for port in s["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str):
                p.check(
                    any(
                        cp.get("name") == target
                        for d in deployments.values()
                        for c in d["spec"]["template"]["spec"]["containers"]
                        for cp in c.get("ports", [])
                    ),
                    f"{bundle}: Service port {target} names no container port",
                )
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        p.check(
            any(_selects(pdb["spec"]["selector"]["matchLabels"], lab) for lab in pods),
            f"{bundle}: PDB selects no pod",
        )
    for np_ in by_kind.get("NetworkPolicy", {}).values():
        p.check(
            any(_selects(np_["spec"]["podSelector"]["matchLabels"], lab) for lab in pods),
            f"{bundle}: NetworkPolicy selects no pod",
        )
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        ref = hpa["spec"]["scaleTargetRef"]
        p.check(
            ref["name"] in deployments, f"{bundle}: HPA targets missing Deployment {ref['name']}"
        )
        p.check(
            hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], f"{bundle}: HPA min > max"
        )
        for m in hpa["spec"]["metrics"]:
            if m["type"] == "Pods":
                metric = m["pods"]["metric"]["name"]
                p.check(
                    metric in SERIES,
                    f"{bundle}: HPA uses {metric}, not a metric the service exports",
                )


def _check_bundle(p: Problems, bundle: str, by_kind: dict) -> None:
    if bundle.startswith("overlay-"):
        for kind in (
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "ConfigMap",
            "PersistentVolumeClaim",
        ):
            p.check(kind in by_kind, f"{bundle}: no {kind}")
        settings = by_kind.get("ConfigMap", {}).get("raman-settings", {}).get("data", {})
        providers = settings.get("RAMAN_PROVIDERS", "")
        if bundle.startswith("overlay-cpu"):
            p.check(
                providers == "CPUExecutionProvider",
                f"{bundle}: RAMAN_PROVIDERS should be CPUExecutionProvider",
            )
        else:
            p.check(
                providers.startswith("CUDAExecutionProvider"),
                f"{bundle}: RAMAN_PROVIDERS should start with CUDA",
            )
            hpa = by_kind.get("HorizontalPodAutoscaler", {}).get("raman-api", {})
            p.check(
                any(m["type"] == "Pods" for m in hpa.get("spec", {}).get("metrics", [])),
                f"{bundle}: GPU HPA should scale on the queue depth (Pods metric)",
            )
    if bundle.endswith("-single-node"):
        for pvc in by_kind.get("PersistentVolumeClaim", {}).values():
            p.check(
                pvc["spec"]["accessModes"] == ["ReadWriteOnce"],
                f"{bundle}: component did not set ReadWriteOnce",
            )
    if bundle == "alert-rules":
        cm = by_kind.get("ConfigMap", {}).get("raman-prometheus-rules")
        p.check(
            cm
            and cm["data"].get("alerts.yml") == (REPO / "deploy/prometheus/alerts.yml").read_text(),
            f"{bundle}: ConfigMap raman-prometheus-rules must carry alerts.yml unchanged",
        )


def _check_adapter(p: Problems) -> None:
    path = REPO / "deploy/k8s/overlays/gpu/prometheus-adapter-values.yaml"
    values = yaml.safe_load(path.read_text())
    rules = values["rules"]["custom"]
    text = json.dumps(rules)
    for metric in metric_names(text):
        p.check(metric in SERIES, f"{path.name}: unknown metric {metric}")
    for r in rules:
        p.check(
            "<<.Series>>" in r["metricsQuery"] and "<<.LabelMatchers>>" in r["metricsQuery"],
            f"{path.name}: metricsQuery must use <<.Series>> and <<.LabelMatchers>>",
        )
        p.check(
            {"namespace", "pod"} <= set(r["resources"]["overrides"]),
            f"{path.name}: map namespace and pod labels",
        )
    hpa = yaml.safe_load((REPO / "deploy/k8s/overlays/gpu/hpa.yaml").read_text())
    served = {r["name"]["as"] for r in rules}
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "Pods":
            p.check(
                m["pods"]["metric"]["name"] in served,
                f"hpa.yaml: {m['pods']['metric']['name']} is not served by the adapter rules",
            )


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("render", "policy"):
        print(__doc__, file=sys.stderr)
        return 2
    outdir = Path(argv[2])
    return render(outdir) if argv[1] == "render" else policy(outdir)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
