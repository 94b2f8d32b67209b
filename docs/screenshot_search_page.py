"""Screenshot of the search page for the README: serves an index on a free port, types a
sentence into headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium as in tests/inference/test_serve.py) and saves the page as a palette PNG.

    python docs/screenshot_search_page.py --index indexes/cuhk_test \
        --text "a woman in a yellow striped top" --out docs/images/search_page.png
"""

from __future__ import annotations

import argparse
import io
import shutil
import threading

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from reid_jax.inference.search import Searcher
from reid_jax.inference.serve import SearchServer


def screenshot(url: str, text: str, top_k: int, width: int) -> Image.Image:
    """The page at `url` after searching `text`: RGB, `width` wide, as tall as the page."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},800")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        driver.find_element(By.ID, "text-query").send_keys(text)
        driver.find_element(By.ID, "top-k").clear()
        driver.find_element(By.ID, "top-k").send_keys(str(top_k))
        driver.find_element(By.CSS_SELECTOR, "#text-form button").click()
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-searches"))
        done = "return [...document.images].every(i => i.complete)"
        wait.until(lambda d: d.execute_script(done))
        page_height, bars = driver.execute_script(
            "return [Math.ceil(document.body.getBoundingClientRect().bottom) + 24, "
            "outerHeight - innerHeight]"
        )
        driver.set_window_size(width, page_height + bars)
        return Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--width", type=int, default=1260)
    parser.add_argument("--out", default="docs/images/search_page.png")
    args = parser.parse_args()
    searcher = Searcher.open(args.index)
    searcher.search(text=args.text, top_k=1)  # compiles the text encoder: the page shows warm times
    server = SearchServer(searcher, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        image = screenshot(server.url, args.text, args.top_k, args.width)
    finally:
        server.shutdown()
        server.server_close()
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
