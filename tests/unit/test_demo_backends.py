"""`hpf demo --backends` and `--postgres`: which region takes which backend, what its node config says, and the
refusals (an unknown backend, a string that is not a connection string, a server out of reach), none of which
shows the connection string."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpf.cli.app import _register, app
from hpf.demo.launcher import layout_for
from hpf.demo.postgres import DEFAULT_POSTGRES, POSTGRES_ENV, parse_backends, postgres_dsn
from hpf.federation.errors import ConfigError
from hpf.federation.hpf_schema import TABLE_NAMES
from hpf.node.config import PostgresTable, TableSource

RUNNER = CliRunner()
_register("demo")
PASSWORD = "Pw-Secret-4242"


def hpf(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("duckdb", ("duckdb",)),
        ("postgres", ("postgres",)),
        ("duckdb,postgres", ("duckdb", "postgres")),
        (" Postgres , duckdb ", ("postgres", "duckdb")),
    ],
)
def test_backends_parse(text: str, expected: tuple[str, ...]) -> None:
    assert parse_backends(text) == expected


@pytest.mark.parametrize(("text", "named"), [("sqlite", "'sqlite'"), ("duckdb,hive", "'hive'"), ("duckdb,", "''")])
def test_an_unknown_backend_is_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_backends(text)
    assert err.value.code == "DEMO_ARGS"
    assert f"--backends takes a comma-separated list of duckdb, postgres, spark, not {named}" in err.value.message


def test_regions_take_the_backends_in_turn(tmp_path: Path) -> None:
    layout = layout_for(tmp_path, 5, ("duckdb", "postgres"))
    assert [layout.backend(n) for n in layout.node_ids] == ["duckdb", "postgres", "duckdb", "postgres", "duckdb"]
    assert set(layout_for(tmp_path, 3, ("postgres",)).backends.values()) == {"postgres"}
    assert set(layout_for(tmp_path, 3).backends.values()) == {"duckdb"}  # the default


def test_a_postgres_region_names_its_schema_and_a_dsn_file_never_the_string(tmp_path: Path) -> None:
    layout = layout_for(tmp_path, 3, ("duckdb", "postgres"))
    files, on_pg = layout.sources("shanghai"), layout.sources("hangzhou")
    assert sorted(files) == sorted(on_pg) == sorted(TABLE_NAMES)
    assert all(isinstance(TableSource.model_validate({"path": p}), TableSource) for p in files.values())
    for table, source in on_pg.items():
        parsed = PostgresTable.model_validate(source)
        assert (parsed.db_schema, parsed.table) == ("hangzhou", table)
        assert parsed.postgres.dsn_file == layout.dsn_file and parsed.postgres.dsn_env is None


def test_the_admin_connection_string_comes_from_the_option_the_environment_or_the_local_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(POSTGRES_ENV, raising=False)
    assert postgres_dsn(None) == DEFAULT_POSTGRES == "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    monkeypatch.setenv(POSTGRES_ENV, "host=db.example port=6543 user=demo dbname=postgres")
    assert postgres_dsn(None) == "host=db.example port=6543 user=demo dbname=postgres"
    assert postgres_dsn("host=other") == "host=other"


def test_cli_refuses_an_unknown_backend_before_touching_the_data_directory(tmp_path: Path) -> None:
    code, out = hpf("demo", "--once", "--backends", "duckdb,sqlite", "--data", str(tmp_path / "d"))
    assert code == 2 and "[DEMO_ARGS]" in out and "not 'sqlite'" in out
    assert not (tmp_path / "d").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # released: nothing listens there


def test_cli_says_a_server_out_of_reach_with_a_hint_and_never_the_connection_string(tmp_path: Path) -> None:
    port = _closed_port()
    dsn = f"host=127.0.0.1 port={port} user=hpf_someone password={PASSWORD} dbname=elsewhere"
    data = tmp_path / "d"
    code, out = hpf(
        "demo", "--once", "--nodes", "3", "--backends", "duckdb,postgres", "--postgres", dsn, "--data", str(data)
    )
    assert code == 5, out
    assert out.startswith("error: [DEMO_POSTGRES_UNREACHABLE] the demo cannot connect to PostgreSQL"), out
    assert "start PostgreSQL, or pass --postgres" in out and "Traceback" not in out
    for part in (PASSWORD, str(port), "hpf_someone", "elsewhere"):
        assert part not in out
    assert not (data / "shanghai").exists() and not (data / "secrets").exists()  # said before anything was made


def test_cli_refuses_a_postgres_option_that_is_no_connection_string(tmp_path: Path) -> None:
    bad = f"password={PASSWORD} this is = not one"
    code, out = hpf("demo", "--once", "--backends", "postgres", "--postgres", bad, "--data", str(tmp_path / "d"))
    assert code == 2 and "[DEMO_ARGS] --postgres (or HPF_DEMO_POSTGRES) is not a PostgreSQL connection string" in out
    assert PASSWORD not in out
