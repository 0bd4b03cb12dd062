"""A small mutation run: change one thing in the code under test, run the tests that should
notice, and count who noticed.

    python -m tests.mutation.run                   # every target in tests/mutation/targets.py
    python -m tests.mutation.run throttle quota    # some of them
    python -m tests.mutation.run --list            # the targets, their files and tests
    python -m tests.mutation.run --out docs/MUTATION.md

Why not mutmut: mutmut 3 copies the package into mutants/ and runs the suite from there, which
our tests (a real `dmd serve`, the agent, files read beside the code) do not survive. Here the
process imports everything once and forks a child per mutant; the child swaps the mutated
function's code object in place (every reference to the function sees it) and runs pytest on
the target's tests. A mutant is killed when the tests fail or time out.

Mutations, inside function bodies only: comparison flipped (== !=, < <=, > >=, in, is), and/or
swapped, a `not` dropped, an `if`/`while` condition negated, True/False swapped, a number
changed by one, + and - swapped, min/max swapped, a `raise` dropped, a statement that is a
call dropped, `.where(...)` and `.with_for_update()` dropped from a query, a return value
replaced by None. Route targets also weaken each route's declared level (admin -> user,
user -> none).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import inspect
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Mutant:
    target: str
    file: str
    function: str  # qualified name, or "route" for a route level
    line: int
    description: str
    source: str = ""  # the whole mutated module (code mutants)
    route: tuple[str, str, str] | None = None  # (method, path, new level)
    snippet: str = ""  # the original line, stripped (identifies the mutant across line moves)
    outcome: str = ""  # killed | timeout | survived | not applied
    seconds: float = 0.0


@dataclass
class Target:
    name: str
    file: str  # path from the repository root
    functions: list[str]  # qualified names; "*" for every function and method of the module
    tests: list[str]  # pytest arguments
    # For a mutant of a line that takes a row lock: tests that race on PostgreSQL and MariaDB
    # (on SQLite a missing lock cannot show, since its writers queue for the whole database).
    lock_tests: list[str] | None = None
    routes: bool = False  # also weaken the API routes' levels
    # Survivors that cannot change behaviour, "function | description | original line" -> why;
    # still counted (as survivors), and listed with the reason.
    equivalent: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- making mutants

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE,
    ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_DROPPED_METHODS = ("where", "with_for_update")


def _sites(fn: ast.AST) -> Iterator[tuple[ast.AST, str, Any]]:
    """(node, description, how) for each mutation the function's body offers."""
    body = [n for stmt in fn.body for n in ast.walk(stmt)]  # type: ignore[attr-defined]
    for node in body:  # not the signature: defaults are not in the code object
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAP:
                    new = _COMPARE_SWAP[type(op)]
                    yield node, f"{type(op).__name__} -> {new.__name__}", ("cmp", i, new)
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            yield node, f"{'and' if other == 'or' else 'or'} -> {other}", ("boolop",)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            yield node, "not dropped", ("not",)
        elif isinstance(node, ast.If | ast.While):
            yield node, "condition negated", ("negate",)
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, f"{node.value} -> {not node.value}", ("const", not node.value)
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not _in_fstring(fn, node):
            yield node, f"{node.value!r} -> {node.value + 1!r}", ("const", node.value + 1)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            new = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
            yield node, f"{type(node.op).__name__} -> {new.__name__}", ("binop", new)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max"):
            yield node, f"{node.func.id} -> {'max' if node.func.id == 'min' else 'min'}", ("minmax",)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in _DROPPED_METHODS:
            yield node, f".{node.func.attr}(...) dropped", ("dropcall",)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            yield node, "raise dropped", ("pass",)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await):
            yield node, "call dropped", ("pass",)
        elif isinstance(node, ast.Return) and node.value is not None \
                and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield node, "returns None", ("return_none",)


def _in_fstring(fn: ast.AST, const: ast.Constant) -> bool:
    return any(isinstance(n, ast.JoinedStr) and const in ast.walk(n) for n in ast.walk(fn))


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, how: Any) -> None:
        self.target, self.how = target, how

    def visit(self, node: ast.AST) -> Any:
        if node is not self.target:
            return super().visit(node)
        kind = self.how[0]
        if kind == "cmp":
            node.ops[self.how[1]] = self.how[2]()  # type: ignore[attr-defined]
        elif kind == "boolop":
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()  # type: ignore[attr-defined]
        elif kind == "not":
            return node.operand  # type: ignore[attr-defined]
        elif kind == "negate":
            node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)  # type: ignore[attr-defined]
        elif kind == "const":
            node.value = self.how[1]  # type: ignore[attr-defined]
        elif kind == "binop":
            node.op = self.how[1]()  # type: ignore[attr-defined]
        elif kind == "minmax":
            node.func.id = "max" if node.func.id == "min" else "min"  # type: ignore[attr-defined]
        elif kind == "dropcall":
            return node.func.value  # type: ignore[attr-defined]
        elif kind == "pass":
            return ast.Pass()
        elif kind == "return_none":
            node.value = ast.Constant(None)  # type: ignore[attr-defined]
        return node


def _functions(tree: ast.Module, wanted: list[str]) -> Iterator[tuple[str, ast.AST]]:
    def walk(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.AST]]:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + node.name
                if "*" in wanted or name in wanted:
                    yield name, node
            elif isinstance(node, ast.ClassDef):
                yield from walk(node.body, prefix + node.name + ".")

    yield from walk(tree.body, "")


def make_mutants(target: Target) -> list[Mutant]:
    path = REPO / target.file
    text = path.read_text()
    tree = ast.parse(text)
    source_lines = text.splitlines()
    found = dict(_functions(tree, target.functions))
    missing = [f for f in target.functions if f != "*" and f not in found]
    if missing:
        raise SystemExit(f"{target.name}: no {', '.join(missing)} in {target.file} (update tests/mutation/targets.py)")
    mutants = []
    for qualname, fn in found.items():
        for i, (node, description, how) in enumerate(list(_sites(fn))):
            mutated = copy.deepcopy(tree)
            mfn = dict(_functions(mutated, [qualname]))[qualname]
            mnode = list(_sites(mfn))[i][0]
            _Apply(mnode, how).visit(mfn)
            ast.fix_missing_locations(mutated)
            line = getattr(node, "lineno", fn.lineno)  # type: ignore[attr-defined]
            mutants.append(Mutant(target.name, target.file, qualname, line, description, ast.unparse(mutated),
                                  snippet=source_lines[line - 1].strip()))
    if target.routes:
        from dmd.api import build_api

        weaker = {"admin": "user", "user": "none"}
        for r in build_api().routes:
            if r.auth in weaker:
                mutants.append(Mutant(target.name, "dmd/api/*.py", "route", 0,
                                      f"{r.method} {r.path}: {r.auth} -> {weaker[r.auth]}",
                                      route=(r.method, r.path, weaker[r.auth])))
    return mutants


# --------------------------------------------------------------------------- running them


def _module_name(file: str) -> str:
    return file.removesuffix(".py").replace("/", ".")


def _resolve(module: types.ModuleType, qualname: str) -> types.FunctionType:
    obj: Any = module
    for part in qualname.split("."):
        holder = obj
        obj = inspect.getattr_static(holder, part) if inspect.isclass(holder) else getattr(holder, part)
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        elif isinstance(obj, property):
            obj = obj.fget
    return inspect.unwrap(obj)  # type: ignore[no-any-return]


def _code_of(code: types.CodeType, qualname: str) -> types.CodeType | None:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_qualname == qualname:
                return const
            found = _code_of(const, qualname)
            if found is not None:
                return found
    return None


def _apply_in_child(m: Mutant) -> bool:
    if m.route is not None:
        from dmd.api import build_api

        method, path, level = m.route
        # The routes are the API modules' own Route objects: every app built later sees this.
        [route] = [r for r in build_api().routes if (r.method, r.path) == (method, path)]
        route.auth = level  # type: ignore[assignment]
        return True
    module = importlib.import_module(_module_name(m.file))
    code = _code_of(compile(m.source, str(REPO / m.file), "exec"), m.function)
    if code is None:
        return False
    fn = _resolve(module, m.function)
    try:
        fn.__code__ = code
    except ValueError:  # a different closure: cannot swap in place
        return False
    return True


def tests_for(target: Target, mutant: Mutant | None) -> list[str]:
    if mutant is not None and target.lock_tests and "with_for_update" in mutant.snippet:
        return target.lock_tests
    return target.tests


def run_tests(target: Target, mutant: Mutant | None, timeout: float, tests: list[str] | None = None
              ) -> tuple[str, float]:
    """Fork; the child applies the mutant and runs the target's tests."""
    started = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child, in a process group of its own (a timeout ends whatever it started)
        try:
            os.setpgid(0, 0)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if mutant is not None and not _apply_in_child(mutant):
                os._exit(3)
            import pytest

            code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *(tests or tests_for(target, mutant))])
            os._exit(int(code))
        except BaseException:
            os._exit(4)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.05)
    took = time.monotonic() - started
    if code == 0:
        return "survived", took
    if code == 3:
        return "not applied", took
    return "killed", took


def preload() -> None:
    """Import what every child needs, once (a child then starts in a fraction of a second)."""
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    import aiohttp  # noqa: F401
    import pytest  # noqa: F401
    import sqlalchemy  # noqa: F401

    import dmd.app  # noqa: F401
    import tests.conftest  # noqa: F401


def report(results: dict[str, list[Mutant]], targets: dict[str, Target], out: Path | None, command: str) -> int:
    lines = ["# Mutation run", "",
             "What the tests of the authorization, login throttle, quota and ledger code notice when that code",
             "is changed one thing at a time. `tests/mutation/run.py` makes the mutants (inside function",
             "bodies: comparisons, and/or, not, conditions, constants, +/-, min/max, a dropped raise, call,",
             "`.where()` or `.with_for_update()`, a return of None; and each API route's declared level",
             "weakened), forks a child per mutant that swaps the function's code in place, and runs the",
             "target's tests on SQLite; a mutant of a line that takes a row lock runs the target's race",
             "tests on PostgreSQL and MariaDB instead (SQLite's writers queue, so a lost lock cannot show",
             "there). A mutant is killed when the tests fail or time out.", "",
             "The targets (file, functions, tests) are in `tests/mutation/targets.py`; when code moves",
             "(dmd/services into dmd/queries and dmd/usecases, say), change the `file` and function names",
             "there. Survivors marked equivalent cannot change behaviour; they still count as survivors.", "",
             f"Rerun: `make mutation` (`{command}`); some targets: `make mutation MUTATION_TARGETS=\"quota ledger\"`.",
             "", "| target | file | mutants | killed | survived | score |", "|---|---|---|---|---|---|"]
    total_killed = total = 0
    for name, mutants in results.items():
        counted = [m for m in mutants if m.outcome != "not applied"]
        killed = sum(m.outcome in ("killed", "timeout") for m in counted)
        total_killed += killed
        total += len(counted)
        files = sorted({m.file for m in mutants})
        score = f"{100 * killed / len(counted):.1f} %" if counted else "-"
        lines.append(f"| {name} | {', '.join(files)} | {len(counted)} | {killed} | {len(counted) - killed} | {score} |")
    overall = 100 * total_killed / total if total else 0.0
    lines += ["", f"**All targets: {total_killed} of {total} mutants killed ({overall:.1f} %).**", "",
              "## Survivors", ""]
    for name, mutants in results.items():
        for m in mutants:
            if m.outcome == "survived":
                where = f"{m.file}:{m.line} `{m.function}`" if m.route is None else "route level"
                why = targets[name].equivalent.get(f"{m.function} | {m.description} | {m.snippet}")
                code = f" in `{m.snippet}`" if m.snippet else ""
                lines.append(f"- {name}: {where}: {m.description}{code}" + (f" — equivalent: {why}" if why else ""))
    not_applied = [m for ms in results.values() for m in ms if m.outcome == "not applied"]
    if not_applied:
        lines += ["", f"{len(not_applied)} mutant(s) could not be applied in place and are not counted."]
    text = "\n".join(lines) + "\n"
    if out is not None:
        out.write_text(text)
    print(text)
    return 0 if overall >= 90 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--out", type=Path, help="write the report (Markdown) here too")
    parser.add_argument("--timeout-factor", type=float, default=4.0)
    args = parser.parse_args()
    preload()
    from tests.mutation.targets import TARGETS

    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    if args.list:
        for t in chosen:
            print(f"{t.name}: {t.file} {t.functions} -> pytest {' '.join(t.tests)}")
        return 0
    results: dict[str, list[Mutant]] = {}
    for t in chosen:
        mutants = make_mutants(t)
        timeouts = {}
        for tests in filter(None, (t.tests, t.lock_tests)):
            outcome, base = run_tests(t, None, 600, tests)
            if outcome != "survived":
                raise SystemExit(f"{t.name}: the tests fail without any mutant ({outcome}); fix them first: "
                                 f"pytest {' '.join(tests)}")
            timeouts[id(tests)] = max(20.0, base * args.timeout_factor)
            print(f"{t.name}: pytest {' '.join(tests)} takes {base:.1f} s", flush=True)
        print(f"{t.name}: {len(mutants)} mutants", flush=True)
        for i, m in enumerate(mutants, 1):
            m.outcome, m.seconds = run_tests(t, m, timeouts[id(tests_for(t, m))])
            print(f"  [{i}/{len(mutants)}] {m.outcome:11} {m.function}:{m.line} {m.description}", flush=True)
        results[t.name] = mutants
    command = "python -m tests.mutation.run " + " ".join(args.targets) + (f" --out {args.out}" if args.out else "")
    return report(results, {t.name: t for t in chosen}, args.out, " ".join(command.split()))


if __name__ == "__main__":
    sys.exit(main())
