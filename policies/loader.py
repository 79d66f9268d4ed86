"""Reading a policy file: ``extends`` resolved, and every problem named by file and line.

Errors are :class:`~federation.errors.ConfigError` with code ``POLICY_FILE_INVALID``, one problem per line of the
message, each ``FILE:LINE: field.path: what is wrong``. A problem in a value that came from an extended base file
names that file and its line. Every problem is reported at once: keys written twice, every value the format
refuses, every undeclared purpose and, against a catalog, every table and column it lacks. Only what leaves
nothing to check stops at the first: a file that cannot be read (``CONFIG_NOT_FOUND``, ``CONFIG_UNREADABLE``),
YAML that does not parse (``CONFIG_SYNTAX``) or nests too deeply or expands too far by its aliases
(``CONFIG_TOO_COMPLEX``), an empty file, and an ``extends`` that cannot be followed. A file is read as every
configuration file is (:func:`federation.config_files.read_bytes`): a FIFO, a device or a file past 16 MiB is
refused unread.

``extends`` names a file relative to the extending one, or a packaged policy from any folder: ``hpf:base`` (the
table-agnostic base, ``policies/base.yaml``) or ``hpf:default`` (the demo federation's, ``policies/default.yaml``).
The same names work wherever a policy file is read (``hpf policy show hpf:base``).

The lines come from PyYAML's composed nodes: every key and list item is kept with the line it was written on,
merged along ``extends`` with the values, and looked up for each pydantic error location.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from hpf.federation.catalog import Catalog
from hpf.federation.config_files import BoundedLoader, YamlTooComplex, duplicate_keys, field_path, read_bytes
from hpf.federation.errors import ConfigError
from hpf.policies import DEFAULT_POLICY, PACKAGED_POLICIES, PACKAGED_PREFIX
from hpf.policies.cross_checks import catalog_problems, consent_problems, reference_problems
from hpf.policies.fields import Loc, written_at
from hpf.policies.model import Policy

__all__ = ["DEFAULT_POLICY", "PolicyCheck", "check_against_catalog", "check_policy", "load_policy", "policy_path"]

INVALID = "POLICY_FILE_INVALID"
MAX_EXTENDS_DEPTH = 8
MAX_POLICY_VALUES = 100_000  # what a policy file's aliases may expand it to: each value is kept with its line
_HINT = "see the comments in policies/base.yaml for the format"
_DUPLICATE_HINT = "write each key once"
_PURPOSE_HINT = "declare the purpose under purposes, or fix its name"
_CONSENT_HINT = (
    "give integrators' lookups consent: token and the catalog's consent_issuers (hpf consent keys prints an "
    "issuer's entry) and the facts a bank may receive; free-text consent references are for caseworkers at a "
    "counter"
)
_PACKAGED = ", ".join(PACKAGED_PREFIX + name for name in PACKAGED_POLICIES)


@dataclass
class _Entry:
    """One value of a policy document and where it was written (the line of its key, or of its list item)."""

    file: str
    line: int
    value: Any  # dict[Any, _Entry] | list[_Entry] | a scalar


@dataclass
class PolicyCheck:
    """A policy file read and checked: the policy (None if the format refuses it) and every problem found."""

    policy: Policy | None
    problems: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # one per kind of problem found, in the order found

    def add(self, problems: list[str], hint: str) -> None:
        self.problems += problems
        if problems and hint not in self.hints:
            self.hints.append(hint)

    @property
    def hint(self) -> str:
        return "; ".join(self.hints)

    def error(self) -> ConfigError:
        return ConfigError("\n".join(self.problems), code=INVALID, hint=self.hint or None)


def policy_path(name: Path | str) -> Path:
    """The file a policy name means: ``hpf:NAME`` a packaged policy, anything else a path.

    >>> policy_path("hpf:base").name, policy_path("hpf:default").name, policy_path("my-node.yaml").name
    ('base.yaml', 'default.yaml', 'my-node.yaml')
    """
    text = str(name)
    if not text.startswith(PACKAGED_PREFIX):
        return Path(name)
    packaged = PACKAGED_POLICIES.get(text[len(PACKAGED_PREFIX) :])
    if packaged is None:
        raise ConfigError(
            f"{text!r}: no packaged policy has that name; the packaged policies are {_PACKAGED}",
            code=INVALID,
            hint="hpf:base is the table-agnostic base for your own tables, hpf:default the demo federation's",
        )
    return packaged


def load_policy(path: Path | str) -> Policy:
    """Read, merge along ``extends`` and validate a policy file; raise a ConfigError naming every problem (file
    and line). ``path`` may name a packaged policy (``hpf:base``)."""
    checked = check_policy(path)
    if checked.problems or checked.policy is None:
        raise checked.error()
    return checked.policy


def check_policy(path: Path | str, catalog: Catalog | None = None) -> PolicyCheck:
    """Every problem of a policy file (and, given ``catalog``, every table and column it names that the catalog
    lacks), each ``FILE:LINE: path: problem``; raises ConfigError only for what leaves nothing to check (see the
    module)."""
    path = policy_path(path)
    checked = PolicyCheck(policy=None)
    duplicates: list[str] = []
    merged = _resolve(path, (path.resolve(),), duplicates)
    checked.add(duplicates, _DUPLICATE_HINT)
    index = _index(merged)
    plain = _plain(merged)
    try:
        policy = Policy.model_validate(plain, context={"defer_references": True})
    except ValidationError as err:
        checked.add([_describe(problem, index, str(path)) for problem in err.errors()], _HINT)
    else:
        policy.set_locations(str(path), index)
        checked.policy = policy
    where = _where(index, str(path))
    refs = [f"{where(loc)}: {field_path(loc)}: {msg}" for loc, msg in reference_problems(plain)]
    checked.add(refs, _PURPOSE_HINT)
    free_text = [f"{where(loc)}: {field_path(loc)}: {msg}" for loc, msg in consent_problems(plain)]
    checked.add(free_text, _CONSENT_HINT)
    if catalog is not None:
        checked.add(catalog_problems(plain, where, catalog), "compare the policy with the catalog")
    return checked


def check_against_catalog(policy: Policy, catalog: Catalog) -> list[str]:
    """Tables and columns the policy names that the catalog lacks, each as ``FILE:LINE: path: problem``."""
    return catalog_problems(policy.model_dump(), lambda loc: policy.where(*loc), catalog)


def _where(index: dict[Loc, tuple[str, int]], source: str) -> Callable[[Loc], str]:
    return lambda loc: written_at(index, loc) or source


# -- reading and merging -----------------------------------------------------------------------------


def _resolve(path: Path, chain: tuple[Path, ...], duplicates: list[str]) -> _Entry:
    """``path``'s document, merged over the base it extends (recursively); keys written twice are added to
    ``duplicates`` (YAML keeps the last), every other problem on the way is raised."""
    entry, twice = _compose(path)
    duplicates += twice
    if not isinstance(entry.value, dict) or "extends" not in entry.value:
        return entry
    values = dict(entry.value)
    ext = values.pop("extends")
    entry = _Entry(entry.file, entry.line, values)
    at = f"{ext.file}:{ext.line}: extends"
    if not isinstance(ext.value, str) or not ext.value.strip():
        raise ConfigError(
            f"{at}: give the base policy, a packaged one ({_PACKAGED}) or a file, e.g. extends: hpf:base",
            code=INVALID,
        )
    if ext.value.startswith(PACKAGED_PREFIX):
        try:
            base_path = policy_path(ext.value)
        except ConfigError as err:
            raise ConfigError(f"{at}: {err.message}", code=INVALID, hint=err.hint) from None
    else:
        base_path = path.parent / ext.value
    try:
        resolved = base_path.resolve()
        found = base_path.is_file()
    except (OSError, ValueError) as exc:  # a name with a NUL, or longer than a path may be
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a file name"
        raise ConfigError(
            f"{at}: {ext.value[:80]!r}: {reason}",
            code=INVALID,
            hint=f"extends is relative to this file, or a packaged policy: {_PACKAGED}",
        ) from None
    if resolved in chain:
        loop = " -> ".join(p.name for p in (*chain, resolved))
        raise ConfigError(
            f"{at}: {ext.value} leads back to a file already extended ({loop})",
            code=INVALID,
            hint="a policy may extend a base, never itself through a chain",
        )
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{at}: more than {MAX_EXTENDS_DEPTH} files deep", code=INVALID)
    if not found:
        what = "not a regular file" if os.path.lexists(base_path) else "file not found"
        raise ConfigError(
            f"{at}: {base_path}: {what}",
            code=INVALID,
            hint=f"extends is relative to this file, or a packaged policy: {_PACKAGED}",
        )
    return _merge(_resolve(base_path, (*chain, resolved), duplicates), entry)


def _merge(base: _Entry, over: _Entry) -> _Entry:
    """Mappings merge key by key (recursively); anything else in ``over`` replaces; a null removes."""
    if not (isinstance(base.value, dict) and isinstance(over.value, dict)):
        return over
    out = dict(base.value)
    for key, entry in over.value.items():
        if entry.value is None:
            out.pop(key, None)
        elif key in out:
            out[key] = _merge(out[key], entry)
        else:
            out[key] = entry
    return _Entry(over.file, over.line, out)


def _compose(path: Path) -> tuple[_Entry, list[str]]:
    """The document with every value's line, and the keys written twice in it."""
    data = read_bytes(path)  # never waits on a FIFO, never reads a device or more than a config file holds
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read (not UTF-8 text)", code="CONFIG_UNREADABLE") from None
    loader = BoundedLoader(text, max_values=MAX_POLICY_VALUES)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}:1: the file is empty", code=INVALID, hint=_HINT)
        duplicates = duplicate_keys(node, str(path))
        loader.construct_document(node)  # checks every value constructs, and flattens '<<' merge keys
        entry = _entry(loader, node, str(path), 1)
    except YamlTooComplex as exc:
        raise exc.error(path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        column = f" (column {mark.column + 1})" if mark is not None else ""
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            column += f", {context} begun on line {context_mark.line + 1}"
        raise ConfigError(f"{path}:{line}: YAML syntax: {problem}{column}", code="CONFIG_SYNTAX") from None
    finally:
        loader.dispose()
    return entry, duplicates


def _entry(loader: yaml.SafeLoader, node: yaml.Node, file: str, line: int) -> _Entry:
    if isinstance(node, yaml.MappingNode):
        values: dict[Any, _Entry] = {}
        for key_node, value_node in node.value:  # after construct_document: '<<' merged in, own keys last
            key = loader.construct_object(key_node, deep=True)
            values[key] = _entry(loader, value_node, file, key_node.start_mark.line + 1)
        return _Entry(file, line, values)
    if isinstance(node, yaml.SequenceNode):
        return _Entry(file, line, [_entry(loader, item, file, item.start_mark.line + 1) for item in node.value])
    return _Entry(file, line, loader.construct_object(node, deep=True))


def _plain(entry: _Entry) -> Any:
    if isinstance(entry.value, dict):
        return {k: _plain(v) for k, v in entry.value.items()}
    if isinstance(entry.value, list):
        return [_plain(v) for v in entry.value]
    return entry.value


def _index(entry: _Entry, loc: Loc = ()) -> dict[Loc, tuple[str, int]]:
    out: dict[Loc, tuple[str, int]] = {loc: (entry.file, entry.line)}
    if isinstance(entry.value, dict):
        for key, child in entry.value.items():
            out.update(_index(child, (*loc, key if isinstance(key, int) else str(key))))
    elif isinstance(entry.value, list):
        for i, child in enumerate(entry.value):
            out.update(_index(child, (*loc, i)))
    return out


# -- messages ------------------------------------------------------------------------------------------


def _describe(problem: Any, index: dict[Loc, tuple[str, int]], source: str) -> str:
    """``FILE:LINE: field.path: message`` for one pydantic error."""
    loc: Loc = tuple(
        x for x in problem["loc"] if not (isinstance(x, str) and (x == "[key]" or x.startswith("function-")))
    )
    where = written_at(index, loc) or f"{source}:1"
    kind, msg = problem["type"], problem["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key (check its spelling and where it sits)"
    elif kind == "missing":
        msg = "required, but missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{where}: {field_path(loc)}: {msg}"
