"""Publishing nodes' public keys in the catalog file, leaving the rest of the file as the operator wrote it.

On each node's host, ``hpf node keys`` prints the node's public keys as a small document (:func:`keys_document`);
``hpf catalog keys`` writes such documents into the catalog's node entries (:func:`publish_keys`).

The catalog is edited in its text, not loaded and dumped again, so its comments, order, quoting and flow or
block style stay. PyYAML (already a dependency; a round-trip YAML library would be a new one for this one edit)
composes the text into nodes that know their place in it: a key already there has its value replaced where it
stands; a missing key is added after the entry's last field, in the entry's style (``, agreement_key: ...``
inside ``{...}``, or a line of its own at the entry's indentation). The edited text is then parsed again and
must be exactly the catalog with those keys set, and a valid catalog, or nothing is written
(``CATALOG_EDIT_FAILED``, with the lines to add by hand). The file is replaced atomically, with its mode.

A key the catalog already publishes for a node is replaced only when asked (``replace``): a key replaced
without a word would let whoever wrote the key file pose as that region (``CATALOG_KEY_CONFLICT``).
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpf.federation.catalog import Catalog
from hpf.federation.catalog_parties import KEY_FIELDS, NodeKeys, key_bytes
from hpf.federation.config_files import decode_text, load_model, parse_model, parse_yaml, read_bytes
from hpf.federation.errors import ConfigError
from hpf.federation.private_files import write_file


@dataclass(frozen=True)
class KeyChange:
    """What publishing one node's key does to the catalog: ``published`` (there was none), ``replaced`` or
    ``unchanged``."""

    node: str
    field: str
    action: str


def keys_document(keys: NodeKeys) -> str:
    """The document ``hpf node keys`` prints: the node's id and public keys, nothing secret.

    >>> print(keys_document(NodeKeys(node="north", audit_key="A" * 43 + "=", agreement_key="B" * 43 + "=")), end="")
    # node north's public keys: publish them with `hpf catalog keys CATALOG FILE`
    node: north
    audit_key: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
    agreement_key: BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=
    """
    body = yaml.safe_dump(keys.model_dump(), sort_keys=False)
    return f"# node {keys.node}'s public keys: publish them with `hpf catalog keys CATALOG FILE`\n{body}"


def load_node_keys(path: Path | str) -> NodeKeys:
    """A key file as ``hpf node keys`` writes it; one that is not (a missing field, an unknown one, a malformed
    key or node id) is refused with ``NODE_KEYS_INVALID``, naming the field."""
    try:
        return load_model(path, NodeKeys)
    except ConfigError as err:
        if err.code != "CONFIG_INVALID":
            raise
        raise ConfigError(
            err.message,
            code="NODE_KEYS_INVALID",
            hint="give the file `hpf node keys --config node.yaml --output FILE` wrote on the node's host",
        ) from None


def key_changes(catalog: Catalog, key_sets: Sequence[NodeKeys], replace: bool = False) -> list[KeyChange]:
    """What publishing ``key_sets`` in ``catalog`` changes, node by node in the order given.

    Refuses a node the catalog does not list (``CATALOG_NODE_UNKNOWN``), two different key sets for one node
    (``NODE_KEYS_TWICE``), and, unless ``replace``, a key other than the one the catalog publishes
    (``CATALOG_KEY_CONFLICT``, naming every one)."""
    entries = {n.id: n for n in catalog.nodes}
    unknown = sorted({k.node for k in key_sets if k.node not in entries})
    if unknown:
        raise ConfigError(
            f"the catalog lists no node {', '.join(unknown)}",
            code="CATALOG_NODE_UNKNOWN",
            hint=f"catalog nodes: {', '.join(entries)}; add the node's entry (id, address) first, or check the "
            "key file is this federation's",
        )
    given: dict[str, NodeKeys] = {}
    for keys in key_sets:
        if keys.node in given and given[keys.node] != keys:
            raise ConfigError(
                f"two key files for node {keys.node} give different keys",
                code="NODE_KEYS_TWICE",
                hint="give the one the node's host printed last",
            )
        given[keys.node] = keys
    changes: list[KeyChange] = []
    conflicts: list[str] = []
    for node, keys in given.items():
        for field in KEY_FIELDS:
            published, new = getattr(entries[node], field), getattr(keys, field)
            if published is None:
                changes.append(KeyChange(node, field, "published"))
            elif key_bytes(published) == key_bytes(new):
                changes.append(KeyChange(node, field, "unchanged"))
            else:
                changes.append(KeyChange(node, field, "replaced"))
                conflicts.append(f"{node} {field}")
    if conflicts and not replace:
        raise ConfigError(
            f"the catalog already publishes another key for {', '.join(conflicts)}",
            code="CATALOG_KEY_CONFLICT",
            hint="replace a key only when the node's key was lost or is changed on purpose: check the key file "
            "came from that node's host, then give --replace (what the old key signed no longer verifies against "
            "the catalog, and running parties take a replaced key only when restarted)",
        )
    return changes


def publish_keys(path: Path, key_sets: Sequence[NodeKeys], replace: bool = False) -> list[KeyChange]:
    """Write ``key_sets`` into the catalog at ``path`` (see the module); what changed, node by node. Nothing is
    written when nothing changes, nor when anything is refused."""
    data = read_bytes(path)
    text = decode_text(path, data)
    doc = parse_yaml(path, text)
    catalog = parse_model(path, doc, Catalog)  # a catalog that is not valid is refused before any edit
    changes = key_changes(catalog, key_sets, replace)
    updates: dict[str, dict[str, str]] = {}
    for c in changes:
        if c.action != "unchanged":
            updates.setdefault(c.node, {})[c.field] = getattr(next(k for k in key_sets if k.node == c.node), c.field)
    if not updates:
        return changes
    edited = _edited(text, updates)
    expected = copy.deepcopy(doc)
    assert isinstance(expected, dict)
    for entry in expected["nodes"]:
        entry.update(updates.get(entry["id"], {}))
    try:  # read back as every party reads a catalog
        parsed = parse_yaml(path, edited) if edited is not None else None
        ok = parsed == expected and parse_model(path, parsed, Catalog) is not None
    except ConfigError:
        ok = False
    if edited is None or not ok:
        lines = "; ".join(f"node {n}: {f}: {k}" for n, fields in updates.items() for f, k in fields.items())
        raise ConfigError(
            f"{path}: the keys cannot be added without rewriting the file's layout; nothing was written",
            code="CATALOG_EDIT_FAILED",
            hint=f"add them to the node entries by hand ({lines}), then check with `hpf catalog check`",
        )
    target = Path(os.path.realpath(path))  # a catalog linked to from elsewhere stays linked
    write_file(target, edited.encode("utf-8"), stat.S_IMODE(os.stat(target).st_mode))
    return changes


def _edited(text: str, updates: dict[str, dict[str, str]]) -> str | None:
    """``text`` with ``updates`` (node id -> field -> key) written into its node entries, or None when the
    entries are not where a plain catalog has them."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return None
    nodes = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "nodes"), None)
    if not isinstance(nodes, yaml.SequenceNode):
        return None
    newline = "\r\n" if "\r\n" in text else "\n"
    pending = {node: dict(fields) for node, fields in updates.items()}
    edits: list[tuple[int, int, str]] = []  # (start, end, new text), applied from the end
    for entry in nodes.value:
        if not isinstance(entry, yaml.MappingNode) or not entry.value:
            return None
        fields = {k.value: v for k, v in entry.value if isinstance(k, yaml.ScalarNode)}
        node_id = fields.get("id")
        if not isinstance(node_id, yaml.ScalarNode) or node_id.value not in pending:
            continue
        added: list[tuple[str, str]] = []
        for field, key in pending.pop(node_id.value).items():
            value = fields.get(field)
            if value is None:
                added.append((field, key))
            elif value.start_mark.index == value.end_mark.index:  # `field:` with no value: right after the colon
                edits.append((value.start_mark.index, value.end_mark.index, f" {key}"))
            else:  # the value replaced where it stands (a scalar: the catalog was checked)
                edits.append((value.start_mark.index, value.end_mark.index, key))
        if added:
            edits.append(_insertion(text, entry, added, newline))
    if pending:  # a node named twice, or not found where expected
        return None
    # from the end; of two edits at one place (a field with no value, last in its entry, and the fields added
    # after it) the later one first, so the text reads in the order the edits were made
    for _, (start, end, new) in sorted(enumerate(edits), key=lambda e: (e[1][0], e[0]), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _insertion(text: str, entry: yaml.MappingNode, added: list[tuple[str, str]], newline: str) -> tuple[int, int, str]:
    """Where and what to insert to add the ``added`` fields after the last field of ``entry``, in its style."""
    end = entry.value[-1][1].end_mark.index
    if entry.flow_style:  # {id: north, address: ...}: after the last value, inside the braces
        return (end, end, "".join(f", {field}: {key}" for field, key in added))
    # a line each at the entry's indentation, after the line its last value ends on
    indent = " " * entry.value[0][0].start_mark.column
    lines = [f"{indent}{field}: {key}" for field, key in added]
    if end > 0 and text[end - 1] == "\n":  # the value ends with its line (a block scalar)
        return (end, end, "".join(line + newline for line in lines))
    at = _line_end(text, end)
    return (at, at, "".join(newline + line for line in lines))


def _line_end(text: str, index: int) -> int:
    """The index of the line break ending the line ``index`` is on (the text's end if it has none)."""
    ends = [i for i in (text.find("\r", index), text.find("\n", index)) if i >= 0]
    return min(ends) if ends else len(text)
