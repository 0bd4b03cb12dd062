"""The layers' rules, read from the source (AST), so a wrong import fails here naming the module and line.

    agent                     never imports dmd (the agent binary stays small; see also
                              tests/agent/test_no_server_imports.py, which imports it for real)
    dmd.api, dmd.pages,       reach storage and dmd's parts only through dmd.usecases and ctx.dm /
    dmd.ssh (the gateway)     dm_of(request) / the gateway's Dm: neither dmd.db nor dmd.queries, nor
                              the parts' modules; pages never import the API (both use dmd.schemas,
                              dmd.views); neither imports the gateway nor the gateway them
    dmd.usecases              imports none of those handlers
    dmd.queries               functions on a connection: none of the tiers above it
    dmd.db                    none of queries, use cases, API, pages
    shared modules            (schemas, views, models, errors, auth, net, state, i18n) none of
                              dmd.db, dmd.queries, the API or the pages

and, in the handlers (dmd.api, dmd.pages, dmd.ssh), no transaction is opened (`.db` is never touched) and no
application key is read (`app[...]`) except in the one place each package reads dmd's parts.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# dmd.ssh (the SSH gateway) is a handler like the API and the pages: its clients speak SSH.
HANDLERS = ("dmd.api", "dmd.pages", "dmd.ssh")
PARTS = ("dmd.reconciler", "dmd.port_applier", "dmd.agents", "dmd.blobs", "dmd.local_node", "dmd.app")
SHARED = ("dmd.schemas", "dmd.views", "dmd.models", "dmd.errors", "dmd.auth", "dmd.net", "dmd.state", "dmd.i18n")


@dataclass(frozen=True)
class Rule:
    importers: tuple[str, ...]  # packages or modules the rule is about
    forbidden: tuple[str, ...]  # what they must not import
    why: str


RULES = (
    Rule(("agent",), ("dmd",), "the agent never imports dmd"),
    Rule(HANDLERS, ("dmd.db", "dmd.queries", *PARTS),
         "handlers reach storage only through dmd.usecases and dmd's parts only through the Dm they are given"),
    Rule(("dmd.pages",), ("dmd.api",), "pages never import the API: shared schemas and views are dmd.schemas, "
         "dmd.views"),
    Rule(("dmd.api",), ("dmd.pages",), "the API never imports the pages"),
    Rule(("dmd.api", "dmd.pages"), ("dmd.ssh",), "the API and the pages never import the SSH gateway: what they "
         "show of it comes from dmd.usecases.gateway"),
    Rule(("dmd.ssh",), ("dmd.api", "dmd.pages"), "the SSH gateway never imports the API or the pages"),
    Rule(("dmd.usecases",), HANDLERS, "use cases never import the handlers"),
    Rule(("dmd.queries",), ("dmd.usecases", *HANDLERS, "dmd.core", *PARTS),
         "queries work on a connection and import none of the tiers above them"),
    Rule(("dmd.db",), ("dmd.queries", "dmd.usecases", *HANDLERS, "dmd.core", *PARTS),
         "storage imports none of the tiers above it"),
    Rule(SHARED, ("dmd.db", "dmd.queries", *HANDLERS), "shared modules stay out of storage and the handlers"),
)

# Where a handler package reads dmd's parts from the application (the only `app[...]`).
PARTS_READERS = ("dmd.api.registry", "dmd.pages.render")


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) for each import, relative ones resolved; `from a import b` yields a.b too
    (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"


def handler_misuse(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Application keys read, or the database touched, in a handler module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            value = node.value
            if (isinstance(value, ast.Attribute) and value.attr == "app") or (
                    isinstance(value, ast.Name) and value.id == "app"):
                yield node.lineno, "reads an application key (use ctx.dm or dm_of(request))"
        elif isinstance(node, ast.Attribute) and node.attr == "db":
            yield node.lineno, "touches the database (call a use case: it opens the transaction)"


def violations(root: Path, packages: tuple[str, ...] = ("dmd", "agent")) -> list[str]:
    found = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            module = module_of(path, root)
            tree = ast.parse(path.read_text(), str(path))
            rel = path.relative_to(root)
            for rule in RULES:
                if not within(module, rule.importers):
                    continue
                seen: set[tuple[int, str]] = set()
                for line, target in imports_of(tree, module, path.name == "__init__.py"):
                    bad = next((f for f in rule.forbidden if within(target, (f,))), None)
                    if bad is not None and (line, bad) not in seen:
                        seen.add((line, bad))
                        found.append(f"{rel}:{line}: {module} imports {target}: {rule.why}")
            if within(module, HANDLERS) and module not in PARTS_READERS:
                found += [f"{rel}:{line}: {module} {what}" for line, what in handler_misuse(tree)]
    return found


def test_the_tree_keeps_the_rules() -> None:
    assert violations(REPO) == []


# --- the checker itself ------------------------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for pkg in ("dmd", "dmd/api", "dmd/pages", "dmd/queries", "dmd/usecases", "dmd/db", "agent"):
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").touch()
    return root


def test_a_page_importing_storage_or_the_api_is_named_with_its_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"dmd/pages/bad.py": "import os\nfrom dmd.queries import nodes\nimport dmd.db.engine\n"
                            "from ..api import registry\nfrom dmd import api\nfrom dmd.usecases import nodes as uc\n"})
    found = violations(root)
    assert [v.split(": ")[0] for v in found] == ["dmd/pages/bad.py:2", "dmd/pages/bad.py:3", "dmd/pages/bad.py:4",
                                                 "dmd/pages/bad.py:5"]
    assert "dmd.pages.bad imports dmd.queries" in found[0] and "imports dmd.api: pages never" in found[2]


def test_storage_and_the_agent_importing_upwards_are_named(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dmd/db/x.py": "from dmd.usecases import nodes\n",
        "dmd/queries/y.py": "from . import users\nfrom ..usecases.nodes import create\n",
        "dmd/usecases/z.py": "from dmd.pages import render\nfrom dmd.queries import nodes\n",
        "agent/w.py": "import json\n\ndef f():\n    from dmd.models import User\n",
    })
    found = sorted(v.split(": ")[0] for v in violations(root))
    assert found == ["agent/w.py:4", "dmd/db/x.py:1", "dmd/queries/y.py:2", "dmd/usecases/z.py:1"]


def test_a_handler_opening_a_transaction_or_reading_an_app_key_is_named(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dmd/api/h.py": "async def f(ctx):\n    async with ctx.dm.db.begin() as conn:\n        pass\n",
        "dmd/pages/p.py": "def g(request):\n    return request.app[KEY]\n",
        "dmd/pages/render.py": "def dm_of(request):\n    return request.app[DM]\n",
    })
    found = violations(root)
    assert [v.split(": ")[0] for v in found] == ["dmd/api/h.py:2", "dmd/pages/p.py:2"]
    assert "touches the database" in found[0] and "reads an application key" in found[1]


def test_the_ssh_gateway_is_held_to_the_handlers_rules(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dmd/ssh/server.py": "from dmd.queries import users\nfrom dmd.usecases import gateway\nimport dmd.api\n"
                             "async def f(dm):\n    async with dm.db.read() as conn:\n        pass\n",
        "dmd/api/h.py": "from dmd.ssh import server\n",
        "dmd/usecases/u.py": "from dmd.ssh.server import SshGateway\n",
    })
    found = sorted(v.split(": ")[0] for v in violations(root))
    assert found == ["dmd/api/h.py:1", "dmd/ssh/server.py:1", "dmd/ssh/server.py:3", "dmd/ssh/server.py:5",
                     "dmd/usecases/u.py:1"]
