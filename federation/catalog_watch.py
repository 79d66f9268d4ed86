"""The catalog a running party serves on: re-read when its file changes, and taken only where that is safe.

A node and the coordinator read the catalog at start. While they run, each request first looks at the file's
stamp (one ``stat``, as for the revocation list: its inode, modification time and size, so a file replaced
whole is always seen) and, when it has changed, the file is read again. A running party takes, without a
restart:

- a node's public key published where the catalog had none (``audit_key``, ``agreement_key``): what an operator
  adds after the nodes' first start (``hpf node keys``, then ``hpf catalog keys``);
- a node's ``address`` (the coordinator dials the region there from its next question; a node uses no
  address) and its ``name``;
- a new text that declares the same catalog (comments, order, layout).

Anything else changes what the party checked or built at start, or what a published key vouches for, and waits
for a restart: the federation's name (which its CA names), ``he_format``, the node set or its order, any table,
column, type, domain, bound or contribution, and a published key changed or withdrawn (a key replaced without
a word would let whoever wrote the file pose as that region). The party logs ``CATALOG_CHANGE_NEEDS_RESTART``
naming what changed (never a key or a value) and keeps serving on the catalog in force; a file it cannot read
or parse is logged with its own code (``CONFIG_SYNTAX``, ``CONFIG_INVALID``, ``CONFIG_NOT_FOUND``...) and
changes nothing either: a path that is no longer a regular file (a FIFO, a directory) or a file larger than any
catalog (``CONFIG_TOO_LARGE``) is refused without waiting on it or reading it whole. Each change of the file is
logged once; one request reads it, and the requests that come meanwhile serve on the catalog in force.

A party adds its own check and takes what it derives from the catalog in one callback (:meth:`CatalogWatch.
on_change`): a node refuses a key published for itself that is not its own (``NODE_KEY_MISMATCH``, as at start)
and then takes its peers' agreement keys; the coordinator dials moved regions.

The catalog in force is one immutable :class:`~federation.catalog.CatalogFile`, replaced whole: a request reads
the catalog, the text and the digest of one and the same file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpf.federation.catalog import Catalog, CatalogFile, read_catalog_file
from hpf.federation.catalog_parties import KEY_FIELDS, NodeEntry, key_bytes
from hpf.federation.config_files import file_stamp
from hpf.federation.errors import ConfigError, FederationError

log = logging.getLogger("hpf.catalog")

# the fields of a node entry a running party may see change: its keys only from none to one (see the module)
_RUNNING_NODE_FIELDS = frozenset({"address", "name", *KEY_FIELDS})

OnChange = Callable[[CatalogFile, CatalogFile], None]


@dataclass(frozen=True)
class CatalogChanges:
    """What differs between two catalogs: what a running party may take, and what waits for a restart."""

    taken: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()


def _key_change(node: str, field: str, before: str | None, after: str | None) -> tuple[str, bool] | None:
    """How a node's published key changed, and whether a running party may take it (None: unchanged)."""
    if before is None and after is None:
        return None
    if before is None:
        return f"node {node}: {field} published", True
    if after is None:
        return f"node {node}: {field} withdrawn", False
    if key_bytes(before) == key_bytes(after):  # the same key, written alike or not
        return None
    return f"node {node}: {field} replaced by another key", False


def _node_changes(old: NodeEntry, new: NodeEntry) -> list[tuple[str, bool]]:
    found: list[tuple[str, bool]] = []
    others = sorted(
        f
        for f in type(old).model_fields
        if f not in _RUNNING_NODE_FIELDS and f != "id" and getattr(old, f) != getattr(new, f)
    )
    if others:
        found.append((f"node {old.id}: {', '.join(others)}", False))
    for field in KEY_FIELDS:
        change = _key_change(old.id, field, getattr(old, field), getattr(new, field))
        if change is not None:
            found.append(change)
    for field in ("address", "name"):
        if getattr(old, field) != getattr(new, field):
            found.append((f"node {old.id}: {field}", True))
    return found


def _table_changes(old: Catalog, new: Catalog) -> list[str]:
    found = [f"table {t} added" for t in new.tables if t not in old.tables]
    found += [f"table {t} removed" for t in old.tables if t not in new.tables]
    for name, before in old.tables.items():
        after = new.tables.get(name)
        if after is None or after == before:
            continue
        columns = sorted(c for c in {*before.columns, *after.columns} if before.columns.get(c) != after.columns.get(c))
        fields = type(before).model_fields
        rest = sorted(f for f in fields if f != "columns" and getattr(before, f) != getattr(after, f))
        parts = ([f"column(s) {', '.join(columns)}"] if columns else []) + rest
        found.append(f"table {name}: {', '.join(parts)}")
    return found


def catalog_changes(old: Catalog, new: Catalog) -> CatalogChanges:
    """What changed from ``old`` to ``new``, sorted into what a running party may take and what needs a restart
    (see the module). Names fields, nodes, tables and columns, never a key or a value."""
    taken: list[str] = []
    restart = [f for f in type(old).model_fields if f not in ("nodes", "tables") and getattr(old, f) != getattr(new, f)]
    if old.node_ids != new.node_ids:
        restart.append(f"the nodes ({', '.join(old.node_ids)} -> {', '.join(new.node_ids)})")
    else:
        for before, after in zip(old.nodes, new.nodes, strict=True):
            for what, safe in _node_changes(before, after):
                (taken if safe else restart).append(what)
    restart += _table_changes(old, new)
    return CatalogChanges(taken=tuple(taken), needs_restart=tuple(restart))


class CatalogWatch:
    """The catalog ``party`` (e.g. ``"node north"``) serves on, read from ``path`` at start (a bad file stops the
    party there) and re-read when the file changes (see the module)."""

    def __init__(self, path: Path, party: str) -> None:
        self._path = path
        self._party = party
        self._lock = threading.Lock()
        self._stamp = file_stamp(path)  # before the read: a file replaced meanwhile is read again
        self._in_force = read_catalog_file(path)
        self._on_change: OnChange | None = None

    @property
    def in_force(self) -> CatalogFile:
        """The catalog in force, as it is (without looking at the file)."""
        return self._in_force

    def on_change(self, take: OnChange) -> None:
        """``take(in_force, new)`` is called, under the watch's lock, before a change a running party may take is
        put in force: it raises a FederationError to refuse it (the catalog in force stays), or takes what the
        party derives from the new catalog."""
        self._on_change = take

    def current(self) -> CatalogFile:
        """The catalog in force, after taking the file's change if it has changed and the change is safe. One
        request reads the changed file; one that comes meanwhile does not wait for it, and serves on the catalog
        in force."""
        stamp = file_stamp(self._path)
        if stamp != self._stamp and self._lock.acquire(blocking=False):
            try:
                if stamp != self._stamp:
                    self._reload()
                    self._stamp = stamp
            finally:
                self._lock.release()
        return self._in_force

    def _reload(self) -> None:
        """Read the changed file and put it in force if a running party may; log what happened, once."""
        old = self._in_force
        try:
            new = read_catalog_file(self._path)
            if new.digest == old.digest:
                log.info("%s: %s holds the catalog in force", self._party, self._path)
                return
            changes = catalog_changes(old.catalog, new.catalog)
            if changes.needs_restart:
                what = "; ".join(changes.needs_restart)
                raise ConfigError(
                    f"{self._path} changed what a running {self._party} cannot take: {what}",
                    code="CATALOG_CHANGE_NEEDS_RESTART",
                    hint=f"restart the {self._party.split()[0]} to serve on the new catalog, or put the catalog in "
                    "force back; only nodes' keys published where there were none, addresses and names are taken "
                    "while running",
                )
            if self._on_change is not None:
                self._on_change(old, new)
            self._in_force = new
            log.info(
                "%s: catalog %s taken (sha256 %s): %s",
                self._party,
                self._path,
                new.digest[:16],
                "; ".join(changes.taken) or "the same catalog in another text",
            )
        except FederationError as err:
            log.error(
                "%s: catalog change not taken: %s; serving on the catalog in force (sha256 %s)",
                self._party,
                err,
                old.digest[:16],
            )
        except Exception:  # a fault here must not stop the party serving on the catalog in force
            log.exception("%s: catalog change not taken; serving on the catalog in force", self._party)
