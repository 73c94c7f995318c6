"""Benchmark: the raw onnxruntime session vs the HTTP service on the same model, in one run.

    python bench/bench_service.py [--model-dir models/rruff-minerals/<version>] [--duration 3]
                                  [--out bench/results]

(a) Raw session (same session options as the service): p50/p99 latency at batch 1, and
    throughput (spectra/s) at batch sizes 1..64.
(b) The real server process (`python -m service`) on loopback: p50/p99 at concurrency 1 with one
    spectrum per request, and throughput at concurrency 1..64 (one spectrum per request). The
    load generator is a minimal asyncio HTTP/1.1 client with keep-alive connections, so that on a
    small machine the client steals as little CPU from the server as possible.
Writes `bench_service.json` and `bench_service.md` (machine, model, settings, results, targets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from service.registry import ModelStore  # noqa: E402
from service.runtime import RuntimeConfig, plan_providers, session_options  # noqa: E402
from spectra.card import ModelCard  # noqa: E402
from spectra.version import code_version  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64)
PAIRED_ROUNDS = 5
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=default_model_dir())
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measured point")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="service batching wait")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--intra-op-threads", type=int, default=0, help="0: onnxruntime default")
    p.add_argument("--spinning", action="store_true", help="RAMAN_INTRA_OP_SPINNING=true")
    p.add_argument("--providers", default="CUDAExecutionProvider,CPUExecutionProvider")
    return p.parse_args()


def default_model_dir() -> Path:
    """The shipped default model's active version (what the service would serve)."""
    store = ModelStore(REPO / "models")
    return store.version_dir("rruff-minerals", store.active_version("rruff-minerals"))


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"^model name\s*:\s*(.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
    }


# --- (a) raw session ---


def raw_session(model_dir: Path, cfg: RuntimeConfig) -> ort.InferenceSession:
    plan = plan_providers(cfg, ort.get_available_providers())
    return ort.InferenceSession(
        str(model_dir / "model.onnx"),
        session_options(cfg),
        providers=plan.providers,
        provider_options=plan.options,
    )


def timed_runs(
    session: ort.InferenceSession, batch: np.ndarray, duration: float
) -> tuple[list[float], float]:
    """Wall time of each run, and the CPU seconds (all threads) per run."""
    feed = {"spectra": batch}
    for _ in range(3):
        session.run(None, feed)
    times, deadline, cpu0 = [], time.perf_counter() + duration, time.process_time()
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return times, (time.process_time() - cpu0) / len(times)


def bench_raw(session: ort.InferenceSession, card: ModelCard, duration: float) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    one, cpu_one = timed_runs(
        session, rng.random((1, 1, card.grid.points), dtype=np.float32), duration
    )
    throughput, cpu_ms = {}, {}
    for b in BATCHES:
        times, cpu = timed_runs(
            session, rng.random((b, 1, card.grid.points), dtype=np.float32), duration
        )
        throughput[b], cpu_ms[b] = b * len(times) / sum(times), cpu * 1e3 / b
        print(f"  raw batch {b:>2}: {throughput[b]:9.1f} spectra/s", flush=True)
    return {
        "provider": session.get_providers()[0],
        "batch1": percentiles(one) | {"cpu_ms": cpu_one * 1e3},
        "throughput": throughput,
        "cpu_ms_per_spectrum": cpu_ms,
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(ms),
    }


# --- (b) the real server ---


def stage_store(model_dir: Path, root: Path) -> tuple[str, str]:
    """A one-model store (`<root>/<name>/<version>/`) holding links to the model's files."""
    card = ModelCard.load(model_dir)
    name, version = model_dir.parent.name, model_dir.name
    target = root / name / version
    target.mkdir(parents=True)
    for f in ("model.onnx", "model.json", "references.npz"):
        try:
            os.link(model_dir / f, target / f)
        except OSError:
            shutil.copy2(model_dir / f, target / f)
    print(f"  staged {card.name} v{card.version} as {name}/{version}", flush=True)
    return name, version


@contextmanager
def running_server(
    store: Path, name: str, args: argparse.Namespace
) -> Iterator[tuple[int, int, float]]:
    """The real server on a free loopback port: (port, pid, seconds from launch to ready: the
    interpreter's start, imports, and loading, checking and warming the model)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {
        "RAMAN_MODEL_STORE": str(store),
        "RAMAN_DEFAULT_MODEL": name,
        "RAMAN_MAX_WAIT_MS": str(args.max_wait_ms),
        "RAMAN_MAX_BATCH_SIZE": str(args.max_batch_size),
        "RAMAN_INTRA_OP_THREADS": str(args.intra_op_threads),
        "RAMAN_INTRA_OP_SPINNING": str(args.spinning).lower(),
        "RAMAN_PROVIDERS": args.providers,
        "RAMAN_QUEUE_SIZE": "4096",
        "RAMAN_LOG_LEVEL": "warning",
    }
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        wait_ready(proc, port)
        yield port, proc.pid, time.perf_counter() - started
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def wait_ready(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            status, body = asyncio.run(single_get(port, "/v2/health/ready"))
        except OSError:  # models load before the port opens
            time.sleep(0.2)
            continue
        if status == 200:
            return
        raise SystemExit(f"the server started without a usable model: {body.decode()}")
    raise SystemExit("the server did not become ready")


async def single_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    result = await read_response(reader)
    writer.close()
    return result


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length:\s*(\d+)", head, re.I)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return int(head[9:12]), body


def identify_request(card: ModelCard, model_dir: Path) -> bytes:
    """One on-grid spectrum (a class reference plus noise, 6 decimals) as an HTTP request."""
    with np.load(model_dir / "references.npz") as npz:
        ref = np.asarray(npz["references"][0], dtype=np.float64)
    y = ref + np.random.default_rng(1).normal(0, 0.01, ref.shape)
    body = json.dumps(
        {"spectra": [{"id": "b", "intensities": [round(v, 6) for v in y]}], "top_k": 5}
    )
    head = (
        "POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body.encode()


async def load(port: int, request: bytes, concurrency: int, duration: float) -> dict[str, Any]:
    """`concurrency` keep-alive connections sending `request` back to back for `duration` s."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    warm_n = 0

    async def worker(deadline: float, record: bool) -> None:
        nonlocal warm_n
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            writer.write(request)
            status, _ = await read_response(reader)
            if not record:
                warm_n += 1
                continue
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[status] = errors.get(status, 0) + 1
        writer.close()

    warm = time.perf_counter() + min(1.0, duration / 3)
    await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
    started = time.perf_counter()
    await asyncio.gather(*(worker(started + duration, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "throughput": len(latencies) / elapsed,
        "errors": errors,
        "warm_n": warm_n,
        **percentiles(latencies),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), robust to other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_http(port: int, pid: int, request: bytes, duration: float) -> dict[str, Any]:
    points = {}
    for c in CONCURRENCY:
        cpu0 = cpu_seconds(pid)
        points[c] = asyncio.run(load(port, request, c, duration))
        # Includes the warm-up requests; the server's CPU per answered request (~10 ms ticks).
        done = points[c]["n"] + points[c]["warm_n"]
        points[c]["server_cpu_ms"] = (cpu_seconds(pid) - cpu0) * 1e3 / max(done, 1)
        p = points[c]
        print(
            f"  http c={c:>2}: {p['throughput']:8.1f} spectra/s  p50 {p['p50_ms']:.2f} ms  "
            f"p99 {p['p99_ms']:.2f} ms  errors {p['errors']}",
            flush=True,
        )
    _, body = asyncio.run(single_get(port, "/metrics"))
    return {"concurrency": points, "batch_size_mean": mean_batch(body.decode())}


def mean_batch(metrics: str) -> float | None:
    total = re.search(r"^raman_batch_size_sum\{[^}]*\} (\S+)$", metrics, re.M)
    count = re.search(r"^raman_batch_size_count\{[^}]*\} (\S+)$", metrics, re.M)
    if not total or not count or float(count.group(1)) == 0:
        return None
    return float(total.group(1)) / float(count.group(1))


# --- report ---


def paired(
    session: ort.InferenceSession, port: int, request: bytes, card: ModelCard, slice_s: float
) -> dict[str, float]:
    """The target comparisons, measured in alternating slices (raw, HTTP, raw, HTTP, ...) so
    that both sides see the same background load; medians over the rounds."""
    rng = np.random.default_rng(2)
    one = rng.random((1, 1, card.grid.points), dtype=np.float32)
    many = rng.random((32, 1, card.grid.points), dtype=np.float32)
    rounds: dict[str, list[float]] = {"raw1": [], "http1": [], "raw32": [], "http32": []}
    for _ in range(PAIRED_ROUNDS):
        times, _ = timed_runs(session, one, slice_s)
        rounds["raw1"].append(float(np.median(times)) * 1e3)
        rounds["http1"].append(asyncio.run(load(port, request, 1, slice_s))["p50_ms"])
        times, _ = timed_runs(session, many, slice_s)
        rounds["raw32"].append(32 * len(times) / sum(times))
        rounds["http32"].append(asyncio.run(load(port, request, 32, slice_s))["throughput"])
    return {key: float(np.median(values)) for key, values in rounds.items()}


def targets(pair: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "target": "HTTP p50 at concurrency 1 <= raw batch-1 p50 + 2 ms",
            "value": f"{pair['http1']:.2f} ms vs {pair['raw1']:.2f} + 2 ms",
            "met": pair["http1"] <= pair["raw1"] + 2.0,
        },
        {
            "target": "HTTP throughput at concurrency 32 >= 0.8 x raw throughput at batch 32",
            "value": f"{pair['http32']:.0f} vs 0.8 x {pair['raw32']:.0f} spectra/s",
            "met": pair["http32"] >= 0.8 * pair["raw32"],
        },
        {
            "target": "one spectrum end to end p50 <= 10 ms",
            "value": f"{pair['http1']:.2f} ms",
            "met": pair["http1"] <= 10.0,
        },
    ]


def markdown(result: dict[str, Any]) -> str:
    m, raw, http = result["machine"], result["raw"], result["http"]
    lines = [
        f"# Service benchmark: {result['model']['name']} v{result['model']['version']}",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}",
        f"- code: {result.get('code_version', 'not recorded')}",
        f"- onnxruntime {m['onnxruntime']}; provider: raw {raw['provider']}, service "
        f"{result['service_provider']}",
        f"- model: L = {result['model']['points']}, C = {result['model']['classes']}, "
        f"{result['model']['onnx_mb']:.1f} MB ONNX",
        f"- service settings: {json.dumps(result['settings'])}",
        f"- {result['duration_s']:g} s per point; load average before/after: {result['load']}",
        f"- mean batch size over the HTTP run: {http['batch_size_mean']}",
        f"- server start to ready (imports, model load and warm-up): {result['startup_s']} s",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| raw session, batch 1 | {raw['batch1']['p50_ms']:.2f} | {raw['batch1']['p99_ms']:.2f} |",
        f"| HTTP, concurrency 1 | {http['concurrency'][1]['p50_ms']:.2f} | "
        f"{http['concurrency'][1]['p99_ms']:.2f} |",
        "",
        "| batch / concurrency | raw spectra/s | raw CPU ms/spectrum | HTTP spectra/s "
        "| HTTP p50 ms | HTTP p99 ms | server CPU ms/request |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in BATCHES:
        h = http["concurrency"][n]
        lines.append(
            f"| {n} | {raw['throughput'][n]:.0f} | {raw['cpu_ms_per_spectrum'][n]:.2f} | "
            f"{h['throughput']:.0f} | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | "
            f"{h['server_cpu_ms']:.2f} |"
        )
    lines += [
        "",
        f"Targets, from {PAIRED_ROUNDS} rounds of alternating raw / HTTP slices (medians):",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |"
        for t in result["targets"]
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    model_dir = args.model_dir.resolve()
    if not (model_dir / "model.onnx").is_file():
        raise SystemExit(f"no model at {model_dir} (use --model-dir <store>/<name>/<version>)")
    card = ModelCard.load(model_dir)
    cfg = RuntimeConfig(
        providers=tuple(args.providers.split(",")),
        intra_op_threads=args.intra_op_threads,
        intra_op_spinning=args.spinning,
    )
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"raw session: {model_dir}", flush=True)
    session = raw_session(model_dir, cfg)
    raw = bench_raw(session, card, args.duration)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        name, version = stage_store(model_dir, Path(tmp))
        print("HTTP service:", flush=True)
        with running_server(Path(tmp), name, args) as (port, pid, startup_s):
            _, models = asyncio.run(single_get(port, f"/v1/models/{name}"))
            request = identify_request(card, model_dir)
            http = bench_http(port, pid, request, args.duration)
            print("paired target measurements:", flush=True)
            pair = paired(session, port, request, card, max(0.5, args.duration / 3))
    result = {
        "code_version": code_version(),
        "machine": machine_info(),
        "model": {
            "name": name,
            "version": version,
            "dir": str(model_dir),
            "points": card.grid.points,
            "classes": len(card.classes),
            "onnx_mb": (model_dir / "model.onnx").stat().st_size / 1e6,
        },
        "settings": {
            "max_wait_ms": args.max_wait_ms,
            "max_batch_size": args.max_batch_size,
            "intra_op_threads": args.intra_op_threads,
            "intra_op_spinning": args.spinning,
            "providers": args.providers,
        },
        "service_provider": json.loads(models)["provider"],
        "duration_s": args.duration,
        # Other processes on the machine skew every number: the 1/5/15-minute load averages.
        "load": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "startup_s": round(startup_s, 2),
        "raw": raw,
        "http": http,
    }
    result["paired"] = pair
    result["targets"] = targets(pair)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_service.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bench_service.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
