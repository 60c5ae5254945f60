"""Render ``dvc plots diff`` in headless Chromium and check every chart was drawn.

Why: ``dvc plots diff`` writes an HTML page whose charts are drawn by Vega in
the browser; a bad ``plots:`` block in dvc.yaml or a malformed curve file
still yields a page, just with empty or broken charts. This script renders
the page the way a user's browser would and fails unless each Vega chart
produced marks, and saves a screenshot.

Offline machines cannot load Vega from the CDN DVC's page uses, so the script
inlines Vega, Vega-Lite and Vega-Embed (the versions DVC pins) from npm,
installed once into ``~/.cache/anomaly-pipeline/vega`` or taken from
``--vega-dir``.

    python scripts/check_plots_browser.py                 # workspace vs HEAD
    python scripts/check_plots_browser.py main my-branch  # two branches
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

VEGA_PACKAGES = {
    "vega": ("5.20.2", "build/vega.min.js"),
    "vega-lite": ("5.2.0", "build/vega-lite.min.js"),
    "vega-embed": ("6.18.2", "build/vega-embed.min.js"),
}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def vega_scripts(vega_dir: Path | None) -> str:
    """The three libraries as inline <script> tags, installing them with npm when needed."""
    root = (
        vega_dir
        or Path(os.environ.get("ANOMALY_CACHE", Path.home() / ".cache" / "anomaly-pipeline"))
        / "vega"
    )
    modules = root / "node_modules"
    missing = [n for n, (_, f) in VEGA_PACKAGES.items() if not (modules / n / f).is_file()]
    if missing:
        if vega_dir is not None:
            fail(f"{modules}: no {', '.join(missing)}; install them or drop --vega-dir")
        npm = shutil.which("npm")
        if npm is None:
            fail("npm not found: install Node.js, or pass --vega-dir with vega installed")
        root.mkdir(parents=True, exist_ok=True)
        specs = [f"{n}@{v}" for n, (v, _) in VEGA_PACKAGES.items()]
        proc = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(root),
                "--no-audit",
                "--no-fund",
                "--legacy-peer-deps",
                *specs,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            fail(f"npm install {' '.join(specs)} failed: {proc.stderr.strip()[-300:]}")
    tags = []
    for name, (_, file) in VEGA_PACKAGES.items():
        code = (modules / name / file).read_text(encoding="utf-8")
        code = code.replace("</script", "<\\/script")  # keep the tag closed where we close it
        tags.append(f"<script>/* {name} */\n{code}\n</script>")
    return "\n".join(tags)


def find_chromium(given: str | None) -> str:
    for name in ([given] if given else []) + list(CHROMIUM_NAMES):
        path = shutil.which(name) if name else None
        if path:
            return path
    fail("no Chromium found: install it (Debian: apt-get install chromium) or pass --chromium")
    return ""


def render(chromium: str, page: Path, out: Path, height: int) -> tuple[str, Path]:
    """The DOM after Vega ran, and a full-page screenshot."""
    common = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        f"--window-size=1400,{height}",
        "--virtual-time-budget=15000",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*common, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
    )
    if dom.returncode != 0:
        fail(f"chromium failed on {page}: {dom.stderr.strip()[-300:]}")
    shot = out / "screenshot.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", url], capture_output=True, timeout=180, check=False
    )
    return dom.stdout, shot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="revisions for `dvc plots diff` (default: HEAD)")
    parser.add_argument("--out", default="reports/plots_check", help="output folder")
    parser.add_argument("--vega-dir", type=Path, default=None, help="folder with node_modules")
    parser.add_argument("--chromium", default=None, help="Chromium executable")
    parser.add_argument("--height", type=int, default=9000, help="screenshot height in pixels")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    template = out / "template.html"
    template.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>DVC plots</title>\n"
        + vega_scripts(args.vega_dir)
        + "\n</head><body>\n{plot_divs}\n</body></html>\n",
        encoding="utf-8",
    )
    page_dir = out / "html"
    cmd = [sys.executable, "-m", "dvc", "plots", "diff", *args.revs]
    cmd += ["--html-template", str(template), "-o", str(page_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        fail(f"dvc plots diff failed: {proc.stderr.strip()[-300:]}")
    page = page_dir / "index.html"
    html = page.read_text(encoding="utf-8")
    charts = len(re.findall(r"vegaEmbed\(", html))
    images = len(re.findall(r"<img ", html))
    dom, shot = render(find_chromium(args.chromium), page, out, args.height)
    drawn = len(re.findall(r'class="marks"', dom))
    errors = re.findall(r"Error[^<]{0,160}", dom)
    print(f"{page}: {charts} Vega charts, {images} images; drawn in Chromium: {drawn}")
    print(f"screenshot: {shot}")
    if charts == 0:
        fail(f"{page}: no Vega charts; check the plots: block in dvc.yaml")
    if drawn < charts:
        detail = f" ({errors[0]})" if errors else ""
        fail(f"{page}: only {drawn} of {charts} Vega charts were drawn{detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
