"""The client's plan cache: a kept plan is the planner's own, and an entry that is not sound is never used."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import hpf.federation
from hpf.client import plan_cache
from hpf.client.plan_cache import PlanCache, entry_key, plan_from_record, plan_record
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import PlanError
from hpf.federation.plan import Plan
from hpf.federation.planner import plan_query

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COUNT = "SELECT COUNT(*) FROM deposits"
GROUPED = "SELECT city_code, SUM(amount_fen) AS total FROM deposits GROUP BY city_code ORDER BY total DESC"


def golden_sql() -> list[str]:
    """The input SQL of every planner golden case (tests/fixtures/plans): every kind of plan the planner makes."""
    out = []
    for path in sorted((FIXTURES / "plans").glob("*.sql")):
        for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            body = [ln for ln in block.strip().splitlines() if ln.strip() and not ln.startswith("--")]
            if body:
                out.append(body[0])
    return out


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(FIXTURES / "mini_catalog.yaml")


def same(a: Plan, b: Plan) -> bool:
    """Equal field by field, fingerprint included, and every value of the same type (1, True and 1.0 are equal
    in Python, and a date is not its ISO string)."""
    return a == b and a.fingerprint == b.fingerprint and repr(a) == repr(b)


def entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.plan"))


@pytest.mark.parametrize("sql", golden_sql())
def test_a_kept_plan_is_the_planners_own(tmp_path: Path, catalog: Catalog, sql: str) -> None:
    fresh = plan_query(sql, catalog)
    assert same(plan_from_record(json.loads(json.dumps(plan_record(fresh)))), fresh)
    cache = PlanCache(tmp_path / "plans")
    assert same(cache.plan(sql, catalog), fresh)  # planned, and kept
    assert len(entries(tmp_path / "plans")) == 1
    assert same(cache.plan(sql, catalog), fresh)  # read back


def test_group_key_values_keep_their_types(tmp_path: Path) -> None:
    """Dates, booleans, integers and strings as domain values: each read back as what it was."""
    doc = {
        "federation": "f",
        "nodes": [{"id": "a", "address": "127.0.0.1:1"}],
        "tables": {
            "t": {
                "columns": {
                    "d": {"type": "DATE", "domain": {"values": ["2020-01-01", "2021-06-30"]}},
                    "b": {"type": "BOOLEAN", "domain": {"values": [True, False]}},
                    "i": {"type": "INTEGER", "domain": {"range": [1, 3]}},
                    "s": {"type": "VARCHAR", "domain": {"values": ["1", "x"]}},
                    "v": {"type": "BIGINT"},
                }
            }
        },
    }
    catalog = Catalog.model_validate(doc)
    sql = "SELECT d, b, i, s, COUNT(*), SUM(v) FROM t GROUP BY d, b, i, s"
    fresh = plan_query(sql, catalog)
    assert {type(v) for k in fresh.keys for v in k.values} == {dt.date, bool, int, str}
    PlanCache(tmp_path).plan(sql, catalog)
    assert same(PlanCache(tmp_path).plan(sql, catalog), fresh)


def test_a_hit_loads_neither_the_planner_nor_sqlglot(tmp_path: Path, catalog: Catalog) -> None:
    PlanCache(tmp_path).plan(GROUPED, catalog)
    code = f"""
import sys
from pathlib import Path
from hpf.federation.catalog import load_catalog
from hpf.client.plan_cache import PlanCache
plan = PlanCache(Path({str(tmp_path)!r})).plan({GROUPED!r}, load_catalog(Path({str(FIXTURES / "mini_catalog.yaml")!r})))
print(plan.fingerprint, " ".join(sorted(sys.modules)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == plan_query(GROUPED, catalog).fingerprint
    assert not [m for m in out[1:] if m.split(".")[0] == "sqlglot" or m.startswith("hpf.federation.planner")]


def test_the_folder_and_its_files_are_private(tmp_path: Path, catalog: Catalog) -> None:
    PlanCache(tmp_path / "plans").plan(COUNT, catalog)
    assert stat.S_IMODE((tmp_path / "plans").stat().st_mode) == 0o700
    for path in (tmp_path / "plans").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_folder_others_can_write_is_narrowed_and_nothing_it_held_is_trusted(tmp_path: Path, catalog: Catalog) -> None:
    """The HMAC's key is in the folder: where others may write the folder (made so by hand, or by another tool),
    they may put a key of their own there, and sign entries with it. So such a folder's entries are never read;
    it is narrowed to 0700 and its key made anew."""
    folder = tmp_path / "plans"
    cache = PlanCache(folder)
    fresh = cache.plan(GROUPED, catalog)
    (entry,) = entries(folder)
    os.chmod(folder, 0o777)
    # another user's work: a key of their own, and the entry signed anew under it with a field no fingerprint covers
    (folder / "key").unlink()
    (folder / "key").write_bytes(b"k" * 32)
    record = json.loads(entry.read_bytes().partition(b"\n")[2])
    record["plan"]["aggregates"][0][5] = "DECIMAL(38,2)"  # the answer cast to another type than the planner's
    payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    entry.write_bytes(plan_cache._mac(b"k" * 32, payload).encode() + b"\n" + payload)
    assert cache._read(entry_key(GROUPED, catalog), catalog) is None
    assert same(cache.plan(GROUPED, catalog), fresh)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and (folder / "key").read_bytes() != b"k" * 32
    assert same(cache._read(entry_key(GROUPED, catalog), catalog), fresh)  # kept anew, under its own key


def _tamper(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize(
    "damage",
    [
        "edited",  # the finishing SQL changed: the HMAC no longer checks out
        "cut",  # cut short
        "garbage",
        "empty",
        "key lost",  # the folder's key gone (or another's): no entry checks out
        "key short",
    ],
)
def test_an_unsound_entry_is_ignored_planned_again_and_rewritten(tmp_path: Path, catalog: Catalog, damage: str) -> None:
    cache = PlanCache(tmp_path)
    fresh = cache.plan(GROUPED, catalog)
    (entry,) = entries(tmp_path)
    if damage == "edited":
        _tamper(entry, b"DESC", b"ASC ")
    elif damage == "cut":
        entry.write_bytes(entry.read_bytes()[:-20])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(300))
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "key lost":
        (tmp_path / "key").unlink()
    else:
        (tmp_path / "key").write_bytes(b"short")
    assert cache._read(entry_key(GROUPED, catalog), catalog) is None
    assert same(cache.plan(GROUPED, catalog), fresh)
    assert cache._read(entry_key(GROUPED, catalog), catalog) is not None  # written anew


@pytest.mark.parametrize(
    "edit",
    [
        "finish",  # ORDER BY turned round: another answer shown, under the fingerprint the coordinator checks
        "outputs",  # the answer's columns named the other way round
        "components",  # a component read as another
        "keys",  # a group's label moved to another cell
        "where",
    ],
)
def test_an_entry_signed_anew_with_the_folders_key_must_still_be_the_plan_its_fingerprint_names(
    tmp_path: Path, catalog: Catalog, edit: str
) -> None:
    """Whoever can write the folder can read its key and sign an entry of their own. The client compares the
    coordinator's fingerprint with its plan's: that check binds a kept plan only if the fingerprint is the plan's
    own, worked out again from the fields it was read with, never one copied from the entry."""
    cache = PlanCache(tmp_path)
    fresh = cache.plan(GROUPED, catalog)
    (entry,) = entries(tmp_path)
    record = json.loads(entry.read_bytes().partition(b"\n")[2])
    plan = record["plan"]
    if edit == "finish":
        plan["finish_sql"] = plan["finish_sql"].replace("DESC", "ASC")
    elif edit == "outputs":
        plan["output_names"] = list(reversed(plan["output_names"]))
    elif edit == "components":
        plan["components"][2][0] = "count"
    elif edit == "keys":
        plan["keys"][0]["values"] = list(reversed(plan["keys"][0]["values"]))
    else:
        plan["where"] = "amount_fen > 0"
    assert plan != plan_record(fresh) and plan["fingerprint"] == fresh.fingerprint
    payload = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    mac = plan_cache._mac((tmp_path / "key").read_bytes(), payload).encode()
    entry.write_bytes(mac + b"\n" + payload)
    assert cache._read(entry_key(GROUPED, catalog), catalog) is None
    assert same(cache.plan(GROUPED, catalog), fresh)


def test_every_plan_s_fingerprint_is_worked_out_again_from_its_fields(catalog: Catalog) -> None:
    from hpf.federation.plan import plan_fingerprint

    for sql in golden_sql():
        try:
            fresh = plan_query(sql, catalog)
        except PlanError:
            continue
        types = {name: column.type for name, column in catalog.tables[fresh.table].columns.items()}
        assert plan_fingerprint(fresh, types) == fresh.fingerprint, sql


def test_an_entry_of_another_folder_or_filed_under_another_name_is_ignored(tmp_path: Path, catalog: Catalog) -> None:
    mine, theirs = PlanCache(tmp_path / "mine"), PlanCache(tmp_path / "theirs")
    mine.plan(COUNT, catalog)
    theirs.plan(GROUPED, catalog)
    (their_entry,) = entries(tmp_path / "theirs")
    # another profile's entry, copied in: its HMAC is under another key
    (tmp_path / "mine" / their_entry.name).write_bytes(their_entry.read_bytes())
    assert mine._read(entry_key(GROUPED, catalog), catalog) is None
    # my own entry for one question, filed under another's name: it names the digest it was written for
    (my_entry,) = [p for p in entries(tmp_path / "mine") if p.name != their_entry.name]
    (tmp_path / "mine" / their_entry.name).write_bytes(my_entry.read_bytes())
    assert mine._read(entry_key(GROUPED, catalog), catalog) is None
    assert same(mine.plan(GROUPED, catalog), plan_query(GROUPED, catalog))


def test_the_key_covers_the_sql_the_catalog_the_code_and_the_libraries(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = entry_key(COUNT, catalog)
    assert entry_key(COUNT, load_catalog(FIXTURES / "mini_catalog.yaml")) == key  # a new load of the same file
    assert entry_key(COUNT + " ", catalog) != key
    changed = catalog.model_copy(deep=True)
    column = next(c for t in changed.tables.values() for c in t.columns.values() if c.domain and c.domain.values)
    assert column.domain is not None and column.domain.values is not None
    column.domain.values = column.domain.values[:-1]
    assert entry_key(COUNT, changed) != key
    monkeypatch.setattr(plan_cache, "code_digest", lambda: "0" * 64)
    assert entry_key(COUNT, catalog) != key
    monkeypatch.undo()
    monkeypatch.setattr(plan_cache, "library_versions", lambda: ("sqlglot==0", "duckdb==0", "python 0"))
    assert entry_key(COUNT, catalog) != key


def test_the_code_digest_reads_every_module_the_planner_runs() -> None:
    """Every module of this project the planner loads is in the ``federation`` package, whose every source file
    the digest reads: a change to any of them finds no entry."""
    code = (
        "import sys, hpf.federation.planner; print(*(getattr(m, '__file__', '') for m in list(sys.modules.values())))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # resolved: a module may be loaded through hpf/, the links the source tree keeps for tools
    files = [Path(f).resolve() for f in loaded.split() if f != "None"]
    package = Path(hpf.federation.__file__).resolve().parent  # the package code_digest reads
    project = package.parent
    ours = [f for f in files if f.is_relative_to(project) and ".venv" not in f.parts]
    assert any(f.parent.name == "planner" for f in ours)
    assert [f for f in ours if not f.is_relative_to(package)] == []


def test_a_refusal_is_never_kept(tmp_path: Path, catalog: Catalog) -> None:
    cache = PlanCache(tmp_path)
    for _ in range(2):
        with pytest.raises(PlanError) as info:
            cache.plan("SELECT MAX(amount_fen) FROM deposits", catalog)
        assert info.value.code.startswith("PLAN_")
    assert entries(tmp_path) == []


def test_the_oldest_entries_go_past_the_limit(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan_cache, "MAX_ENTRIES", 2)
    cache = PlanCache(tmp_path)
    sqls = [f"SELECT COUNT(*) FROM deposits WHERE amount_fen > {n}" for n in range(3)]
    for n, sql in enumerate(sqls):
        cache.plan(sql, catalog)
        path = tmp_path / f"{entry_key(sql, catalog)}.plan"
        os.utime(path, ns=(n * 10**9, n * 10**9))  # written in this order, whatever the file system's clock says
    assert {p.stem for p in entries(tmp_path)} == {entry_key(sql, catalog) for sql in sqls[1:]}


@pytest.mark.parametrize("what", ["entry", "key"])
@pytest.mark.parametrize("kind", ["fifo", "huge", "symlink to a device"])
def test_an_entry_or_key_that_is_no_plain_file_is_never_waited_on_nor_read_whole(
    tmp_path: Path, catalog: Catalog, what: str, kind: str
) -> None:
    """A FIFO where an entry or the key should be would hold every question forever; a huge file (sparse: no disk
    used) or a device would be read whole. Each is passed over, the question planned, and the entry written anew."""
    import contextlib
    import threading

    cache = PlanCache(tmp_path)
    fresh = cache.plan(GROUPED, catalog)
    path = tmp_path / (f"{entry_key(GROUPED, catalog)}.plan" if what == "entry" else "key")
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge":
        with open(path, "wb") as fh:
            fh.truncate(1 << 40)
    else:
        path.symlink_to("/dev/zero")
    got: list[Plan] = []
    thread = threading.Thread(target=lambda: got.append(cache.plan(GROUPED, catalog)), daemon=True)
    thread.start()
    thread.join(20)
    if kind == "fifo":
        with contextlib.suppress(OSError):  # let a reader blocked opening it go
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert got and same(got[0], fresh), f"a question waits on a {kind} {what}"


def test_a_folder_that_cannot_be_written_costs_time_not_the_answer(tmp_path: Path, catalog: Catalog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert same(PlanCache(blocked / "plans").plan(COUNT, catalog), plan_query(COUNT, catalog))


@pytest.mark.parametrize(
    "record",
    [
        {"values": [["int", True]]},  # a bool is no int
        {"values": [["bool", 1]]},
        {"values": [["date", "2020-13-01"]]},
        {"values": [["float", 1.5]]},
        {"values": [["str", "x", "y"]]},
        {"scale": "0"},
        {"scale": True},
        {"fingerprint": None},
    ],
)
def test_a_record_is_read_strictly(catalog: Catalog, record: dict[str, object]) -> None:
    good = plan_record(plan_query(GROUPED, catalog))
    bad = json.loads(json.dumps(good))
    if "values" in record:
        bad["keys"][0]["values"] = record["values"]
    elif "scale" in record:
        bad["components"][0][2] = record["scale"]
    else:
        bad["fingerprint"] = record["fingerprint"]
    with pytest.raises((ValueError, TypeError)):
        plan_from_record(bad)


@pytest.mark.parametrize("kept", [True, False])
def test_a_client_keeps_plans_beside_its_keys_unless_its_profile_says_not(tmp_path: Path, kept: bool) -> None:
    from hpf.client.federation_client import FederationClient
    from hpf.client.profile import load_profile

    (tmp_path / "client.yaml").write_text(
        f"coordinator: 127.0.0.1:1\ncatalog: {FIXTURES / 'mini_catalog.yaml'}\nkeys: keys/me.bfv\ninsecure: true\n"
        + ("" if kept else "plan_cache: false\n"),
        encoding="utf-8",
    )
    profile = load_profile(tmp_path / "client.yaml")
    assert profile.plans == (tmp_path / "keys" / "plans" if kept else None)
    with FederationClient(profile) as client:
        assert same(client.plan(GROUPED), plan_query(GROUPED, client.catalog))
    assert len(entries(tmp_path / "keys" / "plans")) == (1 if kept else 0)
