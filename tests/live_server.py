"""Start the real service process (`python -m service`) for tests that talk HTTP to it.

Shared by tests/client and tests/ui. The server gets its settings from `RAMAN_*` environment
variables, binds a free local port and is stopped (SIGTERM, then SIGKILL) when the test ends;
on a start failure the exception carries the tail of its log.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90.0
FINETUNE_SETTINGS = {
    "finetune_poll_s": "0.2", "finetune_worker_threads": "1", "finetune_cancel_grace_s": "2",
    "graceful_shutdown_s": "2",
}  # fmt: skip
"""Settings for servers that run fine-tune jobs in tests: quick polls, one training thread."""


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, workdir: Path, **settings: str) -> LiveServer:
    """Run the service on `store` until `/v2/health/ready` answers 200 (or fail with its log)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMAN_")}
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env |= {
        "PYTHONPATH": path,  # the fine-tune worker is a child process of the server
        "OMP_NUM_THREADS": "1",
        "RAMAN_MODEL_STORE": str(store),
        "RAMAN_JOB_STORE": str(workdir / "jobs"),
        "RAMAN_PROVIDERS": "CPUExecutionProvider",
        "RAMAN_WARMUP_BATCHES": "1",
        "RAMAN_INTRA_OP_THREADS": "1",
        "RAMAN_LOG_LEVEL": "warning",
    } | {f"RAMAN_{k.upper()}": v for k, v in settings.items()}
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = LiveServer(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server)
    except Exception:
        server.stop()
        raise
    return server


def wait_ready(server: LiveServer, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"the service exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready within {timeout_s} s:\n{server.log_tail()}")


def fixture_models() -> ModuleType:
    """tests/service/service_fixture_models.py (tiny ONNX models built with onnx.helper)."""
    return _test_module("service/service_fixture_models.py")


def finetune_fixtures() -> ModuleType:
    """tests/finetune/finetune_fixtures.py (a tiny trained DRCNN base, labelled archives)."""
    return _test_module("finetune/finetune_fixtures.py")


_BASE_CACHE: list[Path] = []


def add_finetune_base(store: Path) -> str:
    """Copy a tiny trained DRCNN base (`lab-minerals` version 1, with `weights.pt`) into `store`;
    it is trained once per test process (about 20 s on one CPU thread). Returns its name."""
    ft = finetune_fixtures()
    if not _BASE_CACHE:
        cache = Path(tempfile.mkdtemp(prefix="raman-base-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        ft.build_base_model(cache / "models")
        _BASE_CACHE.append(cache / "models" / ft.BASE_MODEL)
    shutil.copytree(_BASE_CACHE[0], store / ft.BASE_MODEL)
    return str(ft.BASE_MODEL)


def _test_module(relative: str) -> ModuleType:
    """A helper module of another test folder, loaded once by file path (folders of tests are
    not packages, so they are not importable by name from here)."""
    path = REPO_ROOT / "tests" / relative
    name = path.stem
    if name in sys.modules:  # already imported by that folder's own tests
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def request_count(url: str, route: str, status: str = "200") -> float:
    """`raman_http_requests_total` for one route and status, read from `/metrics`."""
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    wanted = ("raman_http_requests_total{", f'route="{route}"', f'status="{status}"')
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(wanted[0]) and wanted[1] in line and wanted[2] in line
    )
