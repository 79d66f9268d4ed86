"""What a running party may take from a changed catalog, and what waits for a restart (federation.catalog_watch)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpf.federation.catalog import Catalog, CatalogFile
from hpf.federation.catalog_watch import CatalogChanges, CatalogWatch, catalog_changes
from hpf.federation.config_files import MAX_CONFIG_BYTES
from hpf.federation.errors import ConfigError

KEY_A = "A" * 43 + "="
KEY_B = "B" * 43 + "="
BASE: dict[str, Any] = {
    "federation": "f",
    "nodes": [{"id": "north", "address": "10.0.0.1:50051"}, {"id": "south", "address": "10.0.0.2:50051"}],
    "tables": {
        "t": {"columns": {"g": {"type": "VARCHAR", "domain": {"values": ["a", "b"]}}, "v": {"type": "BIGINT"}}},
    },
}


def _changes(edit: Callable[[dict[str, Any]], object], before: dict[str, Any] | None = None) -> CatalogChanges:
    old = copy.deepcopy(before or BASE)
    new = copy.deepcopy(old)
    edit(new)
    return catalog_changes(Catalog.model_validate(old), Catalog.model_validate(new))


def _with_keys(**keys: str) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["nodes"][0].update(keys)
    return doc


def test_the_same_catalog_changes_nothing() -> None:
    assert _changes(lambda d: None) == CatalogChanges()


@pytest.mark.parametrize("field", ["audit_key", "agreement_key"])
def test_a_key_published_where_there_was_none_is_taken(field: str) -> None:
    changes = _changes(lambda d: d["nodes"][1].update({field: KEY_A}))
    assert changes == CatalogChanges(taken=(f"node south: {field} published",))


def test_addresses_and_names_are_taken() -> None:
    changes = _changes(lambda d: d["nodes"][0].update({"address": "10.0.0.9:50051", "name": "North"}))
    assert changes == CatalogChanges(taken=("node north: address", "node north: name"))


@pytest.mark.parametrize(
    ("new", "what"),
    [({"agreement_key": KEY_B}, "replaced by another key"), ({"agreement_key": None}, "withdrawn")],
)
def test_a_published_key_replaced_or_withdrawn_needs_a_restart(new: dict[str, Any], what: str) -> None:
    changes = _changes(lambda d: d["nodes"][0].update(new), before=_with_keys(agreement_key=KEY_A))
    assert changes == CatalogChanges(needs_restart=(f"node north: agreement_key {what}",))
    # a key can pass for a region only once the region's operator has published it; replacing one is a restart


def test_the_same_key_written_otherwise_is_no_change() -> None:
    other_spelling = "A" * 42 + "B="  # the bits past the 32 bytes differ; the key does not
    changes = _changes(lambda d: d["nodes"][0].update({"audit_key": other_spelling}), _with_keys(audit_key=KEY_A))
    assert changes == CatalogChanges()


@pytest.mark.parametrize(
    ("edit", "what"),
    [
        (lambda d: d["tables"]["t"]["columns"]["v"].update({"type": "INTEGER"}), "table t: column(s) v"),
        (lambda d: d["tables"]["t"]["columns"]["g"]["domain"]["values"].append("c"), "table t: column(s) g"),
        (lambda d: d["tables"]["t"]["columns"].update({"w": {"type": "DATE"}}), "table t: column(s) w"),
        (lambda d: d["tables"]["t"].update({"description": "x"}), "table t: description"),
        (lambda d: d["tables"].update({"u": {"columns": {"x": {"type": "BIGINT"}}}}), "table u added"),
        (lambda d: d.update({"federation": "g"}), "federation"),
        (lambda d: d.update({"he_format": "tenseal-0.3.18/seal-4.3/bfv-4096"}), "he_format"),
        (
            lambda d: d["nodes"].append({"id": "west", "address": "h:1"}),
            "the nodes (north, south -> north, south, west)",
        ),
        (lambda d: d["nodes"].reverse(), "the nodes (north, south -> south, north)"),
    ],
)
def test_anything_else_needs_a_restart(edit: Callable[[dict[str, Any]], object], what: str) -> None:
    changes = _changes(edit)
    assert changes.needs_restart == (what,) and changes.taken == ()


def test_a_safe_change_beside_an_unsafe_one_is_listed_and_still_needs_a_restart() -> None:
    def edit(d: dict[str, Any]) -> None:
        d["nodes"][0]["agreement_key"] = KEY_A
        d["tables"]["t"]["columns"]["v"]["type"] = "INTEGER"

    changes = _changes(edit)
    assert changes.taken == ("node north: agreement_key published",)
    assert changes.needs_restart == ("table t: column(s) v",)


def _write(path: Path, doc: object) -> None:
    """Replace ``path`` whole, as an editor or `hpf catalog keys` does: a new file, so a new stamp."""
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def test_a_watch_takes_a_safe_change_once_and_keeps_the_catalog_in_force_otherwise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "federation.yaml"
    _write(path, BASE)
    watch = CatalogWatch(path, "node north")
    first = watch.current()
    seen: list[tuple[CatalogFile, CatalogFile]] = []
    watch.on_change(lambda old, new: seen.append((old, new)))
    caplog.set_level(logging.INFO, logger="hpf.catalog")

    _write(path, _with_keys(agreement_key=KEY_A))
    taken = watch.current()
    assert taken.catalog.nodes[0].agreement_key == KEY_A and taken.digest != first.digest
    assert taken.text == path.read_text() and seen == [(first, taken)]
    assert "node north: catalog" in caplog.text and "agreement_key published" in caplog.text

    caplog.clear()
    unsafe = _with_keys(agreement_key=KEY_A)
    unsafe["tables"]["t"]["columns"]["v"]["type"] = "INTEGER"
    _write(path, unsafe)
    assert watch.current() is taken and watch.current() is taken  # refused, and logged once
    refusals = [r for r in caplog.records if "CATALOG_CHANGE_NEEDS_RESTART" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "table t: column(s) v" in refusals[0].getMessage() and "serving on the catalog in force" in caplog.text

    caplog.clear()
    _write(path, "federation: [\n")
    assert watch.current() is taken
    assert "[CONFIG_SYNTAX]" in caplog.text

    caplog.clear()
    path.unlink()
    assert watch.current() is taken
    assert "[CONFIG_NOT_FOUND]" in caplog.text
    assert len(seen) == 1


def test_a_party_may_refuse_a_change_and_a_fault_in_it_keeps_the_catalog_in_force(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "federation.yaml"
    _write(path, BASE)
    watch = CatalogWatch(path, "node north")
    first = watch.current()

    def refuse(old: CatalogFile, new: CatalogFile) -> None:
        raise ConfigError("not this node's key", code="NODE_KEY_MISMATCH")

    watch.on_change(refuse)
    _write(path, _with_keys(audit_key=KEY_A))
    assert watch.current() is first
    assert "[NODE_KEY_MISMATCH] not this node's key" in caplog.text

    def fault(old: CatalogFile, new: CatalogFile) -> None:
        raise RuntimeError("a bug")

    watch.on_change(fault)
    _write(path, _with_keys(audit_key=KEY_B))
    assert watch.current() is first
    assert "catalog change not taken" in caplog.text


def _current_within(watch: CatalogWatch, seconds: float = 10.0) -> CatalogFile | None:
    """``watch.current()`` as a request would call it, or None when it is still blocked after ``seconds`` (a
    party stuck there serves nothing: every request starts with it)."""
    got: list[CatalogFile] = []
    thread = threading.Thread(target=lambda: got.append(watch.current()), daemon=True)
    thread.start()
    thread.join(seconds)
    return got[0] if got else None


def _unblock(fifo: Path) -> None:
    """Let a reader blocked opening ``fifo`` go (a writer opens it, then closes it: the reader reads the end)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_a_catalog_replaced_by_a_fifo_a_directory_or_an_oversized_file_is_refused_and_the_party_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "federation.yaml"
    _write(path, BASE)
    watch = CatalogWatch(path, "node north")
    first = watch.current()

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.replace(fifo, path)  # nobody ever writes to it: a read that opens it waits for a writer forever
    try:
        assert _current_within(watch) is first, "a request hangs on a catalog that is a FIFO"
        assert _current_within(watch) is first  # and the next one too
    finally:
        _unblock(path)
    assert "[CONFIG_UNREADABLE]" in caplog.text and "not a regular file" in caplog.text

    caplog.clear()
    path.unlink()
    path.mkdir()
    assert watch.current() is first
    assert "[CONFIG_UNREADABLE]" in caplog.text
    path.rmdir()

    caplog.clear()
    with open(path, "wb") as fh:  # sparse: no disk used, and nothing but a bound should stop it being read whole
        fh.truncate(MAX_CONFIG_BYTES + 1)
    assert watch.current() is first
    assert "[CONFIG_TOO_LARGE]" in caplog.text
    assert "serving on the catalog in force" in caplog.text


def test_a_request_while_the_catalog_is_being_taken_serves_on_the_catalog_in_force(tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    _write(path, BASE)
    watch = CatalogWatch(path, "node north")
    first = watch.current()
    taking, release = threading.Event(), threading.Event()

    def slow(old: CatalogFile, new: CatalogFile) -> None:  # a large file, a slow disk: the reload takes a while
        taking.set()
        release.wait(60)

    watch.on_change(slow)
    _write(path, _with_keys(agreement_key=KEY_A))
    reloading = threading.Thread(target=watch.current, daemon=True)
    reloading.start()
    try:
        assert taking.wait(30)
        assert _current_within(watch) is first, "a request waits for another request's reload"
    finally:
        release.set()
        reloading.join(30)
    assert watch.current().catalog.nodes[0].agreement_key == KEY_A


def test_a_catalog_that_gives_a_key_twice_is_not_taken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """YAML keeps the last of two values: a file whose first `audit_key` is one key and whose last is another
    reads one way to its reviewer and another to the party (and to a stricter parser, not at all)."""
    path = tmp_path / "federation.yaml"
    _write(path, BASE)
    watch = CatalogWatch(path, "node north")
    first = watch.current()
    line = next(x for x in yaml.safe_dump(_with_keys(audit_key=KEY_A), sort_keys=False).splitlines() if KEY_A in x)
    twice = yaml.safe_dump(_with_keys(audit_key=KEY_A), sort_keys=False).replace(line, f"{line}\n{line[:-44]}{KEY_B}")
    _write(path, twice)
    assert yaml.safe_load(path.read_text())["nodes"][0]["audit_key"] == KEY_B
    assert watch.current() is first
    assert "nodes[0].audit_key: written twice" in caplog.text and "[CONFIG_INVALID]" in caplog.text
