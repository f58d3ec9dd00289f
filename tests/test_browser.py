"""The app as a person sees it: headless Chromium (Playwright driving Debian's `chromium`) on the launched app,
one action per tab, checking what shows on the page.

Skipped, saying why, where Playwright or a Chromium is missing. CI installs both (Playwright from PyPI,
Chromium from Debian: Playwright's own browser download is not reachable there); CHROMIUM names another binary.
"""
import os
import shutil

import pytest
from conftest import launched_app

from clipgpt_core import world

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install playwright")


def _chromium() -> str | None:
    """Debian's chromium: the real binary beside its wrapper script, which Playwright drives directly."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (or set CHROMIUM)")
WAIT = 180_000      # ms: a model answering on a busy 2-core CPU


@pytest.fixture(scope="module")
def page(bundle):
    with launched_app(bundle) as client, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)              # finding and clicking things
        sync_api.expect.set_options(timeout=WAIT)     # what a model's answer puts on the page
        page.goto(client.src)
        yield page
        browser.close()


def tab(page, name):
    page.get_by_role("tab", name=name).click()


def test_sample_tab_fills_a_table_of_captions(page):
    tab(page, "Sample captions")
    page.get_by_label("Prefix to complete").fill("a large")
    page.get_by_role("button", name="Sample", exact=True).click()
    first = page.locator("#sample-table [data-testid=cell-0-0]")
    sync_api.expect(first).to_contain_text("a large")
    sync_api.expect(page.locator("#sample-table [data-testid=cell-7-0]")).to_be_visible()    # 8 samples


def test_caption_tab_fills_a_table_of_captions(page, tmp_path):
    tab(page, "Caption an image")
    good = tmp_path / "red.png"
    world.example(31, n_objects=1).image.save(good)
    page.locator("#caption-image input[type=file]").set_input_files(str(good))
    page.get_by_role("button", name="Caption", exact=True).click()
    sync_api.expect(page.locator("#caption-best")).to_contain_text("ClipCap")
    sync_api.expect(page.locator("#caption-table [data-testid=cell-0-0]")).not_to_be_empty()


def test_nearest_tab_fills_the_gallery_and_explains_a_broken_upload(page, tmp_path):
    tab(page, "Nearest images")
    page.get_by_label("Text query").fill("a large red star on a black background")
    page.get_by_role("button", name="Search", exact=True).click()
    sync_api.expect(page.locator("#nearest-status")).to_contain_text("12 nearest images")
    sync_api.expect(page.locator("#nearest-gallery img")).to_have_count(12)
    # a broken image query: its zero-shot reading shows the core's message, not "could not preprocess"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    page.locator("#nearest-image input[type=file]").set_input_files(str(broken))
    sync_api.expect(page.get_by_text("Not an image").first).to_be_visible()


def test_render_tab_draws_an_image(page):
    tab(page, "Render")
    page.get_by_label("Prompt", exact=True).fill("a large red circle on a black background")
    for label, value in (("number input for Steps", "2"), ("number input for Images", "1")):
        page.get_by_label(label).fill(value)
        page.get_by_label(label).press("Enter")
    page.get_by_role("button", name="Render", exact=True).click()
    sync_api.expect(page.locator("#render-gallery img")).to_have_count(1)


def test_explain_tab_fills_a_table_of_explanations(page):
    tab(page, "Explain")
    page.get_by_label("number input for Gallery sample size").fill("64")
    page.get_by_label("number input for Gallery sample size").press("Enter")
    page.get_by_label("Budget (0 = default)").fill("1")
    page.get_by_role("button", name="Explain", exact=True).click()
    sync_api.expect(page.get_by_text("Known answer")).to_be_visible()
    sync_api.expect(page.get_by_text("held-out ρ(f, h(CLIP_t))").first).to_be_visible()
