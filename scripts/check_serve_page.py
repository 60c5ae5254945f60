"""Drive ``anomaly serve``'s page in headless Chromium and check it shows each verdict.

Why: the page is JavaScript that posts to /predict and draws the answers; a renamed
JSON key or a broken script still serves a page, just one that shows nothing. This
script starts the service on a free port, opens the page in Chromium (playwright,
driving the system's Chromium: offline machines cannot download playwright's own),
chooses images through the page's file input as a user would, and fails unless every
image gets a card whose verdict and score match the API's answer and whose overlay
image decoded. It saves a screenshot (``docs/serve_page.png`` by default).

    python scripts/check_serve_page.py                        # the active model's bundle
    python scripts/check_serve_page.py --model m.bundle --images a.png b.png
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def default_images() -> list[Path]:
    """One defective and one good test image of the pipeline's data."""
    import pandas as pd

    from anomaly.params import load_params
    from anomaly.paths import manifest

    params = load_params("params.yaml")
    table = Path(manifest(params.dataset.name))
    if not table.is_file():
        fail(f"{table}: not found; run the pipeline first (make repro) or pass --images")
    rows = pd.read_csv(table)
    root = table.parent
    picks = [rows.loc[rows["label"] == label, "image_path"].iloc[0] for label in (1, 0)]
    return [root / p for p in picks]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundle (default: the active model's)")
    parser.add_argument("--images", nargs="+", type=Path, default=None)
    parser.add_argument("--chromium", default=None, help="Chromium executable")
    parser.add_argument("--out", type=Path, default=Path("docs/serve_page.png"))
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        fail("playwright is not installed: pip install -e '.[browser]' (make serve-check does)")
    chromium = next(
        (shutil.which(n) for n in ([args.chromium] if args.chromium else CHROMIUM_NAMES) if n),
        None,
    )
    if chromium is None:
        fail("no Chromium found: install it (Debian: apt-get install chromium) or pass --chromium")
    images = args.images or default_images()
    for image in images:
        if not image.is_file():
            fail(f"{image}: not found")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "anomaly", "serve", "--port", str(port), "--device", "cpu"]
    command += ["--model", args.model] if args.model else []
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        from anomaly.errors import DataError
        from anomaly.inference.serve import wait_healthy

        try:
            wait_healthy(url, server)
        except DataError as exc:
            fail(str(exc))
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.wait_for_function(
                "document.getElementById('model').textContent.includes('threshold')"
            )
            with page.expect_response(lambda r: "/predict" in r.url, timeout=120_000) as answer:
                page.set_input_files("#files", [str(p) for p in images])
            expected = answer.value.json()
            page.wait_for_function(
                f"document.querySelectorAll('.card').length >= {len(images)}", timeout=30_000
            )
            cards = page.eval_on_selector_all(
                ".card",
                """cards => cards.map(c => ({
                    image: c.dataset.image,
                    verdict: c.querySelector('.verdict').textContent,
                    score: c.querySelector('.score') ? c.querySelector('.score').textContent : '',
                    overlay: c.querySelector('img') ? c.querySelector('img').naturalWidth : 0,
                }))""",
            )
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    if not isinstance(expected, list):
        fail(f"/predict answered {expected}")
    shown = {c["image"]: c for c in cards}
    for item in expected:
        card = shown.get(item["image"])
        verdict = "defect" if item["defect"] else "good"
        if card is None:
            fail(f"{item['image']}: no card on the page")
        shown_score = float(card["score"].split(" ")[1]) if card["score"] else float("nan")
        if card["verdict"] != verdict or not abs(shown_score - item["score"]) <= 1e-3 * abs(
            item["score"]
        ):
            fail(f"{item['image']}: page shows {card}, the API answered {verdict} {item['score']}")
        if card["overlay"] <= 0:
            fail(f"{item['image']}: the overlay image did not decode")
    print(
        f"{url}: {len(expected)} images, page shows "
        + ", ".join(f"{c['image']} {c['verdict']}" for c in cards)
        + f"; screenshot {args.out}"
    )


if __name__ == "__main__":
    main()
