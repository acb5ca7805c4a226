"""The page at `/` in a real browser (Debian's headless chromium, driven by Selenium) against `serve run` on the
tiny model: photos picked, cut-outs shown, downloads that are the API's bytes, a corrupt file's error shown."""

from __future__ import annotations

import io
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.images import encode, red_square

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
# Where to keep the page's screenshot (the README's is made so); by default the test's own folder.
SCREENSHOT_ENV = "PAGE_SCREENSHOT"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,1000", "--no-proxy-server"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_for(condition: Callable[[], object], timeout_s: float = 60, what: str = "the page") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def downloaded(folder: Path, name: str) -> bytes:
    path = folder / name
    wait_for(lambda: path.is_file() and not list(folder.glob("*.crdownload")), what=f"the download of {name}")
    return path.read_bytes()


def api_answer(service: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{service}/v1/remove-background?format=png", content=body,
                      headers={"Content-Type": "image/png"}, timeout=60, trust_env=False)


@needs_browser
def test_photos_cut_out_downloaded_and_an_error_shown(service: str, browser: tuple, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, downloads = browser
    photos = {"red.png": encode(red_square()), "dark.png": encode(red_square(color=(40, 40, 120))),
              "broken.png": b"this is not a picture"}
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
    driver.get(f"{service}/")
    # The status panel fills the model list from /v1/info.
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#model option")) > 1, what="the model list")
    wait_for(lambda: "images/s" in driver.find_element(By.ID, "status-line").text, what="the status line")

    driver.find_element(By.ID, "files").send_keys("\n".join(str(tmp_path / name) for name in photos))
    cards = wait_for(lambda: [card for card in driver.find_elements(By.CSS_SELECTOR, ".card")
                              if "done" in card.get_attribute("class") or "failed" in card.get_attribute("class")]
                     if len(driver.find_elements(By.CSS_SELECTOR, ".card.done, .card.failed")) == 3 else None,
                     what="three finished cards")
    by_name = {card.find_element(By.CSS_SELECTOR, ".name").text: card for card in cards}
    assert set(by_name) == set(photos)

    # The corrupt file's card shows the API's own message.
    expected = api_answer(service, photos["broken.png"])
    assert expected.status_code in (415, 422)
    assert "failed" in by_name["broken.png"].get_attribute("class")
    assert expected.json()["error"]["message"] in by_name["broken.png"].find_element(By.CSS_SELECTOR, ".error").text

    # Each cut-out downloads as the API's bytes for the same photo and options.
    for name in ("red.png", "dark.png"):
        card = by_name[name]
        assert "done" in card.get_attribute("class")
        card.find_element(By.CSS_SELECTOR, ".download").click()
        answer = api_answer(service, photos[name])
        assert answer.status_code == 200
        assert downloaded(downloads, name) == answer.content, name

    # The slider moves the before/after split, from the keyboard too.
    slider = by_name["red.png"].find_element(By.CSS_SELECTOR, ".slider")
    from selenium.webdriver.common.keys import Keys

    slider.send_keys(Keys.HOME)
    style = by_name["red.png"].find_element(By.CSS_SELECTOR, ".after").get_attribute("style")
    assert "clip-path" in style and "0%)" in style and "50%" not in style, style

    # All of them as one zip, the same bytes again.
    driver.find_element(By.ID, "zip").click()
    with zipfile.ZipFile(io.BytesIO(downloaded(downloads, "cutouts.zip"))) as archive:
        assert sorted(archive.namelist()) == ["dark.png", "red.png"]
        for name in archive.namelist():
            assert archive.read(name) == (downloads / name).read_bytes()
            assert Image.open(io.BytesIO(archive.read(name))).mode == "RGBA"

    # A URL's name, decoded, never becomes a path in the zip.
    for url, name in [("https://example.com/..%2F..%2Fevil.png", "_.._evil"), ("https://example.com/a%5Cb.png", "a_b"),
                      ("https://example.com/%2E%2E%2F.bashrc.jpg", "_.bashrc"), ("https://example.com/", "image")]:
        assert driver.execute_script("return stem(arguments[0], true)", url) == name, url

    driver.save_screenshot(os.environ.get(SCREENSHOT_ENV) or str(tmp_path / "page.png"))

    # On a phone's width nothing needs scrolling sideways.
    driver.set_window_size(390, 844)
    assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_page_files_need_no_key_and_unknown_ones_are_404(service: str) -> None:
    page = httpx.get(f"{service}/", timeout=30, trust_env=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # Every file and call of the page is relative to its <base>: the application's route prefix, "/" here.
    assert '<base href="/">' in page.text and "<script src=\"page/page.js\"></script>" in page.text
    script = httpx.get(f"{service}/page/page.js", timeout=30, trust_env=False)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    for missing in ("/page/nothing.js", "/page/..%2Fsettings.py", "/page/__init__.py"):
        response = httpx.get(f"{service}{missing}", timeout=30, trust_env=False)
        assert response.status_code == 404, missing
