"""The repository documents itself: no tracked file points to documents or paths outside it
(design notes, seed papers, the machine's folders), and every relative Markdown link resolves to a
file inside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Written in pieces so this file does not match itself.
# (design notes and seed papers next to the repository, the machine's folders, the team's notes)
FORBIDDEN = ["../" + "shared", "/" + "work/", "DESIGN" + ".md", "seeds" + "/", "the lead" + "'s"]
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "diffuserve.egg-info"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        files = [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but caches
        files = [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:4096]:
        return None  # binary (weights, images)
    return data.decode("utf-8", errors="replace")


def test_no_file_points_outside_the_repository():
    found = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{lineno}: {bad!r}" for bad in FORBIDDEN if bad in line]
    assert not found, "\n".join(found)


def test_markdown_links_stay_inside_and_resolve():
    bad = []
    for path in tracked_files():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL (https:, mailto:) or an anchor in the same page
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT):
                bad.append(f"{path.relative_to(ROOT)}: {target} leaves the repository")
            elif not resolved.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target} does not exist")
    assert not bad, "\n".join(bad)


def test_the_checks_catch_what_they_look_for():
    # The patterns match the kinds of pointers this test exists to keep out.
    line = "see " + "../" + "shared/" + "DESIGN" + ".md"
    assert [p for p in FORBIDDEN if p in line]
    assert LINK.findall("[notes](../../elsewhere.md)") == ["../../elsewhere.md"]
