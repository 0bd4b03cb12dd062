"""Locating the real GPU tool outputs kept in the repository (tests/fixtures/gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Real tool outputs, with the README that names each one's source.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"


def fixture_dir() -> Path:
    """The GPU fixture folder; fails (never skips) when it is missing."""
    if not FIXTURES.is_dir():
        pytest.fail(
            f"GPU fixture folder not found at {FIXTURES}; it is part of the repository "
            "(tests/fixtures/gpu)",
            pytrace=False,
        )
    return FIXTURES


def fixture_path(name: str) -> Path:
    path = fixture_dir() / name
    if not path.is_file():
        pytest.fail(f"GPU fixture {name} missing from {FIXTURES}", pytrace=False)
    return path


def fixture_text(name: str) -> str:
    return fixture_path(name).read_text(encoding="utf-8")


def fixture_names() -> list[str]:
    """Every fixture file (README.md aside)."""
    return sorted(p.name for p in fixture_dir().iterdir() if p.is_file() and p.suffix != ".md")
