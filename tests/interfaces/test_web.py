"""The browser app at / in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package with its executable path; ``.ci/run`` installs both). A screenshot of each run is kept in
``artifacts/`` (or ``$NANOLILY_ARTIFACTS``)."""

import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nanolily.interfaces.serve import EnhanceServer
from nanolily.io.samples import sample_paths
from nanolily.models.weights import load_model

from .test_serve import DEFAULTS

CHROMIUM = os.environ.get("NANOLILY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("NANOLILY_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))
# as root on a closed network: no sandbox, and none of Chromium's background connections
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (apt-get install chromium)")


@pytest.fixture(scope="module")
def app_url():
    pytest.importorskip("fastapi")
    server = EnhanceServer(("127.0.0.1", 0), load_model(device="cpu"), DEFAULTS, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.wait_started()
    yield server.url
    server.shutdown()
    thread.join(10)  # uvicorn closes its listener on the way out: before the socket itself is closed
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(app_url)
    # the page starts with a static "global" option; the server's /health answer sets the modes, then the title
    page.wait_for_function("document.title.startsWith('nanolily (')")
    yield page
    page.close()


def mean_difference(page) -> float:
    """Mean absolute difference (0..255) between the original and the enhanced image as the page shows them."""
    return page.evaluate("""() => {
        const pixels = (img) => {
            const canvas = document.createElement('canvas');
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const context = canvas.getContext('2d');
            context.drawImage(img, 0, 0);
            return context.getImageData(0, 0, canvas.width, canvas.height).data;
        };
        const a = pixels(document.getElementById('before')), b = pixels(document.getElementById('after'));
        if (a.length !== b.length) return -1;
        let sum = 0;
        for (let i = 0; i < a.length; i++) sum += Math.abs(a[i] - b[i]);
        return sum / a.length;
    }""")


def test_upload_a_sample_compare_and_download(page, tmp_path):
    sample = sample_paths()[0]
    page.set_input_files("#file", str(sample))
    page.wait_for_selector("#download:not([hidden])", timeout=120_000)
    page.wait_for_function("document.getElementById('before').complete && document.getElementById('after').complete"
                           " && document.getElementById('after').naturalWidth > 0"
                           " && !document.getElementById('slider').hidden")
    with Image.open(sample) as original:
        size = original.size
    assert page.evaluate("[document.getElementById('after').naturalWidth, "
                         "document.getElementById('after').naturalHeight]") == list(size)
    assert mean_difference(page) > 10  # the enhanced photo is another, brighter image
    assert page.inner_text("#error") == "" and "done in" in page.inner_text("#message")

    # the slider moves the boundary between before and after
    page.eval_on_selector("#slider", "s => { s.value = 20; s.dispatchEvent(new Event('input')); }")
    assert page.eval_on_selector("#before", "e => e.style.clipPath") == "inset(0px 80% 0px 0px)"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web-app.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == f"{sample.stem}_lily.jpg"  # JPEG: the page's default format
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as out:
        assert out.format == "JPEG" and out.size == size


def test_controls_choose_mode_format_and_strength(page):
    # the default model lights the whole photo at once: bloom (224x224 tiles) is not offered
    assert page.eval_on_selector_all("#mode option", "o => o.map(x => x.value)") == ["global", "core"]
    page.select_option("#format", "png")
    page.eval_on_selector("#strength", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    page.eval_on_selector("#denoise", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#strength-value") == "0.00"
    image = (np.random.default_rng(0).random((48, 64, 3)) * 60).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    page.set_input_files("#file", files=[{"name": "dim.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.wait_for_selector("#download:not([hidden])", timeout=60_000)
    page.wait_for_function("!document.getElementById('slider').hidden")
    assert page.get_attribute("#download", "download") == "dim_lily.png"
    assert mean_difference(page) < 1  # strength 0, no denoising: the photo comes back as it was
    page.select_option("#format", "same")  # the photo's own format: a WebP comes back as WebP
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "WEBP", lossless=True)
    page.set_input_files("#file", files=[{"name": "dim.webp", "mimeType": "image/webp", "buffer": buffer.getvalue()}])
    page.wait_for_function("document.getElementById('download').download === 'dim_lily.webp'", timeout=60_000)


def test_errors_are_shown_as_text(page):
    page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo"}])
    page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
    error = page.inner_text("#error")
    assert "notes.jpg" in error and "\n" not in error
    assert page.is_hidden("#download") and page.is_hidden("#progress")


def test_several_photos_are_enhanced_in_turn_and_downloaded_as_one_zip(page, tmp_path):
    files = []
    for k, (name, size) in enumerate([("a.png", (64, 48)), ("broken.jpg", None), ("b.png", (80, 40))]):
        buffer = io.BytesIO()
        if size is None:
            buffer.write(b"not a photo")
        else:
            Image.fromarray((np.random.default_rng(k).random(size[::-1] + (3,)) * 60).astype(np.uint8)).save(buffer, "PNG")
        files.append({"name": name, "mimeType": "image/png", "buffer": buffer.getvalue()})
    page.set_input_files("#file", files=files)
    page.wait_for_function("[...document.querySelectorAll('#queue .state')].every("
                           "s => s.textContent.endsWith(' s') || s.textContent === 'failed')", timeout=120_000)
    rows = page.eval_on_selector_all("#queue button", "b => b.map(x => [x.firstChild.textContent, "
                                                      "x.lastChild.textContent, x.title])")
    assert [r[0] for r in rows] == ["a.png", "broken.jpg", "b.png"]
    assert rows[1][1] == "failed" and "broken.jpg" in rows[1][2] and rows[0][1].endswith(" s")
    assert page.get_attribute("#download", "download") == "a_lily.jpg"  # the first photo is shown
    page.click("#queue li:nth-child(3) button")  # another photo: its result and its download
    page.wait_for_function("!document.getElementById('slider').hidden")
    assert page.get_attribute("#download", "download") == "b_lily.jpg"
    assert page.evaluate("document.getElementById('after').naturalWidth") == 80
    page.click("#queue li:nth-child(2) button")  # the failed one: its reason, no download
    assert "broken.jpg" in page.inner_text("#error") and page.is_hidden("#download")

    with page.expect_download() as download_info:
        page.click("#download-all")
    download = download_info.value
    assert download.suggested_filename == "nanolily.zip"
    download.save_as(tmp_path / "all.zip")
    with zipfile.ZipFile(tmp_path / "all.zip") as archive:
        assert archive.testzip() is None and archive.namelist() == ["a_lily.jpg", "b_lily.jpg"]
        sizes = [Image.open(io.BytesIO(archive.read(n))).size for n in archive.namelist()]
        assert sizes == [(64, 48), (80, 40)] and archive.infolist()[0].date_time[0] >= 2024


def test_enhance_runs_every_photo_again_and_names_in_the_zip_stay_apart(page, tmp_path):
    image = (np.random.default_rng(3).random((40, 56, 3)) * 60).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    same = {"name": "same.png", "mimeType": "image/png", "buffer": buffer.getvalue()}
    page.set_input_files("#file", files=[same, same])
    all_done = "[...document.querySelectorAll('#queue .state')].every(s => s.textContent.endsWith(' s'))"
    page.wait_for_function(all_done, timeout=120_000)
    page.wait_for_function("!document.getElementById('slider').hidden")
    assert mean_difference(page) > 5
    page.select_option("#format", "png")
    page.eval_on_selector("#strength", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    page.eval_on_selector("#denoise", "s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
    page.click("#go")
    page.wait_for_function("document.getElementById('download').download.endsWith('.png')", timeout=120_000)
    page.wait_for_function(all_done, timeout=120_000)
    page.wait_for_function("!document.getElementById('slider').hidden")
    assert mean_difference(page) < 1  # strength 0: both photos come back as they were
    with page.expect_download() as download_info:
        page.click("#download-all")
    download_info.value.save_as(tmp_path / "all.zip")
    with zipfile.ZipFile(tmp_path / "all.zip") as archive:
        assert archive.namelist() == ["same_lily.png", "same_lily (2).png"]
        assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(archive.read(n)))), image)
                   for n in archive.namelist())
