"""The CLI turns every failure into one readable line and a stable exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from hpf.cli.output import render
from hpf.client.answers import QueryAnswer
from hpf.demo.launcher import free_ports
from hpf.federation.trust.pki import init_federation


def _hpf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


def _catalog(path: Path) -> Path:
    doc = {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {
            "t": {
                "columns": {
                    "a": {"type": "BIGINT", "class": "public"},
                    "g": {"type": "VARCHAR", "class": "public", "domain": {"values": ["x"]}},
                }
            }
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_catalog_check_accepts_a_good_file_and_names_the_field_of_a_bad_one(tmp_path: Path) -> None:
    good = _hpf("catalog", "check", str(_catalog(tmp_path / "federation.yaml")))
    assert good.returncode == 0 and "1 node(s), 1 table(s), 1 groupable column(s)" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "federation.yaml").read_text().replace("BIGINT", "BIGNUM"))
    result = _hpf("catalog", "check", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith("error: [CONFIG_INVALID]")
    assert "tables.t.columns.a.type" in result.stderr and "unsupported type" in result.stderr


def test_query_to_a_coordinator_that_is_not_there(tmp_path: Path) -> None:
    init_federation(tmp_path / "pki", ["north"], federation="t")
    (port,) = free_ports(1)
    profile = {
        "coordinator": f"127.0.0.1:{port}",
        "catalog": str(_catalog(tmp_path / "federation.yaml")),
        "keys": "keys/me.bfv",
        "tls": {"ca": "pki/ca.pem", "cert": "pki/people/caseworker.pem", "key": "pki/people/caseworker.key"},
    }
    (tmp_path / "client.yaml").write_text(yaml.safe_dump(profile))
    result = _hpf("query", "-p", str(tmp_path / "client.yaml"), "SELECT COUNT(*) FROM t")
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: [SERVER_UNREACHABLE]") and "Traceback" not in result.stderr
    # a bad query is refused locally, before anything is sent, with the planner's code
    result = _hpf("query", "-p", str(tmp_path / "client.yaml"), "SELECT MAX(a) FROM t")
    assert result.returncode == 2 and result.stderr.startswith("error: [PLAN_NOT_ADDITIVE]")
    assert (tmp_path / "keys" / "me.bfv").stat().st_mode & 0o777 == 0o600


def test_half_given_profile_tls_is_an_error(tmp_path: Path) -> None:
    profile = {"coordinator": "127.0.0.1:1", "tls": {"ca": "ca.pem", "cert": "c.pem"}}
    (tmp_path / "client.yaml").write_text(yaml.safe_dump(profile))
    result = _hpf("query", "-p", str(tmp_path / "client.yaml"), "SELECT COUNT(*) FROM t")
    assert result.returncode == 2
    assert "tls.key" in result.stderr and "Field required" in result.stderr


def test_tables_print_names_and_values_as_they_are_never_as_markup() -> None:
    answer = QueryAnswer(
        columns=["g", "n [all]", "[/x]"],
        rows=[["[bold]x[/]", 3, None]],
        answered=["north"],
        missing=[],
        query_id="q",
        withheld_groups=0,
    )
    text = render(answer, "table")  # "[/x]" as markup would raise rich's MarkupError
    assert "n [all]" in text and "[/x]" in text and "[bold]x[/]" in text


def test_version_names_the_he_wire_format_a_catalog_states() -> None:
    from hpf.federation.crypto.he import EXPECTED_HE_FORMAT

    shown = _hpf("version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["hpf-federation 0.1.0", f"HE wire format: {EXPECTED_HE_FORMAT}"]
