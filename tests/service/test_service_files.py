"""`POST /v1/identify/files`: instrument files by content, per-file errors, all-failed 422."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from service_fixture_models import CLASSES, PEAKS

from service.app import create_app

URL = "/v1/identify/files"


def axis_and_peak(cls: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(150.0, 1300.0, 400)
    return x, 5.0 + 100.0 * np.exp(-0.5 * ((x - PEAKS[cls]) / 15.0) ** 2)


def csv_file(cls: int) -> bytes:
    x, y = axis_and_peak(cls)
    return (
        "wavenumber,intensity\n" + "".join(f"{a:.3f},{b:.4f}\n" for a, b in zip(x, y, strict=True))
    ).encode()


def rruff_file(cls: int) -> bytes:
    x, y = axis_and_peak(cls)
    rows = "".join(f"{a:.3f}, {b:.4f}\r\n" for a, b in zip(x, y, strict=True))
    return f"##NAMES={CLASSES[cls]}\r\n##RRUFFID=R000001\r\n{rows}##END=\r\n".encode()


def jcamp_file(cls: int) -> bytes:
    x, y = axis_and_peak(cls)
    head = [
        "##TITLE=sample",
        "##JCAMP-DX=4.24",
        "##DATA TYPE=RAMAN SPECTRUM",
        "##XUNITS=1/CM",
        "##YUNITS=ARBITRARY UNITS",
        "##XFACTOR=1",
        "##YFACTOR=1",
        f"##NPOINTS={x.size}",
        "##XYPOINTS=(XY..XY)",
    ]
    rows = [f"{a:.3f}, {b:.4f}" for a, b in zip(x, y, strict=True)]
    return ("\n".join([*head, *rows, "##END="]) + "\n").encode()


CORRUPT_JCAMP = b"##TITLE=x\n##JCAMP-DX=4.24\n##XYDATA=(X++(Y..Y))\nfoo bar baz\n##END=\n"
BINARY = bytes(range(256)) * 8


def upload(client: TestClient, files: list[tuple[str, bytes]], **form: Any) -> Any:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(URL, files=parts, data={k: str(v) for k, v in form.items()})


def test_every_supported_format_is_identified(client: TestClient) -> None:
    files = [("q.csv", csv_file(0)), ("c.txt", rruff_file(1)), ("g.jdx", jcamp_file(2))]
    r = upload(client, files, top_k=2)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [(x["id"], x["file"]) for x in results] == [(n, n) for n, _ in files]
    assert [x["predictions"][0]["label"] for x in results] == CLASSES[:3]
    assert all(len(x["predictions"]) == 2 and x["match"] for x in results)
    assert all("total_ms" in x["timings"] for x in results)


def test_include_spectrum_form_field_returns_model_input(client: TestClient) -> None:
    r = upload(client, [("q.csv", csv_file(0))], include_spectrum="true")
    assert r.status_code == 200, r.text
    spectrum = r.json()["results"][0]["spectrum"]
    assert len(spectrum["intensities"]) > 0 and max(spectrum["intensities"]) == 1.0
    lo, hi = spectrum["measured_range"]
    assert lo < hi


def test_one_corrupt_file_gets_an_error_result_and_the_others_are_answered(
    client: TestClient,
) -> None:
    files = [("good.csv", csv_file(3)), ("bad.jdx", CORRUPT_JCAMP), ("blob.bin", BINARY)]
    r = upload(client, files)
    assert r.status_code == 200, r.text
    good, bad, blob = r.json()["results"]
    assert good["predictions"][0]["label"] == CLASSES[3]
    assert bad["file"] == "bad.jdx" and bad["error"]["status"] == 422
    assert bad["error"]["type"].endswith("invalid-file") and "bad.jdx" in bad["error"]["detail"]
    assert blob["error"]["status"] == 415 and blob["error"]["type"].endswith(
        "unsupported-media-type"
    )
    assert "predictions" not in bad


def test_all_files_failing_is_422_naming_each_file(client: TestClient) -> None:
    r = upload(client, [("bad.jdx", CORRUPT_JCAMP), ("blob.bin", BINARY), ("empty.csv", b"")])
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("files-failed")
    assert all(name in problem["detail"] for name in ("bad.jdx", "blob.bin", "empty.csv"))
    assert [f["file"] for f in problem["files"]] == ["bad.jdx", "blob.bin", "empty.csv"]


def test_single_unsupported_binary_upload_is_422(client: TestClient) -> None:
    r = upload(client, [("photo.png", BINARY)])
    assert r.status_code == 422
    assert r.json()["files"][0]["error"]["status"] == 415


def test_client_paths_in_file_names_are_reduced_to_base_names(client: TestClient) -> None:
    r = upload(client, [("../../etc/q.csv", csv_file(0)), ("C:\\data\\c.csv", csv_file(1))])
    assert [x["file"] for x in r.json()["results"]] == ["q.csv", "c.csv"]


def test_file_limits(make_settings: Any) -> None:
    settings = make_settings(max_files_per_request=2, max_points_per_spectrum=300)
    with TestClient(create_app(settings)) as c:
        r = upload(c, [("a.csv", csv_file(0))] * 3)
        assert r.status_code == 413 and r.json()["type"].endswith("limit-exceeded")
        r = upload(c, [("long.csv", csv_file(0))])  # 400 points > 300
        assert r.status_code == 422 and r.json()["files"][0]["error"]["status"] == 413


def test_spectra_limit_counts_across_files_and_stops_reading(
    make_settings: Any, monkeypatch: Any
) -> None:
    import service.routes.files as files

    real, read = files.read_bytes, []

    def counting(data: bytes, name: str) -> Any:
        read.append(name)
        return real(data, name)

    monkeypatch.setattr(files, "read_bytes", counting)
    with TestClient(create_app(make_settings(max_spectra_per_request=2))) as c:
        names = ["a.csv", "b.csv", "c.csv", "d.csv"]
        r = upload(c, [(n, csv_file(0)) for n in names])
        assert r.status_code == 413 and r.json()["type"].endswith("limit-exceeded")
        assert "more than 2 spectra" in r.json()["detail"]
        assert read == ["a.csv", "b.csv", "c.csv"]  # d.csv was never read
        assert upload(c, [(n, csv_file(0)) for n in names[:2]]).status_code == 200


def test_a_reader_bug_on_one_file_fails_that_file_only(
    client: TestClient, monkeypatch: Any
) -> None:
    import service.routes.files as files

    real = files.read_bytes

    def flaky(data: bytes, name: str) -> Any:
        if name == "bad.csv":
            raise ValueError("a bug in a reader")
        return real(data, name)

    monkeypatch.setattr(files, "read_bytes", flaky)
    r = upload(client, [("bad.csv", csv_file(0)), ("good.csv", csv_file(1))])
    assert r.status_code == 200, r.text
    bad, good = r.json()["results"]
    assert bad["error"]["status"] == 422 and bad["error"]["type"].endswith("invalid-file")
    assert good["predictions"][0]["label"] == CLASSES[1]


def test_form_fields_are_validated(client: TestClient) -> None:
    assert upload(client, [("a.csv", csv_file(0))], top_k=0).status_code == 422
    assert upload(client, [("a.csv", csv_file(0))], top_k=500).status_code == 422
    assert upload(client, [("a.csv", csv_file(0))], model="nope").status_code == 404
    assert client.post(URL, files=[("top_k", (None, "3"))]).status_code == 422  # no files at all


def test_blank_model_and_version_fields_mean_the_defaults_as_a_web_form_sends_them(
    client: TestClient,
) -> None:
    """A web form sends an untouched input as an empty field: the default model and its active
    version answer, as when the fields are left out (a JSON body's "" stays a 422)."""
    r = upload(client, [("a.csv", csv_file(0))], model="", version="")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == upload(client, [("a.csv", csv_file(0))]).json()["model"]
    body = {"spectra": [{"intensities": [0.0, 1.0, 0.0]}], "version": ""}
    assert client.post("/v1/identify", json=body).status_code == 422


def test_a_body_that_is_not_multipart_is_415(client: TestClient) -> None:
    for kwargs in ({"json": {"files": []}}, {"data": {"top_k": "3"}}, {"content": b"x"}):
        r = client.post(URL, **kwargs)
        assert r.status_code == 415, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "multipart/form-data" in r.json()["detail"]
