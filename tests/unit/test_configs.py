"""Config files: a wrong file gets an error naming the file, the field and the fix."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import yaml

from hpf.client.profile import load_profile
from hpf.coordinator.config import load_coordinator_config
from hpf.federation.catalog import load_catalog
from hpf.federation.errors import ConfigError
from hpf.node.config import load_node_config

GOOD_CATALOG = {
    "federation": "t",
    "nodes": [{"id": "north", "address": "127.0.0.1:50051"}],
    "tables": {"t": {"columns": {"a": {"type": "BIGINT"}, "g": {"type": "VARCHAR", "domain": {"values": ["x"]}}}}},
}


def _column_a(spec: dict) -> dict:
    return {"tables": {"t": {"columns": {"a": spec}}}}


def _write(tmp_path: Path, name: str, doc: object) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _catalog_error(tmp_path: Path, **changes: object) -> ConfigError:
    doc = yaml.safe_load(yaml.safe_dump(GOOD_CATALOG))
    doc.update(changes)
    path = _write(tmp_path, "federation.yaml", doc)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert str(path) in info.value.message
    return info.value


def test_good_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, "federation.yaml", GOOD_CATALOG))
    assert catalog.node_ids == ["north"]
    assert catalog.tables["t"].columns["g"].domain_values() == ["x"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"nodes": [{"id": "North!", "address": "127.0.0.1:1"}]}, "nodes[0].id", "lower-case"),
        ({"nodes": [{"id": "n", "address": "nowhere"}]}, "nodes[0].address", "host:port"),
        (
            {"nodes": [{"id": "n", "address": "127.0.0.1:1"}, {"id": "n", "address": "127.0.0.1:2"}]},
            "(top level)",
            "listed twice",
        ),
        ({"tables": {"t": {"columns": {"a": {"type": "TEXTY"}}}}}, "tables.t.columns.a.type", "unsupported type"),
        (
            {"tables": {"t": {"columns": {"a": {"type": "BIGINT", "domain": {"values": ["x"]}}}}}},
            "tables.t.columns.a",
            "not a BIGINT",
        ),
        (
            {"tables": {"t": {"columns": {"a": {"type": "VARCHAR", "domain": {"range": [1, 2]}}}}}},
            "tables.t.columns.a",
            "needs an integer or DATE",
        ),
        (
            {"tables": {"t": {"columns": {"a": {"type": "BIGINT", "class": "secret"}}}}},
            "tables.t.columns.a.class",
            "identifier",
        ),
        ({"tables": {"t": {"columns": {"a": {"type": "BIGINT", "colour": 1}}}}}, "tables.t.columns.a.colour", "Extra"),
        (
            _column_a({"type": "INTEGER", "domain": {"values": [1, "1"]}}),
            "tables.t.columns.a",
            "lists a value twice",
        ),
        (
            _column_a({"type": "DATE", "domain": {"values": [dt.date(2020, 1, 1), "2020-01-01"]}}),
            "tables.t.columns.a",
            "lists a value twice",
        ),
        (
            _column_a({"type": "DATE", "domain": {"range": [dt.datetime(2020, 1, 1, 10), dt.date(2021, 1, 1)]}}),
            "tables.t.columns.a",
            "not a DATE",
        ),
        (
            _column_a({"type": "DATE", "domain": {"values": [dt.datetime(2020, 1, 1, 10)]}}),
            "tables.t.columns.a",
            "not a DATE",
        ),
    ],
)
def test_catalog_errors_name_file_field_and_fix(tmp_path: Path, change: dict, field: str, words: str) -> None:
    err = _catalog_error(tmp_path, **change)
    assert err.code == "CONFIG_INVALID"
    assert f": {field}:" in err.message, err.message
    assert words in err.message


@pytest.mark.parametrize("tail", ["\n", "\r", "\x00"])
def test_names_with_a_line_break_or_nul_are_refused(tmp_path: Path, tail: str) -> None:
    """A YAML double-quoted string can end in a newline, which "$" would let through."""
    for change in (
        {"nodes": [{"id": f"north{tail}", "address": "127.0.0.1:1"}]},
        {"tables": {f"t{tail}": GOOD_CATALOG["tables"]["t"]}},
        {"tables": {"t": {"columns": {f"a{tail}": {"type": "BIGINT"}}}}},
    ):
        assert _catalog_error(tmp_path, **change).code == "CONFIG_INVALID"


def test_unquoted_decimal_in_flow_style_says_to_quote(tmp_path: Path) -> None:
    text = (
        "federation: t\n"
        "nodes: [{id: north, address: '127.0.0.1:1'}]\n"
        "tables:\n  t:\n    columns:\n      a: {type: DECIMAL(6,2)}\n"
    )
    path = _write(tmp_path, "federation.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert "tables.t.columns.a.type" in info.value.message and "quote it" in info.value.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "federation.yaml", "federation: t\nnodes: [\n  - id: x\n")
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert info.value.code == "CONFIG_SYNTAX"
    assert "line" in info.value.message and str(path) in info.value.message


def test_a_file_that_is_not_utf8_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    path.write_bytes(b"federation: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert info.value.code == "CONFIG_SYNTAX"
    assert str(path) in info.value.message and "UTF-8" in info.value.message


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog(tmp_path / "absent.yaml")
    assert info.value.code == "CONFIG_NOT_FOUND"
    with pytest.raises(ConfigError) as info:
        load_catalog(_write(tmp_path, "empty.yaml", ""))
    assert "empty" in info.value.message


def test_node_config_needs_tls_or_explicit_insecure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = {"node_id": "north", "catalog": "federation.yaml", "tables": {"t": "data/t.parquet"}}
    path = _write(tmp_path, "node.yaml", base)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert "(top level)" in info.value.message and "hpf pki init" in info.value.message
    config = load_node_config(path, insecure=True)
    assert config.insecure and config.tls is None
    assert config.catalog == tmp_path / "federation.yaml"  # relative to the file
    assert config.tables["t"].path == tmp_path / "data" / "t.parquet"
    both = _write(tmp_path, "both.yaml", {**base, "insecure": True, "tls": {"ca": "a", "cert": "b", "key": "c"}})
    with pytest.raises(ConfigError) as info:
        load_node_config(both)
    assert "both given" in info.value.message

    from hpf.federation.trust.tls import require_tls

    with caplog.at_level(logging.WARNING, logger="hpf.tls"):
        require_tls(None, True, source="node north")
    assert "unencrypted" in caplog.text


def test_coordinator_and_profile_configs(tmp_path: Path) -> None:
    coord = _write(tmp_path, "coordinator.yaml", {"catalog": "federation.yaml", "deadline_ms": 5})
    with pytest.raises(ConfigError) as info:
        load_coordinator_config(coord, insecure=True)
    assert "deadline_ms" in info.value.message
    profile = _write(tmp_path, "client.yaml", {"coordinator": "127.0.0.1:1", "keys": "k/c.bfv", "insecure": True})
    loaded = load_profile(profile)
    assert loaded.keys == tmp_path / "k" / "c.bfv"


PROFILE = {"coordinator": "127.0.0.1:50050", "insecure": True}
NODE = {"node_id": "north", "catalog": "federation.yaml", "tables": {}, "insecure": True}
COORDINATOR = {"catalog": "federation.yaml", "deadline_ms": 5000, "insecure": True}


@pytest.mark.parametrize(
    ("doc", "kind", "loader", "expected"),
    [
        (GOOD_CATALOG, "a federation catalog", load_profile, "a client profile"),
        (GOOD_CATALOG, "a federation catalog", load_node_config, "a node config"),
        (PROFILE, "a client profile", load_catalog, "a federation catalog"),
        (PROFILE, "a client profile", load_node_config, "a node config"),
        (NODE, "a node config", load_profile, "a client profile"),
        (NODE, "a node config", load_coordinator_config, "a coordinator config"),
        (COORDINATOR, "a coordinator config", load_node_config, "a node config"),
        ({"version": 1, "roles": {}}, "a node policy", load_catalog, "a federation catalog"),
    ],
)
def test_a_file_of_another_kind_is_named_for_what_it_is(
    tmp_path: Path, doc: dict, kind: str, loader: object, expected: str
) -> None:
    """A newcomer who passes the catalog where the profile goes is told so, not shown a page of field errors."""
    path = _write(tmp_path, "given.yaml", doc)
    with pytest.raises(ConfigError) as info:
        loader(path)  # type: ignore[operator]
    assert info.value.code == "CONFIG_WRONG_KIND", info.value
    assert info.value.message == f"{path}: this is {kind}, where {expected} is expected"


def test_a_file_of_the_right_kind_with_a_mistake_still_names_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "client.yaml", {**PROFILE, "deadline_ms": -1})
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert info.value.code == "CONFIG_INVALID" and "deadline_ms" in info.value.message


@pytest.mark.parametrize("node_id", ["north-", "-north", "a" * 64])
def test_a_node_id_is_one_dns_label_as_its_server_name_needs(tmp_path: Path, node_id: str) -> None:
    """The catalog refuses a node id the PKI could not name the node's server by (<id>.node.<federation>)."""
    err = _catalog_error(tmp_path, nodes=[{"id": node_id, "address": "127.0.0.1:50051"}])
    assert err.code == "CONFIG_INVALID" and "nodes[0].id" in err.message


def _nested(levels: int) -> str:
    return "federation: f\nnodes: [{id: a, address: 'h:1'}]\ntables: " + "[" * levels + "]" * levels + "\n"


def _alias_bomb() -> str:
    lines = ["federation: f", "nodes: [{id: a, address: 'h:1'}]", "v0: &v0 [a, b, c, d, e, f, g, h, i, j]"]
    lines += [f"v{i}: &v{i} [" + ", ".join([f"*v{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join([*lines, "tables: {t: {columns: {c: {type: VARCHAR, domain: {values: *v8}}}}}"]) + "\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (_nested(3000), "nested deeper than 64 levels"),  # PyYAML's composer recurses: a RecursionError otherwise
        ("federation: f\nnodes: &n [*n]\ntables: {}\n", "the alias *n is inside the value it names"),
        (_alias_bomb(), "values once its aliases are expanded"),  # 10^9 domain values from ten lines
    ],
    ids=["nested", "alias-in-itself", "alias-bomb"],
)
def test_a_config_nested_too_deep_or_blown_up_by_aliases_is_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "federation.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert info.value.code == "CONFIG_TOO_COMPLEX" and str(path) in info.value.message and says in info.value.message


def test_a_config_as_deep_and_aliased_as_real_ones_loads(tmp_path: Path) -> None:
    path = tmp_path / "federation.yaml"
    path.write_text(
        "federation: f\nnodes: [{id: a, address: 'h:1'}]\ncolumn: &c {type: BIGINT, class: public}\n"
        "tables:\n  t: {columns: {a: *c, b: *c}}\n  u: {columns: {a: *c}}\n"
    )
    with pytest.raises(ConfigError) as info:  # an unknown top-level key, but it parsed: aliases are not refused
        load_catalog(path)
    assert info.value.code == "CONFIG_INVALID" and "column" in info.value.message


def test_a_catalog_a_coordinator_sends_is_read_as_a_catalog_file_is() -> None:
    """A lying coordinator's catalog (the client reads it when its profile pins none) gets the file's bounds: nested
    too deep, an alias in itself or blown up by aliases, it is a clear error at once, never a hang or a traceback."""
    import threading
    import types

    from hpf.client.federation_client import FederationClient

    def catalog_of(text: str) -> BaseException | str:
        client = object.__new__(FederationClient)
        client.profile = types.SimpleNamespace(catalog=None, timeout_s=1.0)  # type: ignore[assignment]
        client._catalog = None
        client._stub = types.SimpleNamespace(  # type: ignore[assignment]
            GetCatalog=lambda request, timeout: types.SimpleNamespace(catalog_yaml=text)
        )
        got: list[BaseException | str] = []

        def read() -> None:
            try:
                got.append(str(client.catalog.federation))
            except BaseException as err:  # noqa: BLE001 - whatever it raises is what this looks at
                got.append(err)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(10.0)
        return got[0] if got else "blocked"

    good = "federation: f\nnodes: [{id: a, address: 'h:1'}]\ntables: {t: {columns: {c: {type: BIGINT}}}}\n"
    assert catalog_of(good) == "f"
    for text in (_nested(3000), _alias_bomb(), "federation: f\nnodes: &n [*n]\ntables: {}\n"):
        got = catalog_of(text)
        assert isinstance(got, ConfigError) and got.code == "CONFIG_TOO_COMPLEX", repr(got)
        assert got.message.startswith("<coordinator catalog>:")
    got = catalog_of("federation: f\nfederation: g\nnodes: []\ntables: {}\n")
    assert isinstance(got, ConfigError) and got.code == "CONFIG_INVALID" and "written twice" in got.message
