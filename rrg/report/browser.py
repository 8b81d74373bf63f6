"""Headless Chromium through Selenium, for the case browser's tests, benchmark and screenshots.

Uses the system's browser and driver (Debian: `apt-get install chromium chromium-driver`), named
explicitly so Selenium never tries to download one; $CHROMIUM and $CHROMEDRIVER override the paths.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rrg.io import InputError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = "install them with: apt-get install chromium chromium-driver; and pip install selenium"


def find_chromium() -> tuple[str, str]:
    """(browser, driver) executables, or InputError saying what is missing and how to install it."""
    browser = shutil.which(os.environ.get("CHROMIUM", "")) or next(
        filter(None, map(shutil.which, BROWSERS)), None
    )
    driver = shutil.which(os.environ.get("CHROMEDRIVER", "chromedriver"))
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python)")
    if missing:
        raise InputError(f"no headless browser: {', '.join(missing)} not found; {INSTALL_HINT}")
    return browser, driver


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator:
    """A Selenium Chrome driver on headless Chromium, its console log kept (driver.get_log('browser'))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--allow-file-access-from-files",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(
    page: str | os.PathLike, out: str | os.PathLike, width: int = 1400, height: int = 1000
) -> Path:
    """Open a local page in headless Chromium and save a PNG of the window, once its images are decoded.

    The PNG is reduced to 256 colours (a screenshot of text and X-rays loses nothing visible; the file
    is a third of the size) and written atomically.
    """
    from PIL import Image

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.png")
    with headless_chromium(width, height) as driver:
        driver.set_script_timeout(60)
        driver.get(Path(page).resolve().as_uri())
        driver.execute_async_script(IMAGES_DECODED)
        png = driver.get_screenshot_as_png()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, optimize=True)
    tmp.replace(out)
    return out


# Resolves when every image in the window has loaded (or failed), then after one more frame. Only images in
# the window: the page's images are loading="lazy", and one far below never loads (the smoke run's screenshot
# waited for such images until the script timeout once the cards grew taller).
IMAGES_DECODED = """
const done = arguments[arguments.length - 1];
const inWindow = (i) => { const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight; };
const pending = [...document.images].filter((i) => inWindow(i) && !i.complete).map((i) => new Promise((ok) => {
  i.addEventListener("load", ok); i.addEventListener("error", ok);
}));
Promise.all(pending).then(() => requestAnimationFrame(() => done(true)));
"""
