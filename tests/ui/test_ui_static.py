"""The page's files: served by the app itself (no CDN), relative URLs, strict CSP, no escapes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.routes.ui import STATIC_DIR
from service.settings import Settings

VENDOR = STATIC_DIR / "vendor" / "uplot"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(model_store=tmp_path / "empty-store", providers=["CPUExecutionProvider"])
    with TestClient(create_app(settings)) as c:
        yield c


def test_index_is_served_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert (
        "script-src 'self'" in csp and "connect-src 'self'" in csp and "'unsafe-inline'" not in csp
    )
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.head("/").status_code == 200


def test_every_asset_is_local_and_served(client: TestClient) -> None:
    html = (STATIC_DIR / "index.html").read_text()
    urls = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert urls and not [u for u in urls if "//" in u or u.startswith("/")]  # relative only
    assets = [u for u in urls if u.startswith("static/")]
    for url in assets:
        r = client.get("/" + url)
        assert r.status_code == 200, url
    modules = {"static/app.js"} | {f"static/js/{p.name}" for p in (STATIC_DIR / "js").glob("*.js")}
    for module in modules:
        source = (STATIC_DIR / module.removeprefix("static/")).read_text()
        for target in re.findall(r'from "([^"]+)"', source):
            assert target.startswith("./"), f"{module} imports {target}"
    js = client.get("/static/app.js")
    assert js.headers["content-type"].startswith(("text/javascript", "application/javascript"))


def test_plotting_library_is_vendored_with_its_licence() -> None:
    assert (VENDOR / "LICENSE").read_text().startswith("The MIT License")
    assert (
        (VENDOR / "uPlot.iife.min.js")
        .read_text()
        .startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    )
    sources = [STATIC_DIR / "index.html", STATIC_DIR / "app.css", *STATIC_DIR.glob("js/*.js")]
    assert not [p.name for p in sources if re.search(r"cdn|unpkg|jsdelivr", p.read_text(), re.I)]


@pytest.mark.parametrize(
    "path", ["/static/../service/app.py", "/static/%2e%2e/routes/ui.py", "/static/nope.js"]
)
def test_nothing_outside_the_static_folder(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
