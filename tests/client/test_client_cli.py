"""`raman-client` against the real service: table and JSON output, folders, errors, models."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from live_server import LiveServer

from raman_client.cli import build_parser, main

pytestmark = pytest.mark.slow
MODEL = "rruff-minerals"  # the fixture store's default model (see conftest.py)


def run(capsys: pytest.CaptureFixture[str], server: LiveServer, *args: str) -> tuple[int, str, str]:
    code = main([*args, "--url", server.url, "--retries", "0"])
    out, err = capsys.readouterr()
    return code, out, err


def test_identify_prints_a_table(
    capsys: pytest.CaptureFixture[str], server: LiveServer, tmp_path: Path,
    write_spectrum: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    quartz = write_spectrum(tmp_path / "quartz.csv", 0)
    code, out, _ = run(capsys, server, "identify", str(quartz), "--top-k", "3")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["spectrum", "match", "rank", "label", "prob", "similarity"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[:4] == ["quartz.csv", "yes", "1", "Quartz"]
    assert len(lines) == 2 + 3  # header, rule, three hits


def test_identify_json_and_unusable_files(
    capsys: pytest.CaptureFixture[str], server: LiveServer, tmp_path: Path,
    write_spectrum: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    calcite = write_spectrum(tmp_path / "calcite.csv", 1)
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"\x00\xff binary junk")
    code, out, _ = run(
        capsys, server, "identify", str(calcite), str(broken), "--json", "--top-k", "2"
    )
    results = json.loads(out)
    assert code == 1  # a file could not be used
    assert results[0]["file"] == "calcite.csv" and results[0]["match"] is True
    assert results[0]["predictions"][0]["label"] == "Calcite"
    assert results[0]["model"]["name"] == MODEL and results[0]["error"] is None
    assert results[1]["file"] == "broken.txt" and results[1]["error"]["status"] == 415
    code, out, _ = run(capsys, server, "identify", str(broken))
    assert code == 1 and "broken.txt" in out and "error" in out and "Unsupported content" in out


def test_identify_folder_with_progress_bar(
    capsys: pytest.CaptureFixture[str], server: LiveServer, tmp_path: Path,
    write_spectrum: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    for i in range(5):
        write_spectrum(tmp_path / "batch" / f"s{i}.csv", 3)
    code, out, err = run(capsys, server, "identify", str(tmp_path / "batch"), "--batch", "2",
                         "--progress", "--top-k", "1")  # fmt: skip
    assert code == 0
    assert sum("Anatase TiO2" in line for line in out.splitlines()) == 5
    assert "identify" in err and "5/5" in err


def test_server_problems_become_messages(
    capsys: pytest.CaptureFixture[str], server: LiveServer, tmp_path: Path,
    write_spectrum: Callable[[Path, int], Path],
) -> None:  # fmt: skip
    quartz = write_spectrum(tmp_path / "q.csv", 0)
    code, out, err = run(capsys, server, "identify", str(quartz), "--model", "nope")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "(404)" in err and "'nope'" in err
    code, _, err = run(capsys, server, "identify", str(tmp_path / "missing.txt"))
    assert code == 1 and "no such file or folder" in err


def test_models_table_and_json(capsys: pytest.CaptureFixture[str], server: LiveServer) -> None:
    code, out, _ = run(capsys, server, "models")
    assert code == 0
    rows = out.splitlines()
    assert rows[0].split()[:3] == ["model", "active", "versions"]
    assert any(r.startswith(f"{MODEL} (default)") and "200-1200 cm-1 (101)" in r for r in rows)
    code, out, _ = run(capsys, server, "models", "--json")
    assert {m["name"] for m in json.loads(out)} == {MODEL, "biomolecules"}


def test_module_entry_point_runs(server: LiveServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raman_client", "models", "--url", server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert MODEL in done.stdout


def test_options_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--api-key", "k1", "--url", "http://h:1", "--json", "jobs"])
    after = parser.parse_args(["jobs", "--api-key", "k1", "--url", "http://h:1", "--json"])
    for args in (before, after):
        assert (args.api_key, args.url, args.json, args.retries) == ("k1", "http://h:1", True, 4)
