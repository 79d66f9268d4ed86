"""Every error code in the tree is declared once in federation.error_codes, and raised with its declared class.

The walk reads every .py file outside tests/ and federation/generated/ with the ast module and finds the codes
it uses: a ``code=`` (or ``..._code=``) keyword and a class's ``default_code``, whether a literal, a module or
local constant, or a conditional of them; the code a helper such as ``_refuse(message, code)`` passes on to the
class it raises; the first argument of ``error_for_code``; and any other literal of the code form whose first word
is one a declared code starts with (a check's ``return "AUDIT_TORN_TAIL"``). Each must be declared; at a raise
site ``SomeError(..., code="X")`` the class must be X's declared class or a subclass of it.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpf.cli.errors import exit_code
from hpf.federation import error_codes, errors
from hpf.federation.consent import tokens as consent
from hpf.federation.error_codes import REGISTRY, Effect, Scope
from hpf.federation.errors import FederationError
from hpf.federation.trust import verdicts

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"tests", "generated", "__pycache__", "build", "dist", "node_modules"}
CODE_FORM = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
# literals of the code form that are no error code: a gRPC status's name, a command-line parameter's name
NOT_CODES = {"DATA_LOSS", "KEY_FILES"}


@dataclass(frozen=True)
class Use:
    code: str
    where: str
    cls: str | None = None  # the class raised with it, where the site names one


def _sources() -> Iterator[Path]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        if Path(folder) == ROOT / "federation" / "generated":
            continue
        yield from (Path(folder) / f for f in sorted(files) if f.endswith(".py"))


# the folders installed as hpf.<folder> (pyproject's package-dir)
PACKAGES = {"federation", "policies", "client", "node", "coordinator", "demo", "cli"}


def _module_name(path: Path) -> str | None:
    """The installed module of a file of the tree (``node/handler.py``: ``hpf.node.handler``); None outside the
    package's folders (bench, scripts), whose classes no product code raises."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("hpf", *parts)) if parts[0] in PACKAGES else None


def _error_classes(trees: dict[Path, ast.Module]) -> dict[str, type[FederationError]]:
    """Every FederationError subclass defined in the tree, by name."""
    known: dict[str, type[FederationError]] = {
        name: obj for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, FederationError)
    }
    grown = True
    while grown:
        grown = False
        for path, tree in trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in known:
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    module = _module_name(path)
                    if bases & known.keys() and module is not None:
                        cls = getattr(importlib.import_module(module), node.name, None)
                        if isinstance(cls, type) and issubclass(cls, FederationError):
                            known[node.name] = cls
                            grown = True
    return known


def _called(call: ast.Call) -> str:
    fn = call.func
    return fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""


class _Module:
    """The code uses of one module."""

    def __init__(self, path: Path, tree: ast.Module, classes: dict[str, type[FederationError]]) -> None:
        self.where = str(path.relative_to(ROOT))
        self.tree, self.classes = tree, classes
        self.constants = {
            t.id: n.value.value
            for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        self.uses: list[Use] = []
        self.resolved: set[int] = set()  # ids of the constants a use was read from

    def values(self, node: ast.AST | None, scope: ast.AST | None) -> list[str]:
        """The code strings ``node`` can be: literals, constants, and names assigned literals in ``scope``."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.resolved.add(id(node))
            return [node.value] if node.value else []  # "": no code
        if isinstance(node, ast.IfExp):
            return self.values(node.body, scope) + self.values(node.orelse, scope)
        if isinstance(node, ast.BoolOp):
            return [v for operand in node.values for v in self.values(operand, scope)]
        if isinstance(node, ast.Name):
            local = [v for n in ast.walk(scope) for v in self._assigned(n, node.id)] if scope is not None else []
            if local:
                return local
            if node.id in self.constants:
                return [self.constants[node.id]]
        return []

    def _assigned(self, n: ast.AST, name: str) -> list[str]:
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            return self.values(n.value, None)
        if isinstance(n, ast.arguments):
            params = [*n.posonlyargs, *n.args]
            defaults = dict(zip([a.arg for a in params][len(params) - len(n.defaults) :], n.defaults, strict=True))
            defaults.update({a.arg: d for a, d in zip(n.kwonlyargs, n.kw_defaults, strict=True) if d is not None})
            return self.values(defaults.get(name), None)
        return []

    def forwarders(self) -> dict[str, tuple[str, int, str]]:
        """Functions that raise a class with the code one of their parameters gives: name -> (class, place, param)."""
        found: dict[str, tuple[str, int, str]] = {}
        for fn in ast.walk(self.tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args] if a.arg not in ("self", "cls")]
            for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call) and _called(c) in self.classes):
                for kw in call.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Name) and kw.value.id in params:
                        found[fn.name] = (_called(call), params.index(kw.value.id), kw.value.id)
        return found

    def collect(self) -> None:
        forwarders = self.forwarders()
        functions = (f for f in ast.walk(self.tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef))
        for scope in [self.tree, *functions]:
            for node in self._own_nodes(scope):
                if isinstance(node, ast.Call):
                    self._call(node, scope, forwarders)
                elif isinstance(node, ast.ClassDef) and node.name in self.classes:
                    for stmt in node.body:
                        if isinstance(stmt, ast.Assign) and any(
                            isinstance(t, ast.Name) and t.id == "default_code" for t in stmt.targets
                        ):
                            for code in self.values(stmt.value, None):
                                self.uses.append(Use(code, f"{self.where}:{stmt.lineno}", node.name))

    @staticmethod
    def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
        """The nodes of ``scope`` outside the functions nested in it (each function is its own scope)."""
        todo = list(ast.iter_child_nodes(scope))
        while todo:
            node = todo.pop()
            yield node
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                todo.extend(ast.iter_child_nodes(node))

    def _call(self, call: ast.Call, scope: ast.AST, forwarders: dict[str, tuple[str, int, str]]) -> None:
        name = _called(call)
        at = f"{self.where}:{call.lineno}"
        cls = name if name in self.classes else None
        for kw in call.keywords:
            if kw.arg is not None and (kw.arg == "code" or kw.arg.endswith("_code")):
                self.uses += [Use(code, at, cls if kw.arg == "code" else None) for code in self.values(kw.value, scope)]
        if name in ("error_for_code", "refusal") and call.args:
            self.uses += [Use(code, at) for code in self.values(call.args[0], scope)]
        if name in forwarders:
            raised, place, param = forwarders[name]
            given = [kw.value for kw in call.keywords if kw.arg == param]
            given += call.args[place : place + 1] if not given else []
            for node in given:
                self.uses += [Use(code, at, raised) for code in self.values(node, scope)]

    def loose_literals(self, words: set[str]) -> Iterator[Use]:
        """Literals of the code form, starting with a declared code's first word, not read as a use above."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in self.resolved:
                if CODE_FORM.fullmatch(node.value) and node.value.split("_")[0] in words:
                    yield Use(node.value, f"{self.where}:{node.lineno}")


def _walk() -> tuple[list[Use], dict[str, type[FederationError]]]:
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in _sources()}
    classes = _error_classes(trees)
    words = {name.split("_")[0] for name in REGISTRY}
    uses: list[Use] = []
    for path, tree in trees.items():
        module = _Module(path, tree, classes)
        module.collect()
        uses += module.uses
        uses += [u for u in module.loose_literals(words) if u.code not in NOT_CODES]
    return uses, classes


@pytest.fixture(scope="module")
def walked() -> tuple[list[Use], dict[str, type[FederationError]]]:
    return _walk()


def test_the_walk_finds_the_codes_it_should(walked: tuple[list[Use], dict[str, type[FederationError]]]) -> None:
    """The walker itself: literals, helpers that pass a code on, local and module constants, default codes."""
    uses, classes = walked
    raised = {(u.code, u.cls) for u in uses}
    for expected in [
        ("PLAN_SYNTAX", "PlanError"),  # a literal keyword
        ("AUTH_REPLAY", "AuthError"),
        ("AUTH_UNSIGNED", "AuthError"),  # through envelope._refuse(message, code)
        ("POLICY_ROLE_DENIED", "PolicyViolation"),  # through policies.engine's refuse(code, ...)
        ("PLAN_MAY_OVERFLOW", "PlanError"),  # through totality._not_total(what, code)
        ("AUDIT_KEY_INVALID", "AuditError"),  # a local variable
        ("INIT_ARGS", "ConfigError"),  # a module constant
        ("CONSENT_MALFORMED", "ConsentError"),  # a default code
    ]:
        assert expected in raised, expected
    assert {"AUDIT_TORN_TAIL", "CONSENT_REVOCATIONS_ROLLBACK", "GRPC_UNKNOWN"} <= {u.code for u in uses}
    assert "ConsentError" in classes and len(uses) > 500


def test_every_code_used_in_the_tree_is_declared(walked: tuple[list[Use], dict[str, type[FederationError]]]) -> None:
    undeclared = sorted({f"{u.code} ({u.where})" for u in walked[0] if u.code not in REGISTRY})
    assert not undeclared, "declare these in federation/error_codes: " + ", ".join(undeclared)


def test_every_code_is_raised_with_its_declared_class(
    walked: tuple[list[Use], dict[str, type[FederationError]]],
) -> None:
    uses, classes = walked
    wrong = sorted(
        f"{u.where}: {u.code} raised as {u.cls}, declared {REGISTRY[u.code].cls.__name__}"
        for u in uses
        if u.cls is not None and u.code in REGISTRY and not issubclass(classes[u.cls], REGISTRY[u.code].cls)
    )
    assert not wrong, "\n".join(wrong)


def test_every_declared_code_is_used(walked: tuple[list[Use], dict[str, type[FederationError]]]) -> None:
    """No declaration outlives its code (the GRPC_<status> family is built from the status of a failed call)."""
    used = {u.code for u in walked[0]}
    unused = sorted(c for c in REGISTRY if c not in used and not c.startswith("GRPC_"))
    assert not unused, unused


def test_the_gprc_family_is_the_class_its_status_maps_to() -> None:
    for status in error_codes.region.GRPC_STATUSES:
        assert REGISTRY[f"GRPC_{status}"].cls is errors.class_for_status(status)


def test_a_rebuilt_error_has_its_declared_class_and_an_unknown_code_the_generic_one() -> None:
    for name, code in REGISTRY.items():
        rebuilt = errors.error_for_code(name, "m", "h", "r")
        assert type(rebuilt) is code.cls and (rebuilt.code, rebuilt.hint, rebuilt.rule) == (name, "h", "r")
    unknown = errors.error_for_code("PLAN_FROM_A_NEWER_REGION", "m")
    assert type(unknown) is FederationError and unknown.code == "PLAN_FROM_A_NEWER_REGION"
    assert error_codes.effect_of("PLAN_FROM_A_NEWER_REGION") is Effect.REGION_MISSING


def test_consent_refusals_are_the_applicant_codes() -> None:
    assert set(consent.REFUSALS) == error_codes.APPLICANT_CODES


def test_the_transport_codes_and_their_lines_are_declared_ones() -> None:
    assert verdicts.TRANSPORT_CODES == {c for c, d in REGISTRY.items() if d.effect is Effect.TRANSPORT}
    for code in verdicts.TRANSPORT_CODES:
        assert REGISTRY[code].cls is errors.UnavailableError and REGISTRY[code].scope is Scope.REGION


# what the coordinator, the nodes and the client decided by prefix before the registry: every declared code keeps
# its effect (POLICY_FILE_INVALID, a node's own file read at start, is no verdict on a question)
OLD_QUERY_FAILURE_PREFIXES = (
    *("PLAN_", "POLICY_", "CONSENT_", "AUTH_", "CONTEXT_", "PARTIAL_"),
    *("PERSON_ID_", "NODE_EXECUTION_", "LOOKUP_", "DP_", "SECAGG_"),
)
OLD_NEEDS_THE_MISSING = {"POLICY_BREAKDOWN_DENIED", "POLICY_TOO_FEW_PARTICIPANTS", "POLICY_EXACT_NEEDS_ALL_REGIONS"}
OLD_TRANSPORT = {"NODE_TIMEOUT", "NODE_UNREACHABLE", "NODE_BAD_ANSWER", "NODE_UNWELL", "NODE_STATE_UNWRITABLE"}
OLD_DATA_FAILURES = ("NODE_EXECUTION_FAILED", "PARTIAL_")
OLD_VERDICT_REFUSALS = ("POLICY_", "PLAN_", "DP_")


def test_no_code_changed_what_it_does_to_a_question() -> None:
    names = set(REGISTRY)
    assert error_codes.FAILS_QUESTION == {c for c in names if c.startswith(OLD_QUERY_FAILURE_PREFIXES)}
    assert error_codes.NEEDS_THE_MISSING == OLD_NEEDS_THE_MISSING
    assert error_codes.TRANSPORT_CODES == OLD_TRANSPORT
    assert error_codes.MASKED_FAILURES == {c for c in names if c.startswith(OLD_DATA_FAILURES)}
    old_verdicts = {c for c in names if c.startswith(OLD_VERDICT_REFUSALS)}
    assert error_codes.VERDICT_REFUSALS == old_verdicts - {"POLICY_FILE_INVALID"}


def test_the_reference_is_the_registrys() -> None:
    """docs/errors.md's tables are the registry's (scripts/gen_error_reference.py --check)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_error_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert all(f"| `{code}` |" in text for code in REGISTRY)


def test_the_references_exit_codes_are_the_clis() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([A-Za-z, ]*) \|", text, flags=re.MULTILINE)
    documented = {name: int(status) for status, names in rows for name in names.split(", ") if name}
    classes = {name: cls for name, cls in vars(errors).items() if isinstance(cls, type) and issubclass(cls, Exception)}
    assert documented.keys() == {n for n, c in classes.items() if issubclass(c, FederationError)}
    for name, status in documented.items():
        assert exit_code(classes[name]("m")) == status, name
