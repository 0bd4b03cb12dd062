"""Guard: every real tool output in tests/fixtures/gpu is exercised by some agent test."""

from __future__ import annotations

from pathlib import Path

from tests.agent.helpers import fixture_names


def test_every_gpu_fixture_is_used_by_a_test() -> None:
    names = fixture_names()
    assert len(names) >= 30, names
    here = Path(__file__).resolve().parent
    sources = "\n".join(
        p.read_text(encoding="utf-8")
        for p in here.glob("test_*.py")
        if p.name != Path(__file__).name
    )
    unused = [name for name in names if name not in sources]
    assert unused == [], f"fixtures without a test: {unused}"
