"""Plans a client derived before, kept on disk so that a question asked again is not planned again.

A plan is a pure function of the SQL text, the catalog and the code that plans: :mod:`hpf.federation.planner` and the
modules it uses, run on sqlglot and DuckDB. Deriving one costs a short `hpf query` process more than a third of
its time, most of it importing sqlglot and the planner and starting the DuckDB that binds. An entry is filed under
a digest of all of it (:func:`entry_key`): the SQL, a digest of the catalog's every field, a digest of the source
of the whole ``federation`` package, the versions of sqlglot, DuckDB and Python, and this file's format. A
catalog, code or library that changed finds no entry, and the question is planned afresh.

An entry damaged, copied or edited is never used:

- it is read only if its HMAC, under a key kept in the cache folder, checks out, and it names the digest it is
  filed under: an entry edited, cut short, copied from another profile's folder or filed under another name is
  ignored, the question planned again and the entry written anew;
- its fields are read back strictly (each of the type the plan has, each group key value tagged with its type)
  and written out again to the very same record, or it is ignored;
- its fingerprint is worked out again from those fields (:func:`hpf.federation.plan.plan_fingerprint`) and must be
  the one it holds; and the client checks a plan from here as it checks one it derived: the coordinator's
  fingerprint must equal it. So what the coordinator and every region derive binds the table, filter, group
  keys and their values, components, aggregates and finishing SQL the client decodes and finishes with.

The HMAC key is in the folder it guards, so it tells damage and copies, not a writer: whoever can write the
folder can read the key and sign an entry. What such an entry can still change is only what binding derives and
no fingerprint covers (the key and result types a finished answer is cast to), and such a writer sits beside the
client's secret keys already: the folder is as private as they are.

Only plans are kept: a question the planner refuses is refused afresh every time. The folder is made mode 0700,
and the key and every entry mode 0600 (:func:`hpf.federation.private_files.write_file`); a folder found writable by
others is narrowed to its owner and its key made anew (an entry someone else could have signed is never read), and
another user's folder is not used. An entry, or the key, that is no regular file (a FIFO, a device) or is past
16 MiB is passed over unread. At most ``MAX_ENTRIES``
are kept; the oldest go first. Any entry, or the whole folder, can be deleted at any time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import hpf.federation
from hpf.federation.plan import Aggregate, Component, GroupKey, Plan, plan_fingerprint
from hpf.federation.private_files import PRIVATE, read_regular, write_file

if TYPE_CHECKING:
    from hpf.federation.catalog import Catalog

log = logging.getLogger(__name__)
_T = TypeVar("_T")

FORMAT = "hpf-plan-cache/1"
MAX_ENTRIES = 1000
KEY_FILE = "key"
KEY_BYTES = 32
MAX_ENTRY_BYTES = 16 * 1024 * 1024  # far above any plan's record; a file past it is no entry, and is not read
LIBRARIES = ("sqlglot", "duckdb")  # what the planner runs on: parsing, SQL text, binding and result types


class Uncacheable(ValueError):
    """A plan holds a value this format does not write (then it is derived every time)."""


class PlanCache:
    """Plans kept in ``directory`` (see the module)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def plan(self, sql: str, catalog: Catalog) -> Plan:
        """The plan of ``sql`` over ``catalog``: a sound entry's, else derived by the planner and kept."""
        try:
            key = entry_key(sql, catalog)
        except (OSError, metadata.PackageNotFoundError):  # nothing to file it under: planned every time
            return derive(sql, catalog)
        kept = self._read(key, catalog)
        if kept is not None:
            return kept
        plan = derive(sql, catalog)
        try:
            self._write(key, plan)
        except Uncacheable:
            pass
        except OSError as err:  # a cache: a folder that cannot be written costs time, never the answer
            log.debug("plan cache %s not written: %s", self.directory, err.strerror)
        return plan

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.plan"

    def _own_folder(self) -> bool:
        """Whether the folder is this user's alone, so that no one else can have put its key or an entry there.
        A folder of this user's that others may write is narrowed to its owner and its key removed (every entry signed
        under it, or under a key someone else put there, then checks out no more); one of another user's is not
        used at all."""
        try:
            st = os.stat(self.directory)
        except OSError:
            return False
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            return False
        if stat.S_IMODE(st.st_mode) & 0o022:  # others may add, replace or remove files in it
            os.chmod(self.directory, stat.S_IMODE(st.st_mode) & 0o700)
            (self.directory / KEY_FILE).unlink(missing_ok=True)
        return True

    def _mac_key(self, *, create: bool) -> bytes | None:
        """This folder's HMAC key (made with ``create`` when it is missing or not one); None, and nothing made,
        in a folder that is not this user's alone (:meth:`_own_folder`)."""
        path = self.directory / KEY_FILE
        if create:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            if not self._own_folder():
                return None
        except OSError:
            return None
        try:
            key = read_regular(path, KEY_BYTES)
        except OSError:
            key = b""
        if len(key) == KEY_BYTES:
            return key
        if not create:
            return None
        key = secrets.token_bytes(KEY_BYTES)
        write_file(path, key, PRIVATE)
        return key

    def _read(self, key: str, catalog: Catalog) -> Plan | None:
        mac_key = self._mac_key(create=False)
        try:  # a FIFO, a device or a huge file in its place is passed over, never waited on or read whole
            data = read_regular(self._path(key), MAX_ENTRY_BYTES)
        except OSError:
            return None
        if mac_key is None:
            return None
        mac, _, payload = data.partition(b"\n")
        if not hmac.compare_digest(mac, _mac(mac_key, payload).encode()):
            return None
        try:
            record = json.loads(payload)
            if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != key:
                return None
            plan = plan_from_record(record["plan"])
            if plan_record(plan) != record["plan"]:  # read back as written, or not at all
                return None
            types = {name: column.type for name, column in catalog.tables[plan.table].columns.items()}
            if plan_fingerprint(plan, types) != plan.fingerprint:  # the fingerprint the coordinator checks is its own
                return None
        except (ValueError, KeyError, TypeError, IndexError, RecursionError):
            return None
        return plan

    def _write(self, key: str, plan: Plan) -> None:
        payload = json.dumps(
            {"format": FORMAT, "key": key, "plan": plan_record(plan)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        mac_key = self._mac_key(create=True)
        if mac_key is None:  # another user's folder: nothing kept there
            return
        write_file(self._path(key), _mac(mac_key, payload).encode() + b"\n" + payload, PRIVATE)
        self._prune()

    def _prune(self) -> None:
        """Remove the oldest entries past MAX_ENTRIES."""
        entries = [e for e in os.scandir(self.directory) if e.name.endswith(".plan") and e.is_file()]
        if len(entries) <= MAX_ENTRIES:
            return
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) - MAX_ENTRIES]:
            Path(entry.path).unlink(missing_ok=True)


def derive(sql: str, catalog: Catalog) -> Plan:
    """The planner's plan of ``sql`` over ``catalog`` (the planner is imported only now: it imports sqlglot and
    starts the DuckDB that binds)."""
    from hpf.federation.planner import plan_query

    return plan_query(sql, catalog)


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def entry_key(sql: str, catalog: Catalog) -> str:
    """The digest an entry is filed under: everything the plan of ``sql`` over ``catalog`` depends on."""
    parts = [FORMAT, sql, catalog_digest(catalog), code_digest(), *library_versions()]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def catalog_digest(catalog: Catalog) -> str:
    """A digest of every field of the catalog as validated (the column types fix what each domain value is)."""
    return hashlib.sha256(catalog.model_dump_json().encode()).hexdigest()


@cache
def code_digest() -> str:
    """A digest of the source of every module of the ``federation`` package, the planner's and all it uses."""
    root = Path(hpf.federation.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        data = path.read_bytes()
        name = path.relative_to(root).as_posix().encode()
        digest.update(len(name).to_bytes(4, "big") + name + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


@cache
def library_versions() -> tuple[str, ...]:
    """The versions of the libraries the planner runs on, and of Python, read without importing them."""
    return (*(f"{name}=={metadata.version(name)}" for name in LIBRARIES), f"python {sys.version}")


# -- a plan as a JSON record and back ----------------------------------------------------------------------------


def _value_record(value: object) -> list[Any]:
    """A group key's domain value with its type: ``[type, value]`` (a bool is no int here, a date no string)."""
    if type(value) is bool:
        return ["bool", value]
    if type(value) is int:
        return ["int", value]
    if type(value) is str:
        return ["str", value]
    if type(value) is dt.date:
        return ["date", value.isoformat()]
    raise Uncacheable(f"a group key value of type {type(value).__name__}")


def _value(record: object) -> object:
    tag, value = _list(record)
    if (tag == "bool" and type(value) is bool) or (tag == "int" and type(value) is int):
        return value
    if tag == "str":
        return _str(value)
    if tag == "date":
        return dt.date.fromisoformat(_str(value))
    raise ValueError("not a group key value")


def plan_record(plan: Plan) -> dict[str, Any]:
    """Every field of ``plan`` as plain JSON values (:func:`plan_from_record` reads it back)."""
    return {
        "table": plan.table,
        "where": plan.where,
        "keys": [{"expr": k.expr, "type": k.type, "values": [_value_record(v) for v in k.values]} for k in plan.keys],
        "components": [[c.kind, c.arg, c.scale, c.bits] for c in plan.components],
        "aggregates": [[a.func, a.count, a.sum, a.sumsq, a.scale, a.result_type] for a in plan.aggregates],
        "finish_sql": plan.finish_sql,
        "output_names": list(plan.output_names),
        "bare_key_outputs": list(plan.bare_key_outputs),
        "fingerprint": plan.fingerprint,
    }


def plan_from_record(record: object) -> Plan:
    """The plan :func:`plan_record` wrote; ValueError (or TypeError, KeyError) for anything else."""
    if not isinstance(record, dict):
        raise ValueError("not a plan")
    keys = tuple(
        GroupKey(expr=_str(k["expr"]), values=tuple(_value(v) for v in _list(k["values"])), type=_str(k["type"]))
        for k in map(_dict, _list(record["keys"]))
    )
    components = tuple(
        Component(kind=_str(kind), arg=_str_or_none(arg), scale=_int(scale), bits=_int(bits))
        for kind, arg, scale, bits in map(_list, _list(record["components"]))
    )
    aggregates = tuple(
        Aggregate(
            func=_str(func),
            count=_int(count),
            sum=_int_or_none(total),
            sumsq=_int_or_none(squares),
            scale=_int(scale),
            result_type=_str(result_type),
        )
        for func, count, total, squares, scale, result_type in map(_list, _list(record["aggregates"]))
    )
    plan = Plan(
        table=_str(record["table"]),
        where=_str_or_none(record["where"]),
        keys=keys,
        components=components,
        aggregates=aggregates,
        finish_sql=_str(record["finish_sql"]),
        output_names=tuple(_str(n) for n in _list(record["output_names"])),
        bare_key_outputs=tuple(_int_or_none(i) for i in _list(record["bare_key_outputs"])),
    )
    object.__setattr__(plan, "fingerprint", _str(record["fingerprint"]))
    return plan


def _exactly(kind: type[_T], value: object, what: str) -> _T:
    """``value`` if its type is ``kind`` itself (so no bool passes for an int), else ValueError naming ``what``."""
    if type(value) is not kind:
        raise ValueError(f"not {what}")
    return cast(_T, value)


def _str(value: object) -> str:
    return _exactly(str, value, "a string")


def _str_or_none(value: object) -> str | None:
    return None if value is None else _str(value)


def _int(value: object) -> int:
    return _exactly(int, value, "an integer")


def _int_or_none(value: object) -> int | None:
    return None if value is None else _int(value)


def _list(value: object) -> list[Any]:
    return _exactly(list, value, "a list")


def _dict(value: object) -> dict[str, Any]:
    return _exactly(dict, value, "a mapping")
