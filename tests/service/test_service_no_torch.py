"""The service must import, build and answer without torch or `training` (DESIGN: one-way imports).

Run in a subprocess where `import torch` and `import training` fail, so a stray import anywhere in
`service` (or in what it pulls from `spectra`) breaks this test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    sys.modules["torch"] = None      # `import torch` now raises ImportError
    sys.modules["training"] = None
    import service, service.app
    for info in pkgutil.walk_packages(service.__path__, "service."):
        importlib.import_module(info.name)
    from fastapi.testclient import TestClient
    from service.settings import Settings
    app = service.app.create_app(Settings(model_store=sys.argv[1], warmup_batches=1))
    with TestClient(app) as client:
        grid = [0.1] * 101
        grid[30] = 1.0
        r = client.post("/v1/identify", json={"spectra": [{"intensities": grid}]})
        assert r.status_code == 200, r.text
        rows = "".join(f"{i},{i % 7}\\n" for i in range(200, 900))
        files = {"files": ("a.csv", ("x,y\\n" + rows).encode())}
        r = client.post("/v1/identify/files", files=files)
        assert r.status_code == 200, r.text
    roots = ("torch", "training")
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in roots and sys.modules[m])
    assert not leaked, leaked
    print("ok")
    """
)


def test_service_runs_without_torch(store: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(store)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
