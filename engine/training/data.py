"""Training data for the built-in model: the running interpreter's standard library source.

Offline and reproducible: the files come from `sysconfig.get_paths()["stdlib"]`
(PSF-licensed), so the same Python version yields the same corpus. The split into
train / validation is by file, with a fixed seed, so no validation line was ever
seen in training, and held-out functions for generation come from validation files.

Excluded, with reasons:
- `site-packages/`: third-party code, not the standard library, and machine-specific.
- test suites (`test/`, `tests/`, `idle_test/`, `lib2to3/tests`): mostly fixtures and
  long assertion lists; they would dominate the small corpus.
- `encodings/`: generated codec tables (thousands of hex literals).
- `pydoc_data/`, `_sysconfigdata_*`, `config-*`: generated data, not code.
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

EXCLUDED_DIRS = {"site-packages", "test", "tests", "idle_test", "encodings", "pydoc_data", "__pycache__"}
EXCLUDED_PREFIXES = ("_sysconfigdata", "config-")

# SFT pair filters: short bodies and moderate docstrings keep examples within one
# 256-token training window and the 128-token generation budget of the evaluation.
MAX_BODY_LINES = 12
MAX_BODY_CHARS = 400
MAX_PROMPT_CHARS = 700


@dataclass(frozen=True)
class SourceFile:
    rel_path: str  # relative to the stdlib root, with "/" separators
    text: str


@dataclass(frozen=True)
class FunctionPair:
    """A function split into what the user gives (signature + docstring) and what the model writes."""

    source: str  # "<rel_path>:<lineno>"
    prompt: str  # dedented `def ...:` line(s) and the docstring, no trailing newline
    body: str  # the statements after the docstring, indented as under the dedented `def`


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _excluded(rel: Path) -> bool:
    if any(part in EXCLUDED_DIRS for part in rel.parts[:-1]):
        return True
    return any(part.startswith(EXCLUDED_PREFIXES) for part in rel.parts)


def list_source_files(root: Path | None = None) -> list[Path]:
    """Sorted relative paths of every kept `*.py` file (sorting makes the split seed-stable)."""
    root = root or stdlib_root()
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if not _excluded(rel):
            out.append(rel)
    return sorted(out, key=lambda r: r.as_posix())


def split_files(
    paths: list[Path], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Shuffle with a fixed seed and cut: (train, validation), each sorted."""
    order = sorted(paths, key=lambda r: r.as_posix())
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    return sorted(order[n_val:], key=str), sorted(order[:n_val], key=str)


def read_files(paths: list[Path], root: Path | None = None) -> list[SourceFile]:
    root = root or stdlib_root()
    out = []
    for rel in paths:
        try:
            text = (root / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a handful of legacy-encoded files; skipping keeps the corpus UTF-8
        out.append(SourceFile(rel.as_posix(), text))
    return out


def load_split(val_fraction: float = 0.1, seed: int = 0) -> tuple[list[SourceFile], list[SourceFile]]:
    root = stdlib_root()
    train, val = split_files(list_source_files(root), val_fraction, seed)
    return read_files(train, root), read_files(val, root)


def corpus_fingerprint(files: list[SourceFile]) -> str:
    """Short hash of paths and contents, logged so two runs can tell they saw the same data."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.rel_path.encode())
        h.update(f.text.encode())
    return h.hexdigest()[:16]


def extract_pairs(files: list[SourceFile]) -> list[FunctionPair]:
    """(signature + docstring, body) for every documented function with a short body, in file order."""
    pairs: list[FunctionPair] = []
    for f in files:
        try:
            tree = ast.parse(f.text)
        except SyntaxError:
            continue
        lines = f.text.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                pair = _pair_from_function(node, lines, f.rel_path)
                if pair is not None:
                    pairs.append(pair)
    return pairs


def _pair_from_function(
    node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], rel_path: str
) -> FunctionPair | None:
    if ast.get_docstring(node, clean=False) is None or len(node.body) < 2:
        return None
    doc_end = node.body[0].end_lineno  # 1-based, inclusive
    body_start, body_end = node.body[1].lineno, node.body[-1].end_lineno
    if doc_end is None or body_end is None or body_start <= doc_end:
        return None  # body on the docstring's line (`"""doc"""; x = 1`): no clean split
    if body_end - body_start + 1 > MAX_BODY_LINES:
        return None
    # `node.lineno` is the `def` line (decorators sit above it and are left out).
    block = textwrap.dedent("\n".join(lines[node.lineno - 1 : body_end]))
    block_lines = block.splitlines()
    n_head = doc_end - node.lineno + 1
    prompt = "\n".join(block_lines[:n_head]).rstrip()
    body = "\n".join(block_lines[body_start - node.lineno :]).rstrip()
    if not body.strip() or len(body) > MAX_BODY_CHARS or len(prompt) > MAX_PROMPT_CHARS:
        return None
    if "\t" in block:
        return None  # mixed tab indentation would make the parse check ambiguous
    try:
        ast.parse(prompt + "\n" + body)
    except SyntaxError:
        return None  # e.g. a comment line between docstring and body broke the split
    return FunctionPair(f"{rel_path}:{node.lineno}", prompt, body)


def held_out_pairs(val_files: list[SourceFile], n: int = 50, seed: int = 0) -> list[FunctionPair]:
    """A fixed sample of `n` pairs from validation files for the generation evaluation."""
    pairs = extract_pairs(val_files)
    rng = random.Random(seed)
    return sorted(rng.sample(pairs, min(n, len(pairs))), key=lambda p: p.source)
