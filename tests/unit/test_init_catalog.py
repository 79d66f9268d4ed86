"""The catalog `hpf init` writes from a newcomer's files: what its comments suggest, and what taking them allows.

An operator who takes every suggestion (as the comments invite: uncomment the bounds "to sum products of it" and
the domains "to group by it") must not get a catalog in which a flag passes as a measured quantity: a product
with a column of two values is the sum of one value's rows, which a minimum group size never sees.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpf.cli.init_catalog import catalog_text
from hpf.cli.init_sources import Source, infer_tables
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.errors import PolicyViolation
from hpf.federation.planner import plan_query
from hpf.policies.engine import Asker, check_query
from hpf.policies.loader import load_policy

REGIONS = ("north", "south", "east")
# hpf:base with exact caseworkers (a test policy): the product rule holds where k applies, to exact answers only
EXACT_CASEWORKERS = Path(__file__).resolve().parents[1] / "fixtures" / "policies" / "base-exact-caseworkers.yaml"
HEADER = "amount,rate,flag,dflag,dsign\n"


def _row(i: int) -> str:
    # a measured amount and rate; flags of two values: 0/1, 0.00/1.00 and -1.0/1.0 (each value in few rows, so no
    # domain is suggested for the integer one)
    flag = 1 if i == 3 else 0
    return f"{i * 7 % 500}.25,0.0{i % 8},{flag},{i % 2}.00,{'-1.0' if i % 3 else '1.0'}\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("init")
    sources = []
    for region in REGIONS:
        path = root / region / "t.csv"
        path.parent.mkdir()
        path.write_text(HEADER + "".join(_row(i) for i in range(40)))
        sources.append(Source.parse(f"{region}={path}"))
    tables = infer_tables(sources, progress=lambda line: None)
    nodes = {r: f"127.0.0.1:{i + 1}" for i, r in enumerate(REGIONS)}
    return catalog_text("f", nodes, {r: ("", "") for r in REGIONS}, tables, {}, "x", narrow=False)


def _taken(text: str) -> Catalog:
    """The catalog with every suggestion the comments make taken, and every column sensitive."""
    text = re.sub(r"# (domain: \{.*\}|bounds: \[.*\])   # .*", r"\1", text)
    text = text.replace("# class: TODO   (identifier | public | sensitive | commercial)", "class: sensitive")
    text = re.sub(r'audit_key: "", agreement_key: ""', "", text).replace(", }", "}")
    return Catalog.model_validate(__import__("yaml").safe_load(text))


def test_a_measured_column_gets_bounds_a_power_of_ten_past_its_values(written: str) -> None:
    assert re.search(r"amount:\n.*\n.*\n\s+# bounds: \[0, 999.99\]   # the files' values lie within", written), written
    assert re.search(r"rate:\n.*\n.*\n\s+# bounds: \[0, 0.1\]   # the files' values lie within", written), written


@pytest.mark.parametrize("flag", ["flag", "dflag", "dsign"])
def test_a_column_of_two_values_gets_no_bounds_that_would_pass_it_as_a_quantity(written: str, flag: str) -> None:
    block = re.split(r"\n {4,6}(?=\S)", written.split(f"      {flag}:\n", 1)[1], maxsplit=1)[0]  # to the next column
    assert "# bounds:" not in block, block
    assert "two values" in block and "filter on it" in block, block


@pytest.mark.parametrize("flag", ["flag", "dflag", "dsign"])
def test_taking_every_suggestion_leaves_a_product_with_a_flag_refused(written: str, flag: str) -> None:
    catalog = _taken(written)
    plan = plan_query(f"SELECT SUM(amount * {flag}) FROM t", catalog)
    with pytest.raises(PolicyViolation) as info:
        check_query(load_policy(EXACT_CASEWORKERS), catalog, plan, Asker("x", "caseworker", None), "", False, party="n")
    assert info.value.code == "POLICY_AGGREGATE_PRODUCT", info.value.message
    # while a product of the measured quantities the suggestions declare is answered
    plan = plan_query("SELECT SUM(amount * rate) FROM t", catalog)
    check_query(load_policy(EXACT_CASEWORKERS), catalog, plan, Asker("x", "caseworker", None), "", False, party="n")


def test_the_written_catalog_loads(written: str, tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    path.write_text(re.sub(r', audit_key: "", agreement_key: ""', "", written))
    assert set(load_catalog(path).tables["t"].columns) == {"amount", "rate", "flag", "dflag", "dsign"}


def test_a_column_given_two_classes_is_refused() -> None:
    from hpf.cli.init_catalog import parse_classes
    from hpf.cli.init_sources import InferredColumn, InferredTable
    from hpf.federation.errors import ConfigError

    tables = {"t": InferredTable("t", [InferredColumn("amount", "BIGINT", {})])}
    assert parse_classes(["amount=public", "t.amount=public"], tables) == {("t", "amount"): "public"}
    with pytest.raises(ConfigError) as info:  # the last would win, whichever the operator meant
        parse_classes(["amount=public", "t.amount=sensitive"], tables)
    assert info.value.code == "INIT_ARGS" and "t.amount" in info.value.message


def test_a_csv_whose_later_rows_break_the_detected_type_is_refused_with_a_code(tmp_path: Path) -> None:
    """A CSV reader detects a column's type from a sample of its first rows; a later row of another type fails
    when the whole file is read, which `hpf init` does: a clear error, never an engine's traceback with a value."""
    from hpf.federation.errors import ConfigError

    sources = []
    for region in REGIONS:
        path = tmp_path / region / "t.csv"
        path.parent.mkdir()
        path.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(25_000)) + "1,secret-value\n")
        sources.append(Source.parse(f"{region}={path}"))
    with pytest.raises(ConfigError) as info:
        infer_tables(sources, progress=lambda line: None)
    assert info.value.code == "INIT_SCHEMA" and "table 't'" in info.value.message
    assert "secret-value" not in info.value.message and "secret-value" not in (info.value.hint or "")


def test_a_column_name_is_never_sql(tmp_path: Path) -> None:
    """A region's file is data, its header too: a column named to close the quote around it and run statements
    of its own (here, one that writes a file) must be read as a name, and left out as one the catalog cannot
    hold, never run."""
    planted = tmp_path / "planted.csv"
    name = f"x\"::VARCHAR, '1')), 1, 1 FROM (SELECT 1 AS x); COPY (SELECT 42 AS y) TO '{planted}'; SELECT (1 --"
    sources = []
    for region in REGIONS:
        path = tmp_path / region / "t.csv"
        path.parent.mkdir()
        path.write_text('id,"' + name.replace('"', '""') + '"\n' + "".join(f"{i},{i}.5\n" for i in range(20)))
        sources.append(Source.parse(f"{region}={path}"))
    tables = infer_tables(sources, progress=lambda line: None)
    assert not planted.exists()
    assert [c.name for c in tables["t"].columns] == ["id"]
    assert tables["t"].left_out == {name: "its name is not lower-case letters, digits and _"}


@pytest.mark.parametrize("brk", ["\n", "\r", "\u2028", "\x85"])
def test_a_column_name_is_never_yaml_either(tmp_path: Path, brk: str) -> None:
    """A name left out is named in a comment of the catalog: a line break in it must not end the comment and
    write a table, a column or a class of the file's own into the catalog every party holds."""
    from hpf.federation.errors import ConfigError

    name = f"zz{brk}  extra:{brk}    columns:{brk}      c: {{type: BIGINT, class: public}}{brk}#"
    sources = []
    for region in REGIONS:
        path = tmp_path / region / "t.csv"
        path.parent.mkdir()
        path.write_text('id,"' + name + '"\n' + "".join(f"{i},{i}\n" for i in range(20)), newline="")
        sources.append(Source.parse(f"{region}={path}"))
    try:
        tables = infer_tables(sources, progress=lambda line: None)
    except ConfigError as err:  # a reader that cannot take the header at all refuses the file: as safe
        assert err.code == "INIT_SCHEMA"
        return
    text = catalog_text("f", {r: "h:1" for r in REGIONS}, {r: ("", "") for r in REGIONS}, tables, {}, "x")
    doc = __import__("yaml").safe_load(text)
    assert list(doc["tables"]) == ["t"] and list(doc["tables"]["t"]["columns"]) == ["id"]
    assert "class" not in doc["tables"]["t"]["columns"]["id"]
    (comment,) = [line for line in text.splitlines() if "left out" in line]
    assert comment.startswith('      # "zz\\') and comment.endswith(
        ": left out, its name is not lower-case letters, digits and _"
    )
