"""The documentation: generated pages current, the README short, every relative link resolving."""

import re
import subprocess
from pathlib import Path

import pytest

from metods_evo import results_pages

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "runs" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code (where brackets are code, not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (lowercase, punctuation dropped, spaces to '-', -1 for repeats)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_generated_pages_are_current():
    """docs/results.md, docs/cli.md, docs/configuration.md and the generated blocks of README.md / runs/README.md are
    what `python -m metods_evo.results_pages` writes from today's runs and code."""
    stale = [str(path.relative_to(ROOT)) for path in results_pages.stale(ROOT)]
    assert not stale, f"stale generated docs: {stale}; run `python -m metods_evo.results_pages` and commit the result"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    """Every relative link (and image) of the README, runs/README.md and docs/*.md points to an existing file or
    folder, and a #fragment into a Markdown page to one of its headings."""
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_citation_of_missing_sources(page):
    """No page sends readers to files that are not in the repository (the paper's summary lives outside it; there is
    no DESIGN.md)."""
    text = page.read_text()
    assert "shared/PAPER.md" not in text
    assert "DESIGN.md" not in text


def test_every_reference_run_is_indexed_and_documented():
    """The runs committed under runs/ are exactly the reference runs the generator knows (local runs beside them are
    ignored by git); each exists and has its section in docs/results.md."""
    known = sorted(ref.directory for ref in results_pages.REFERENCE_RUNS)
    for name in known:
        assert (ROOT / "runs" / name / "COMMAND.md").is_file(), name
    results = (ROOT / "docs" / "results.md").read_text()
    for name in known:
        assert f"runs/{name}" in results
    try:
        tracked = subprocess.run(["git", "ls-files", "runs"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    committed = sorted({Path(p).parts[1] for p in tracked if len(Path(p).parts) > 2 and (ROOT / p).exists()})
    unknown = sorted(set(committed) - set(known))
    assert not unknown, f"committed runs {unknown}: add them to results_pages.REFERENCE_RUNS, or remove them"


def test_commit_of_a_run(tmp_path):
    """The commit comes from COMMAND.md's `Commit:` line; without one, from git (here: no repository at all)."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "COMMAND.md").write_text("# r\n\n```bash\nmetods-evo train \\\n    --task maze\n```\n\nCommit: `abc1234`\n")
    assert results_pages.commit(tmp_path, run, [run / "COMMAND.md"]) == "abc1234"
    assert results_pages.command(run) == "metods-evo train --task maze"
    (run / "COMMAND.md").write_text("# r\n\n```bash\nmetods-evo train\n```\n")
    assert results_pages.commit(tmp_path, run, [run / "COMMAND.md"]) == "uncommitted"  # git knows no such file


def test_paired_log_is_parsed():
    log = results_pages.paired_log(ROOT / "runs" / "maze-table" / "paired-n96prefbg0.8mb8-rl2g0.8mb8-8x8.txt")
    assert (log["a"], log["b"]) == ("metods-s1-n96-w0-pre-fb-g0.8-mb8", "rl2-g0.8-mb8")
    ret = log["metrics"]["return"]
    assert abs(ret["a"] - ret["b"] - ret["diff"]) < 1e-2 and len(ret["seeds"]) == 3
