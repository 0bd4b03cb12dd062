"""docs/BENCHMARKS.md is shared by every benchmark: each rewrites only its own section,
the text between its start and end markers (or appends the section the first time)."""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nFigures measured on real machines. Each section between `bench:*` markers is "
          "rewritten by the script that produced it; edit outside them.\n")


def write_section(text: str, start: str, end: str, path: Path = DOCS) -> None:
    """`text` runs from the start marker to the end marker, both included."""
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = HEADER
    i, j = old.find(start), old.find(end)
    if i != -1 and j > i:
        new = old[:i] + text.rstrip("\n") + old[j + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
