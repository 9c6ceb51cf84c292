"""report.html renders in a real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import imgcls
from imgcls.config import TrainConfig
from tests.conftest import REPO, make_image, run_cli

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _browser(playwright):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it with apt-get)")
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS, headless=True)


@contextlib.contextmanager
def _page(url: str, width: int = 1200, height: int = 900) -> Iterator[Any]:
    """A Chromium page showing ``url``."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = _browser(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            yield page
        finally:
            browser.close()


def _confusable_folder(root: Path) -> Path:
    """Two classes drawn from the same colours: the model must make confident mistakes."""
    for label in ("left", "right"):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(10):
            make_image((120, 120, 120), seed=i * 2 + (label == "right")).save(folder / f"{i}.png")
    return root


def test_report_images_render_in_chromium(tmp_path):
    pytest.importorskip("playwright.sync_api")
    data = _confusable_folder(tmp_path / "data")
    run = tmp_path / "run"
    imgcls.train(data, run, config=TrainConfig(backbone="test_resnet", pretrained=False, input_size=64))
    run_cli("evaluate", str(run), str(data), "--split", "all", "--report")
    ARTIFACTS.mkdir(exist_ok=True)
    with _page((run / "report-all.html").as_uri()) as page:
        sizes = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.id || e.className, e.naturalWidth, e.naturalHeight])"
        )
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    by_name = {name: (w, h) for name, w, h in sizes}
    for figure in ("confusion-matrix", "reliability", "per-class"):
        assert min(by_name[figure]) > 100, f"{figure} did not render: {sizes}"
    mistakes = [(w, h) for name, w, h in sizes if name == "mistake"]
    assert mistakes and all(w > 0 and h > 0 for w, h in mistakes)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_a_fine_tune_report_shows_every_split_the_curves_and_fits_the_page(tmp_path):
    from tests.conftest import TINY_BACKBONE, write_class_folders

    pytest.importorskip("playwright.sync_api")
    data = write_class_folders(tmp_path / "data", per_class=20)
    (data / "blue").rename(data / ("a_class_name_long_enough_to_overflow_a_thumbnail_caption_" * 2))
    run = tmp_path / "run"
    config = TrainConfig(
        backbone=TINY_BACKBONE,
        pretrained=False,
        input_size=64,
        strategy="finetune",
        epochs=2,
        test_fraction=0.2,
    )
    imgcls.train(data, run, config=config)
    ARTIFACTS.mkdir(exist_ok=True)
    with _page((run / "report.html").as_uri(), width=1000) as page:
        splits = page.eval_on_selector_all(
            "#splits tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
        )
        counts = page.eval_on_selector_all("#class-counts tbody tr", "rows => rows.map(r => r.cells.length)")
        sizes = dict(page.eval_on_selector_all("img[id]", "els => els.map(e => [e.id, e.naturalWidth])"))
        examples = page.eval_on_selector_all("img.example", "els => els.length")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        wide_captions = page.eval_on_selector_all(
            "figcaption", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).length"
        )
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "report-finetune.png"), full_page=True)
    assert splits == ["train", "val", "test"]
    assert counts == [4, 4, 4]  # class, then its images in train, val and test
    assert (
        sizes["curves"] > 300 and min(sizes[k] for k in ("confusion-matrix", "confidence", "per-class")) > 100
    )
    assert examples >= 1 and overflow <= 0 and wide_captions == 0
    assert "expected calibration error" in text and "Brier score" in text and "fine-tune" in text
    card = (run / "README.md").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert f"| {split} | {metrics[split]['n']} | {metrics[split]['accuracy']:.4f} |" in card
    assert f'imgcls.load("{run}")' in card and f"imgcls serve {run}" in card


def test_web_page_uploads_an_image_and_shows_the_predicted_label(tmp_path):
    import httpx
    import skimage.data
    from PIL import Image

    from tests.conftest import write_class_folders
    from tests.server_helpers import running_server

    sync_api = pytest.importorskip("playwright.sync_api")
    data = write_class_folders(tmp_path / "data")
    imgcls.train(
        data,
        tmp_path / "run",
        config=TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64, test_fraction=0.25),
    )
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    ARTIFACTS.mkdir(exist_ok=True)
    with running_server(tmp_path / "run") as url:
        expected = httpx.post(
            f"{url}/predict", files=[("file", ("chelsea.png", photo.read_bytes()))], timeout=30
        )
        expected_label = expected.json()[0]["predictions"][0]["label"]
        with sync_api.sync_playwright() as playwright:
            browser = _browser(playwright)
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.goto(url)
            page.wait_for_selector("#classes:has-text('3 classes')")
            accuracy = page.wait_for_selector("#accuracy:has-text('Test accuracy')").inner_text()
            page.set_input_files("#file", [str(photo), str(notes)])
            label = page.wait_for_selector(".card .top .label", timeout=30_000)
            shown = label.inner_text()
            headline = page.inner_text(".card .verdict strong")
            weight = page.eval_on_selector(".card .top .label", "e => getComputedStyle(e).fontWeight")
            bars = page.eval_on_selector_all(
                ".card .fill", "els => els.map(e => e.getBoundingClientRect().width)"
            )
            errors = page.eval_on_selector_all(".card .error", "els => els.map(e => e.textContent)")
            page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
            browser.close()
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())[
        "test"
    ]  # test, not val, where both are
    assert accuracy == f"Test accuracy {100 * test['accuracy']:.1f}% on {test['n']} held-out images."
    assert shown == headline == expected_label and int(weight) >= 700  # the top class stands out
    assert len(bars) == 3 and max(bars) > 0
    assert (
        len(errors) == 1 and "notes.txt" in errors[0]
    )  # the bad file's own card, the photo still classified


def test_the_doctor_page_shows_thumbnails_of_its_findings(tmp_path):
    from tests.workflows.test_doctor import LITE, _data_set, _plant

    pytest.importorskip("playwright.sync_api")
    data = _data_set(tmp_path / "data")
    _plant(data)
    imgcls.doctor(data, tmp_path / "doctor", config=LITE)
    ARTIFACTS.mkdir(exist_ok=True)
    with _page((tmp_path / "doctor" / "doctor.html").as_uri()) as page:
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        sizes = page.eval_on_selector_all("figure img", "els => els.map(e => e.naturalWidth)")
        page.screenshot(path=str(ARTIFACTS / "doctor.png"), full_page=True)
    assert {"leakage: 2 findings", "conflicting labels: 1 finding", "unreadable: 1 finding"} <= set(headings)
    assert len(sizes) >= 8 and min(sizes) > 50  # every thumbnail decoded, the broken file's grey square too


@pytest.mark.slow
def test_the_doctor_page_of_hymenoptera_renders_its_findings(tmp_path):
    from tests.conftest import shared_dataset

    pytest.importorskip("playwright.sync_api")
    diagnosis = imgcls.doctor(shared_dataset("hymenoptera"), tmp_path / "doctor")
    outliers = {i for f in diagnosis.findings if f.kind == "outlier" for i in f.ids}
    assert "train/ants/imageNotFound.gif" in outliers  # an error page saved as a photo
    with _page((tmp_path / "doctor" / "doctor.html").as_uri()) as page:
        headings = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
        sizes = page.eval_on_selector_all("figure img", "els => els.map(e => e.naturalWidth)")
    assert "outlier: 1 finding" in headings and sizes and min(sizes) > 50


def test_the_docs_site_has_sections_and_an_api_page_with_trains_parameters(tmp_path):
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    with _page((site / "api" / "index.html").as_uri()) as page:
        section = page.locator("[id='imgcls.workflows.train.train']").locator("xpath=..")
        text = section.inner_text()
        for parameter in ("data", "output", "config", "overwrite"):
            assert parameter in text, parameter
        navigation = page.locator("nav.md-nav--primary").first.text_content() or ""
        for heading in ("Getting started", "User guide", "Reference", "Project"):
            assert heading in navigation, heading
    with _page((site / "quickstart" / "index.html").as_uri()) as page:
        assert "imgcls train photos/ --output runs/photos" in page.inner_text("body")  # the README's
