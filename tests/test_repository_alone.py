"""A clone of the repository on its own passes its tests: nothing they read lies outside it."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests import repo_guard
from tests.conftest import REPO


def test_no_test_script_or_benchmark_refers_to_a_path_outside_the_repository() -> None:
    assert repo_guard.references_outside() == []


def test_no_fixture_links_out_of_the_repository() -> None:
    assert repo_guard.symlinks_outside() == []


def test_the_gpu_fixtures_are_in_the_repository_with_their_sources() -> None:
    gpu = REPO / "tests" / "fixtures" / "gpu"
    readme = (gpu / "README.md").read_text(encoding="utf-8")
    files = [p.name for p in gpu.iterdir() if p.suffix != ".md"]
    assert len(files) >= 30
    assert [f for f in files if f"`{f}`" not in readme] == []  # every file's source is written down


@pytest.mark.parametrize(("source", "depth", "found"), [
    ('FIX = Path(__file__).resolve().parents[2] / ".." / "other-checkout"', 2, "'..' climbs up"),
    ('FIX = Path(__file__).resolve().parents[3] / "other-checkout"', 2, "parents[3] is above"),
    ('FIX = os.path.join(os.path.dirname(__file__), "../../../other-checkout")', 2, "join() of"),
    ('FIX = Path("../other-checkout/fixtures")', 1, "Path() of"),
    ('FIX = Path("{PARENT}/other-checkout/fixtures/gpu/x.xml")', 1, "Path() of"),
])
def test_the_scan_finds_each_way_of_climbing_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str,
                                                  depth: int, found: str) -> None:
    # A checkout in a folder of its own (wherever this one is: in /tmp, its siblings are the
    # machine's and an absolute path there is not flagged, by design).
    monkeypatch.setattr(repo_guard, "REPO", Path("/srv/checkouts/dm"))
    source = source.replace("{PARENT}", "/srv/checkouts")
    f = tmp_path / "t.py"
    f.write_text(textwrap.dedent(source))
    ast.parse(source)
    reasons = list(repo_guard._python_references(f, depth))
    assert len(reasons) == 1 and found in reasons[0], reasons


def test_the_scan_leaves_bad_input_strings_and_the_repository_root_alone(tmp_path: Path) -> None:
    f = tmp_path / "t.py"
    f.write_text('ROOT = Path(__file__).resolve().parents[2]\nbody = {"url": "../etc/passwd"}\n')
    assert list(repo_guard._python_references(f, 2)) == []


def test_opening_a_file_beside_the_repository_fails() -> None:
    # A sibling of the checkout is exactly what a clone lacks. conftest guarded this checkout's
    # siblings unless it sits in a machine folder (/tmp, home: there they are the machine's); a
    # checkout in a folder of its own is guarded wherever this one is.
    parent = REPO / ".test-cache" / "guard"
    fake = parent / "dm"
    (parent / "other-checkout").mkdir(parents=True, exist_ok=True)
    fake.mkdir(exist_ok=True)
    assert repo_guard.install_open_guard(fake) == parent
    with pytest.raises(repo_guard.OutsideRepository, match="outside the repository"):
        open(parent / "other-checkout" / "README.md")  # noqa: SIM115
    with pytest.raises(repo_guard.OutsideRepository):
        (parent / "dm-guard-probe").write_text("x")
    (fake / "inside").write_text("x")  # the repository itself stays open
    if REPO.parent not in repo_guard._machine_places():
        with pytest.raises(repo_guard.OutsideRepository, match="outside the repository"):
            open(REPO.parent / "other-checkout" / "README.md")  # noqa: SIM115


def test_the_machine_s_own_folders_stay_readable(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("ok")
    assert (tmp_path / "x").read_text() == "ok"
    assert Path("/etc/hostname").exists() and open("/etc/hostname").read() is not None  # noqa: SIM115
