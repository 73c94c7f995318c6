"""The web page in a real browser (Debian's headless Chromium driven by Playwright) against the
real server process: upload a spectrum, find the expected label among the hits, overlay its
reference, see a corrupt file's error in words, paste two columns, open the jobs view.

With the shipped model (the active version under `models/rruff-minerals/`) the query is a real
RRUFF file taken from ../shared/data; without it, a fixture model and a synthetic file whose class
is known.
Screenshots go to tests/ui/artifacts/ (git-ignored); with RAMAN_UI_UPDATE_DOCS=1 the two shown in
README.md are also copied to docs/screenshots/.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from live_server import (
    FINETUNE_SETTINGS,
    REPO_ROOT,
    LiveServer,
    add_finetune_base,
    finetune_fixtures,
    fixture_models,
    start_server,
)

from service.registry import ModelStore

if TYPE_CHECKING:
    from playwright.sync_api import FilePayload, Page, Playwright, ViewportSize

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# the shipped model's active version as the service picks it (a hard-coded version silently fell
# back to the fixture model when the default was retrained)
_SHIPPED = ModelStore(REPO_ROOT / "models")
REAL_CARD = _SHIPPED.version_dir("rruff-minerals", _SHIPPED.active_version("rruff-minerals"))
REAL_CARD /= "model.json"
RRUFF_ZIP = (
    REPO_ROOT.parent
    / "shared"
    / "data"
    / "rruff_excellent_unoriented_2019"
    / "excellent_unoriented.zip"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
DOCS_SHOTS = REPO_ROOT / "docs" / "screenshots"
API_KEY = "ui-test-key"
HAS_TORCH = importlib.util.find_spec("torch") is not None
BASE = "lab-minerals"
"""A tiny trained DRCNN added to the store so the page can run a real fine-tune job."""
LAPTOP: ViewportSize = {"width": 1366, "height": 768}
TABLET: ViewportSize = {"width": 1024, "height": 768}
PREFERRED = ("Quartz", "Calcite", "Diamond", "Gypsum")


@dataclass
class Scenario:
    store: Path
    query: Path
    expected: str
    real: bool
    extras: list[Path]
    """More files uploaded with the query: a partial copy of it (low coverage) and, with the
    fixture model, a spectrum with three classes' peaks (no confident match)."""


@pytest.fixture(scope="module")
def playwright_api() -> Iterator[Playwright]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run tests/ui/install_browser.sh (apt chromium)")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    tmp = tmp_path_factory.mktemp("ui")
    if REAL_CARD.is_file():
        return real_scenario(tmp)
    models = fixture_models()
    store = tmp / "models"
    models.write_version(store, "rruff-minerals", "1")
    # The fixture's class 0 is Quartz (a peak at 300 cm-1); noise and a weak foreign band make
    # the query look measured.
    rng = np.random.default_rng(7)
    x = np.linspace(1300.0, 150.0, 700)
    y = (
        40
        + 0.01 * x
        + 100 * np.exp(-0.5 * ((x - 300) / 15) ** 2)
        + 12 * np.exp(-0.5 * ((x - 655) / 20) ** 2)
    )
    name = "Quartz__R000001__Raman__532__0__unoriented__Raman_Data_Processed__1.txt"
    query = rruff_file(tmp / name, "Quartz", x, y + rng.normal(0, 1.5, x.size))
    mixed = 40 + sum(100 * np.exp(-0.5 * ((x - c) / 15) ** 2) for c in (300, 500, 800))
    unknown = rruff_file(
        tmp / "unknown-mixture.txt", "Unknown", x, mixed + rng.normal(0, 1.5, x.size)
    )
    return Scenario(store, query, "Quartz", False, [partial_copy(query), unknown])


def rruff_file(path: Path, name: str, x: np.ndarray, y: np.ndarray) -> Path:
    rows = "".join(f"{a:.4f}, {b:.6E}\n" for a, b in zip(x, y, strict=True))
    path.write_text(f"##NAMES={name}\n##RRUFFID=R000001\n{rows}##END=\n")
    return path


def partial_copy(path: Path) -> Path:
    """The file's header and the lower half of its measured range (a low-coverage spectrum)."""
    lines = path.read_text(errors="replace").splitlines()
    rows = [ln for ln in lines if ln[:1].isdigit()]
    xs = [float(ln.split(",")[0]) for ln in rows]
    cut = min(xs) + 0.5 * (max(xs) - min(xs))
    kept = [ln for ln, x in zip(rows, xs, strict=True) if x <= cut]
    header = [ln for ln in lines if ln.startswith("##") and not ln.startswith("##END")]
    target = path.with_name(f"partial-{path.stem[:24]}.txt")
    target.write_text("\n".join([*header, *kept, "##END="]) + "\n")
    return target


def real_scenario(tmp: Path) -> Scenario:
    """The shipped model and a real RRUFF file of a class it knows."""
    if not RRUFF_ZIP.is_file():
        pytest.skip(f"real RRUFF data not found at {RRUFF_ZIP} (needs ../shared/data)")
    classes = json.loads(REAL_CARD.read_text())["classes"]
    label = next((c for c in PREFERRED if c in classes), None)
    if label is None:
        pytest.skip(f"the shipped model knows none of {PREFERRED}")
    with zipfile.ZipFile(RRUFF_ZIP) as zf:
        members = sorted(
            n for n in zf.namelist() if n.startswith(f"{label}__") and "Processed" in n
        )
        member = next((n for n in members if "__532__" in n), members[0])
        query = tmp / Path(member).name
        query.write_bytes(zf.read(member))
    store = tmp / "models"
    linked_copy(REAL_CARD.parents[1], store / "rruff-minerals")
    return Scenario(store, query, label, True, [partial_copy(query)])


def linked_copy(source: Path, target: Path) -> None:
    """Copy a model folder as hard links where possible (model files can be large)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


@pytest.fixture(scope="module")
def server(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if HAS_TORCH:
        assert add_finetune_base(scenario.store) == BASE
    workdir = tmp_path_factory.mktemp("ui-server")
    live = start_server(scenario.store, workdir, api_keys=API_KEY, **FINETUNE_SETTINGS)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def page_errors() -> list[str]:
    """Uncaught exceptions thrown by the page's scripts."""
    return []


@pytest.fixture(scope="module")
def page(playwright_api: Playwright, server: LiveServer, page_errors: list[str]) -> Iterator[Page]:
    browser = playwright_api.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    context = browser.new_context(viewport=LAPTOP, device_scale_factor=1)
    pg = context.new_page()
    pg.on("pageerror", lambda exc: page_errors.append(str(exc)))
    pg.set_default_timeout(20_000)
    pg.goto(server.url + "/")
    pg.wait_for_selector("#model-select option[value='rruff-minerals']", state="attached")
    yield pg
    context.close()
    browser.close()


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def full_shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def publish(path: Path, name: str) -> None:
    """Copy a screenshot to docs/screenshots/<name> when asked to (RAMAN_UI_UPDATE_DOCS=1)."""
    if os.environ.get("RAMAN_UI_UPDATE_DOCS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SHOTS / name)


def assert_fits_width(page: Page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the {page.viewport_size} viewport"


def test_identify_file_and_overlay_reference(page: Page, scenario: Scenario) -> None:
    assert page.title() == "Raman identification"
    assert "Ready" in page.inner_text("#service-status")
    page.set_input_files("#file-input", [str(p) for p in (scenario.query, *scenario.extras)])
    page.wait_for_selector(".result .hit")
    assert page.locator(".result").count() == 1 + len(scenario.extras)
    card = page.locator(".result").first
    assert scenario.query.name in card.inner_text()
    labels = card.locator(".hit").evaluate_all("els => els.map(e => e.dataset.label)")
    assert scenario.expected in labels, f"{scenario.expected} not among the hits {labels}"
    assert card.locator(".badge").count() == 1
    assert card.locator(".spark canvas").count() == 1  # the spectrum after resampling
    assert "Measured" in card.inner_text() and "cm⁻¹" in card.inner_text()
    partial = page.locator(".result", has_text="partial-")
    assert (
        "covers" in partial.locator(".warnings").inner_text()
    )  # the low-coverage warning, in words
    if not scenario.real:
        unknown = page.locator(".result", has_text="unknown-mixture.txt")
        badge = unknown.locator(".badge-nomatch")
        assert badge.inner_text().startswith("No confident match")
        assert "probability" in (badge.get_attribute("title") or "")  # the rule, on hover

    card.locator(f".hit[data-label='{scenario.expected}']").click()
    plot = page.locator(f"#plot[data-reference='Reference: {scenario.expected}']")
    plot.wait_for()
    assert plot.get_attribute("data-series") == "2"  # query + reference
    legend = page.inner_text("#plot .u-legend")
    assert f"Reference: {scenario.expected}" in legend and "Query:" in legend
    assert page.get_attribute(f".hit[data-label='{scenario.expected}']", "aria-pressed") == "true"
    drag_zoom(page)
    page.click("#zoom-reset")
    assert page.is_disabled("#zoom-reset")
    assert_fits_width(page)
    shot(page, "identify-overlay")
    publish(full_shot(page, "identify-overlay-full"), "identify.png")


def drag_zoom(page: Page) -> None:
    box = page.locator("#plot .u-over").bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
    page.mouse.up()
    page.wait_for_function("!document.querySelector('#zoom-reset').disabled")
    hover = page.inner_text("#plot .u-legend")
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    assert hover  # uPlot's live legend shows the values under the cursor


def test_tablet_width_keeps_the_layout(page: Page) -> None:
    page.set_viewport_size(TABLET)
    page.wait_for_timeout(300)  # ResizeObserver redraws the plots
    assert_fits_width(page)
    plot_box = page.locator("#plot canvas").first.bounding_box()
    assert plot_box is not None and plot_box["width"] <= TABLET["width"]
    shot(page, "identify-tablet")
    page.set_viewport_size(LAPTOP)


def test_corrupt_file_error_in_words(page: Page) -> None:
    junk: FilePayload = {
        "name": "corrupt.spc",
        "mimeType": "application/octet-stream",
        "buffer": b"\x00\x9f\xfe" * 50,
    }
    page.set_input_files("#file-input", files=[junk])
    error = page.locator("#identify-error")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert "corrupt.spc" in text and "could" in text.lower()
    assert not text.lstrip().startswith("{") and '"status"' not in text and "urn:" not in text
    assert page.inner_text("#results-summary").endswith("matched")  # the old results stay
    shot(page, "corrupt-file-error")


def open_details(page: Page, selector: str) -> None:
    """Open a <details> element deterministically: a click on its summary toggles it, so a click
    that lands twice (or on an already open one) under load would close it again."""
    page.locator(selector).evaluate("d => { d.open = true; }")
    page.locator(f"{selector} > :not(summary)").first.wait_for(state="visible")


def test_pasted_columns_are_identified(page: Page, scenario: Scenario) -> None:
    lines = [
        ln for ln in scenario.query.read_text(errors="replace").splitlines() if ln[:1].isdigit()
    ]
    open_details(page, "#paste-box")
    # set the value as a paste does, in one go: page.fill of 1,100 lines takes 7-20 s under load
    page.locator("#paste-text").evaluate(
        "(el, text) => { el.value = text; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        "\n".join(lines),
    )
    page.click("#paste-submit")
    page.wait_for_selector(".result:has-text('pasted spectrum.txt') .hit")
    labels = page.locator(".result .hit").evaluate_all("els => els.map(e => e.dataset.label)")
    assert scenario.expected in labels
    assert page.locator("#identify-error").is_hidden()


def test_jobs_view_needs_a_key_and_explains_problems(page: Page, tmp_path: Path) -> None:
    page.click("#tab-jobs")
    assert page.locator("#view-jobs").is_visible() and page.locator("#view-identify").is_hidden()
    assert page.locator("#jobs-locked").is_visible()
    page.click("#ft-submit")  # no key, no archive: told what is missing, in words
    missing = page.inner_text("#ft-error")
    assert "API key" in missing and "archive" in missing
    page.fill("#jobs-key", "wrong-key")
    page.press("#jobs-key", "Tab")
    page.locator("#jobs-error:has-text('API key')").wait_for()
    page.fill("#jobs-key", API_KEY)
    page.press("#jobs-key", "Tab")
    page.locator("#jobs-empty").wait_for()
    assert page.locator("#jobs-error").is_hidden()
    junk: FilePayload = {
        "name": "spectra.zip",
        "mimeType": "application/zip",
        "buffer": b"not a zip",
    }
    page.set_input_files("#ft-archive", files=[junk])
    page.click("#ft-submit")
    # the box may still show the earlier "cannot start yet" message: wait for the server's answer
    error = page.locator("#ft-error:has-text('The job was not started')")
    error.wait_for(state="visible")
    text = error.inner_text()
    assert text.startswith("The job was not started") and "{" not in text and "urn:" not in text
    assert_fits_width(page)


@pytest.mark.skipif(not HAS_TORCH, reason="fine-tune jobs train with torch (the `train` extra)")
def test_start_follow_and_cancel_jobs(page: Page, tmp_path: Path) -> None:
    ft = finetune_fixtures()
    archive = tmp_path / "new-classes.zip"
    archive.write_bytes(ft.zip_archive(ft.folder_files(ft.NEW_PEAKS, 4, seed=1)))
    page.select_option("#ft-base-model", BASE)
    open_details(page, ".advanced")
    page.fill("#ft-epochs", "3")
    page.set_input_files("#ft-archive", str(archive))
    page.click("#ft-submit")
    page.locator("#ft-ok").wait_for()
    assert "12 spectra of 3 classes" in page.inner_text("#ft-ok")
    first = page.locator("#jobs-body tr").first
    page.locator("#jobs-body tr[data-state='running']").wait_for(timeout=60_000)
    shot(page, "jobs-running")
    page.locator("#jobs-body tr[data-state='succeeded']").wait_for(timeout=240_000)
    assert f"{BASE} v2" in first.inner_text() and "100%" in first.inner_text()
    # The page reloads the models when a job succeeds: the new version can be chosen at once.
    page.locator("#ft-base-version option[value='2']").wait_for(state="attached", timeout=15_000)

    page.fill("#ft-epochs", "500")
    page.set_input_files("#ft-archive", str(archive))
    page.click("#ft-submit")
    page.locator("#jobs-body tr").nth(1).wait_for()
    page.locator("#jobs-body tr").first.get_by_role("button", name="Cancel").click()
    page.locator("#jobs-body tr[data-state='cancelled']").wait_for(timeout=60_000)

    page.locator("#jobs-body tr[data-state='succeeded']").get_by_role("button", name="Log").click()
    page.locator("#job-log:has-text('registered')").wait_for()
    assert_fits_width(page)
    scroll = page.evaluate(
        "(w => w.scrollWidth - w.clientWidth)(document.querySelector('.table-wrap'))"
    )
    assert scroll <= 0, f"the jobs table needs {scroll} px of horizontal scrolling"
    publish(shot(page, "jobs"), "jobs.png")


def test_jobs_view_at_tablet_width(page: Page) -> None:
    page.set_viewport_size(TABLET)
    page.wait_for_timeout(300)
    assert_fits_width(page)
    shot(page, "jobs-tablet")
    page.set_viewport_size(LAPTOP)
    page.click("#tab-identify")


def test_no_script_errors(page: Page, page_errors: list[str]) -> None:
    assert page_errors == []
