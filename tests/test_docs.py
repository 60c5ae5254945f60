"""The README is an entrance (short, every link resolves) and the docs site builds strictly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MkDocs' toc) give a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    text = markdown.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # no headings inside code blocks
    return {github_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(markdown: Path) -> list[str]:
    """Relative links whose file (or anchor in a Markdown file) does not exist."""
    text = re.sub(r"```.*?```", "", markdown.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no such heading")
    return broken


def test_readme_is_an_entrance_whose_links_resolve():
    readme = REPO / "README.md"
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; depth belongs in docs/"
    assert broken_links(readme) == []
    text = readme.read_text(encoding="utf-8")
    for command in ("make repro", "make test"):
        assert command in text


def test_link_checker_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page.write_text("[ok](other.md#a-section) [bad](other.md#nope) [gone](missing.md)\n")
    assert broken_links(page) == ["other.md#nope: no such heading", "missing.md: no such file"]


def test_docs_site_builds_strictly(tmp_path):
    """`make docs`: mkdocs --strict fails on any broken link or anchor between pages."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: make setup installs the docs extra")
        pytest.skip("mkdocs not installed (pip install -e '.[docs]')")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for page in ("index.html", "using/index.html", "results/index.html"):
        assert (tmp_path / "site" / page).is_file()
    # the hook brought the pipeline's own figures in
    assert (tmp_path / "site/pipeline/plots/figures/gallery.png").is_file()


def test_generated_results_page_is_what_the_results_files_say():
    """docs/results.md, the README's results block and docs/scaling.md's measured
    tables are written by benchmarks/results_pages.py alone: regenerating them from
    benchmarks/results/ gives the committed text, byte for byte. The pages name which model files changed since
    each results file's commit (``git diff``), so a clone without that history cannot
    regenerate them."""
    shallow = subprocess.run(
        ["git", "rev-parse", "--is-shallow-repository"], capture_output=True, text=True, cwd=REPO
    )
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip("needs the repository's git history (a full clone)")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/results_pages.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_the_pages_default_candidates_are_select_candidates_defaults():
    """The results pages judge `anomaly select` by ``DEFAULT_CANDIDATES`` (benchmark
    variants); each must be one of params.yaml's ``select.candidates``, measured with
    exactly its settings, or the published pick would be of another candidate set."""
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import results_pages
    from anomaly.params import load_params

    wanted = set()
    for entry in load_params(REPO / "params.yaml").select.candidates:
        if isinstance(entry, str):
            wanted.add((entry, ""))
        else:
            settings = " ".join(f"{k}={v}" for k, v in entry["set"].items())
            wanted.add((entry["model"], settings))
    measured = set()
    for name in results_pages.CANDIDATE_FILES:
        for line in (REPO / "benchmarks/results" / name).read_text().splitlines():
            row = json.loads(line)
            if row["variant"] in results_pages.DEFAULT_CANDIDATES:
                settings = " ".join(
                    s for s in row["overrides"].split() if not s.startswith("dataset.source=")
                )
                measured.add((row["variant"].split(" ")[0], settings))
    assert measured == wanted
    assert len(results_pages.DEFAULT_CANDIDATES) == len(wanted)
