"""Helpers for the fine-tune tests: synthetic labelled spectra, archives of instrument files, a
tiny trained base model exported to a store, and a real server process.

Spectra are Lorentzian peaks on a 100-1200 cm-1 axis; each class has its own peak positions, so
a tiny DRCNN separates them after a few epochs.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from spectra.grid import Grid

REPO_ROOT = Path(__file__).resolve().parents[2]
GRID = Grid(100.0, 1200.0, 128)
API_KEY = "ft-test-key"
BASE_MODEL = "lab-minerals"
BASE_PEAKS = {"Quartz": (206.0, 464.0), "Calcite": (282.0, 712.0, 1086.0),
              "Diamond": (1000.0,), "Beryl": (322.0, 685.0, 1067.0)}  # fmt: skip
NEW_PEAKS = {
    "Aspirin": (300.0, 750.0),
    "Caffeine": (555.0, 1030.0),
    "Glucose": (420.0, 900.0, 1120.0),
}


def spectrum(peaks: Iterable[float], seed: int, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """(wavenumbers, intensities) of one noisy spectrum on its own (finer) axis."""
    rng = np.random.default_rng(seed)
    x = np.linspace(90.0, 1210.0, points)
    y = np.full_like(x, 0.05)
    for c in peaks:
        y += rng.uniform(0.6, 1.0) / (1.0 + ((x - c - rng.uniform(-3, 3)) / 10.0) ** 2)
    return x, y + rng.normal(0.0, 0.01, x.shape)


def on_grid(peaks: Iterable[float], seed: int) -> list[float]:
    """Intensities of one spectrum already sampled on `GRID`."""
    x, y = spectrum(peaks, seed)
    return [float(v) for v in np.interp(GRID.axis, x, y)]


def labelled_json(
    classes: dict[str, tuple[float, ...]], per_class: int, seed: int = 0
) -> list[dict[str, Any]]:
    """JSON spectra with labels, alternating on-grid and wavenumber/intensity pairs."""
    out = []
    for k, (label, peaks) in enumerate(classes.items()):
        for i in range(per_class):
            s = seed * 1000 + k * 100 + i
            if i % 2:
                out.append({"label": label, "intensities": on_grid(peaks, s)})
            else:
                x, y = spectrum(peaks, s)
                out.append({"label": label, "wavenumbers": x.tolist(), "intensities": y.tolist()})
    return out


def csv_bytes(peaks: Iterable[float], seed: int) -> bytes:
    """A two-column CSV file with a header."""
    x, y = spectrum(peaks, seed)
    rows = "\n".join(f"{a:.3f},{b:.6f}" for a, b in zip(x, y, strict=True))
    return ("wavenumber,intensity\n" + rows + "\n").encode()


def zip_archive(files: dict[str, bytes]) -> bytes:
    """A zip holding `files` (name -> bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def targz_archive(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding `files`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def manifest_files(
    classes: dict[str, tuple[float, ...]], per_class: int, seed: int
) -> dict[str, bytes]:
    """CSV files plus `manifest.csv` (file,label)."""
    files, rows = {}, ["file,label"]
    for k, (label, peaks) in enumerate(classes.items()):
        for i in range(per_class):
            name = f"spectra/{label.lower()}_{i}.csv"
            files[name] = csv_bytes(peaks, seed * 1000 + k * 100 + i)
            rows.append(f"{name},{label}")
    files["manifest.csv"] = ("\n".join(rows) + "\n").encode()
    return files


def folder_files(
    classes: dict[str, tuple[float, ...]], per_class: int, seed: int
) -> dict[str, bytes]:
    """CSV files in one folder per label, under a common top folder."""
    return {
        f"lab-export/{label}/{i}.csv": csv_bytes(peaks, seed * 1000 + k * 100 + i)
        for k, (label, peaks) in enumerate(classes.items())
        for i in range(per_class)
    }


def build_base_model(store: Path, name: str = BASE_MODEL, epochs: int = 6) -> Path:
    """Train a tiny DRCNN on the base classes for a few epochs and export it as version 1."""
    import torch

    from spectra.card import Calibration
    from spectra.preprocess import Preprocessor
    from spectra.references import References
    from training.export import ExportInputs, export_version
    from training.model import DRCNN, DRCNNConfig, arch_of
    from training.train import Arrays, TrainConfig, fit

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pre = Preprocessor(GRID)
    xs, ys = [], []
    for k, peaks in enumerate(BASE_PEAKS.values()):
        for i in range(16):
            xs.append(pre.prepare(*spectrum(peaks, 10_000 + k * 100 + i)).values)
            ys.append(k)
    x, y = np.stack(xs), np.array(ys, dtype=np.int64)
    model = DRCNN(
        DRCNNConfig(input_length=GRID.points, n_classes=len(BASE_PEAKS), depth=2, width_div=16)
    )
    cfg = TrainConfig(
        epochs=epochs, patience=epochs, lr=1e-3, batch_size=16, device="cpu", progress=False
    )
    fit(model, Arrays(x, y, x[::4], y[::4]), cfg, store.parent / "base-run")
    inputs = ExportInputs(
        name=name, version="1", classes=list(BASE_PEAKS), grid=GRID,
        references=References(x, y), calibration=Calibration(),
        metrics={}, data={"source": "synthetic"}, architecture=arch_of(model), parity_inputs=x[:16],
    )  # fmt: skip
    return export_version(model.eval(), inputs, store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`python -m service` in a child process, with a local fine-tune worker."""

    def __init__(self, model_store: Path, job_store: Path, log_path: Path, **env: str) -> None:
        self.model_store, self.job_store, self.log_path = model_store, job_store, log_path
        self.extra_env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "RAMAN_MODEL_STORE": str(self.model_store), "RAMAN_JOB_STORE": str(self.job_store),
            "RAMAN_API_KEYS": API_KEY, "RAMAN_DEFAULT_MODEL": BASE_MODEL,
            "RAMAN_PROVIDERS": "CPUExecutionProvider", "RAMAN_INTRA_OP_THREADS": "1",
            "RAMAN_WARMUP_BATCHES": "1", "RAMAN_FINETUNE_POLL_S": "0.2",
            "RAMAN_FINETUNE_WORKER_THREADS": "1", "RAMAN_FINETUNE_WORKER_NICE": "0",
            "RAMAN_FINETUNE_CANCEL_GRACE_S": "2", "RAMAN_FINETUNE_HEARTBEAT_TIMEOUT_S": "30",
            "RAMAN_GRACEFUL_SHUTDOWN_S": "2", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        })  # fmt: skip
        env.update(self.extra_env)
        return env

    def start(self, timeout_s: float = 60.0) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(self.port)],
            cwd=REPO_ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": API_KEY}, timeout=30.0)


def wait_for(
    client: httpx.Client, job_id: str, states: set[str], timeout_s: float
) -> dict[str, Any]:
    """Poll a job until it reaches one of `states` (fails with its log otherwise)."""
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/finetune-jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.25)
    log = client.get(f"/v1/finetune-jobs/{job_id}/log").json()
    raise AssertionError(f"job {job_id} is {job.get('state')}, not {states}: {job} {log}")
