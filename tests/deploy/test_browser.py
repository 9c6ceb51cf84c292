"""report.html renders in a real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

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


def _confusable_folder(root: Path) -> Path:
    """Two classes drawn from the same colours: the model must make confident mistakes."""
    for label in ("left", "right"):
        folder = root / label
        folder.mkdir(parents=True)
        for i in range(10):
            make_image((120, 120, 120), seed=i * 2 + (label == "right")).save(folder / f"{i}.png")
    return root


def test_report_images_render_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    data = _confusable_folder(tmp_path / "data")
    run = tmp_path / "run"
    imgcls.train(data, run, config=TrainConfig(backbone="test_resnet", pretrained=False, input_size=64))
    run_cli("evaluate", str(run), str(data), "--split", "all", "--report")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto((run / "report-all.html").as_uri())
        sizes = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.id || e.className, e.naturalWidth, e.naturalHeight])"
        )
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    by_name = {name: (w, h) for name, w, h in sizes}
    for figure in ("confusion-matrix", "reliability", "per-class"):
        assert min(by_name[figure]) > 100, f"{figure} did not render: {sizes}"
    mistakes = [(w, h) for name, w, h in sizes if name == "mistake"]
    assert mistakes and all(w > 0 and h > 0 for w, h in mistakes)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


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
        config=TrainConfig(backbone="test_efficientnet", pretrained=False, input_size=64),
    )
    photo = tmp_path / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
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
            page.set_input_files("#file", str(photo))
            label = page.wait_for_selector(".card .top .label", timeout=30_000)
            shown = label.inner_text()
            bars = page.eval_on_selector_all(
                ".card .fill", "els => els.map(e => e.getBoundingClientRect().width)"
            )
            page.screenshot(path=str(ARTIFACTS / "web.png"), full_page=True)
            browser.close()
    assert shown == expected_label
    assert len(bars) == 3 and max(bars) > 0
