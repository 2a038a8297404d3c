"""The web explorer in headless Chromium (Playwright, the system's chromium): type a query and see the image grid,
click a result to search from it and see captions, use the keyboard, drop an image file. The page is the one
`pcmpipe serve` sends, over real HTTP. A screenshot is saved with the test's files; with
PCMPIPE_UPDATE_SCREENSHOT=1 it also replaces docs/images/explorer.png (the one docs/using.md shows)."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from pcmpipe.datasets import open_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "explorer.png"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (CI installs it)")
WAIT_MS = 120_000  # the first query builds the text tower on a loaded machine


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 860})
        errors: list[str] = []
        tab.on("pageerror", lambda err: errors.append(str(err)))
        yield tab
        browser.close()
        assert not errors, errors


def test_type_a_query_see_images_then_captions(server, served_run, page, tmp_path):
    page.goto(server.url)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=WAIT_MS)
    assert page.evaluate("document.activeElement.id") == "text"  # the query box has the focus
    page.keyboard.type("a dog running on the beach")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card img", timeout=WAIT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)", timeout=WAIT_MS
    )
    images = page.locator(".card img")
    assert images.count() == 8  # the test split's eight images, best first
    assert "I results" in page.text_content("#status")
    page.screenshot(path=str(tmp_path / "explorer.png"))
    if os.environ.get("PCMPIPE_UPDATE_SCREENSHOT"):
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "explorer.png", DOCS_IMAGE)
    # a click on an image searches from it: its captions come back as text cards
    texts = {r.text for r in open_dataset("flickr8k", served_run["data"]).records("T", "test")}
    page.locator(".card button.pick").first.click()
    page.wait_for_selector(".card .caption", timeout=WAIT_MS)
    captions = page.locator(".card .caption").all_text_contents()
    assert captions and set(captions) <= texts
    assert page.input_value("#from") == "I" and page.input_value("#to") == "T"


def test_keyboard_alone_searches_from_a_result(server, page):
    page.goto(server.url)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=WAIT_MS)
    page.fill("#text", "a red ball")
    page.keyboard.press("Enter")
    page.wait_for_selector(".card img", timeout=WAIT_MS)
    first = page.locator(".card button.pick").first
    first.focus()
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('T results for I')",
                           timeout=WAIT_MS)  # fmt: skip


def test_drop_an_image_finds_captions(server, served_run, page):
    record = open_dataset("flickr8k", served_run["data"]).records("I", "test")[0]
    page.goto(server.url)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('ready')", timeout=WAIT_MS)
    payload = base64.b64encode(Path(record.path).read_bytes()).decode()
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            return dt;
        }""",
        payload,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_function("document.getElementById('status').textContent.includes('dropped.jpg')", timeout=WAIT_MS)
    assert page.locator(".card .caption").count() > 0
    assert page.input_value("#from") == "I"
