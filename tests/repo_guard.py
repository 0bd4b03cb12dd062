"""The repository stands alone: nothing the tests read lies beside it.

Whoever clones DM gets the repository and nothing else, so a test that reads a sibling folder
(a sibling checkout, say) passes here and fails there. Two guards:

* :func:`references_outside` reads the sources of the tests, benchmarks and scripts and names
  every literal path that climbs out of the repository (``"../x"``, ``Path(__file__).parents[n]``
  above the root, ``/ ".."``), and :func:`symlinks_outside` every link under ``tests/`` that
  points out of it;
* :func:`install_open_guard` makes opening a file in a sibling of the repository raise while
  the tests run (the system's folders, the temporary folder, home and Python's own prefix are
  not siblings however the clone is placed).
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("tests", "bench", "scripts", ".ci")
SOURCE_FILES = ("Makefile",)


def _sources() -> Iterator[Path]:
    for d in SOURCE_DIRS:
        root = REPO / d
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file() and not p.is_symlink() and p.suffix in (".py", ".sh", "") and "fixtures" not in p.parts:
                    yield p
    for f in SOURCE_FILES:
        if (REPO / f).is_file():
            yield REPO / f


def _climbs_out(text: str, depth: int) -> bool:
    """Whether a relative path, read in a file `depth` folders below the root, leaves the repository."""
    level = depth
    for part in text.replace("\\", "/").split("/"):
        if part == "..":
            level -= 1
            if level < 0:
                return True
        elif part not in ("", "."):
            level += 1
    return False


_PATH_CALLS = {"Path", "PurePath", "PosixPath", "open", "join", "joinpath", "abspath", "realpath"}


def _climbing(node: ast.AST) -> str | None:
    """A literal path that climbs up, or an absolute one beside the repository (``/srv/other-checkout/x``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        value = node.value
        if value == ".." or value.startswith("../") or "/../" in value or value.endswith("/.."):
            return value
        if value.startswith("/") and _beside_repository(value):
            return value
    return None


def _beside_repository(path: str) -> bool:
    parent = REPO.parent
    if parent == Path(parent.anchor):
        return False
    p = Path(os.path.normpath(path))
    return p.is_relative_to(parent) and not p.is_relative_to(REPO) and not any(
        p.is_relative_to(m) for m in _machine_places())


def _python_references(path: Path, depth: int) -> Iterator[str]:
    """Paths built in Python that climb out: ``x / ".."``, ``Path("../x")``, ``os.path.join(d, "..")``,
    ``Path(__file__).parents[n]`` above the root. (Strings such as ``"../etc"`` sent to dmd as bad input
    are not paths the test reads, and are left alone.)"""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and (value := _climbing(node.right)):
            yield f"line {node.lineno}: the path part {value!r} climbs up"
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if name in _PATH_CALLS:
                for arg in node.args:
                    if value := _climbing(arg):
                        yield f"line {node.lineno}: {name}() of {value!r} climbs up"
        elif (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
              and node.value.attr == "parents" and isinstance(node.slice, ast.Constant)
              and isinstance(node.slice.value, int) and node.slice.value > depth):
            # Path(__file__).parents[n]: parents[depth] is the repository itself.
            yield f"line {node.lineno}: parents[{node.slice.value}] is above the repository"


def references_outside() -> list[str]:
    """Every literal path in the tests, benchmarks, scripts and Makefile that leads out of the repository."""
    found: list[str] = []
    for path in _sources():
        rel = path.relative_to(REPO)
        depth = len(rel.parts) - 1
        if path.suffix == ".py":
            found += [f"{rel}: {why}" for why in _python_references(path, depth)]
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for word in line.replace('"', " ").replace("'", " ").split():
                if ".." in word.split("/") and _climbs_out(word, depth):
                    found.append(f"{rel}: line {n}: {word!r} climbs out of the repository")
    return found


def symlinks_outside() -> list[str]:
    """Links under tests/ whose target is not inside the repository."""
    out = []
    for p in (REPO / "tests").rglob("*"):
        if p.is_symlink():
            target = (p.parent / os.readlink(p)).resolve()
            if not target.is_relative_to(REPO):
                out.append(f"{p.relative_to(REPO)} -> {target}")
    return out


def _machine_places() -> list[Path]:
    return [Path(x).resolve() for x in (tempfile.gettempdir(), Path.home(), sys.prefix, sys.base_prefix,
                                         sys.exec_prefix)]


def _allowed_siblings(parent: Path) -> set[str]:
    """Folders beside the repository that are the machine's, not another checkout's."""
    return {p.relative_to(parent).parts[0] for p in _machine_places() if p.is_relative_to(parent) and p != parent}


class OutsideRepository(PermissionError):
    """A test opened a file beside the repository."""


def install_open_guard(repo: Path = REPO) -> Path | None:
    """Refuse, for the rest of the process, to open files in the repository's sibling folders.
    Returns the guarded folder (None where the repository sits at the root of the file system)."""
    parent = repo.parent
    if parent == Path(parent.anchor) or parent in _machine_places():
        # A clone at the top of the file system, or in the temporary folder or a home folder: the
        # machine's own files are its siblings, and only the source scan can guard it.
        return None
    allowed = _allowed_siblings(parent) | {repo.name}
    prefix = str(parent) + os.sep

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event != "open" or not args:
            return
        raw = args[0]
        if isinstance(raw, bytes):
            raw = os.fsdecode(raw)
        if not isinstance(raw, str):
            return  # a file descriptor
        path = os.path.abspath(raw)
        if path.startswith(prefix) and path[len(prefix):].split(os.sep, 1)[0] not in allowed:
            raise OutsideRepository(f"{path} is outside the repository {repo}: tests may only read what the "
                                    "repository holds (copy fixtures into tests/fixtures)")

    sys.addaudithook(hook)
    return parent
