"""`hpf policy check` and `hpf policy show`: a summary and exit 0, or every problem with its line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner, Result

from hpf.cli.policy import register
from hpf.federation.hpf_schema import DEMO_CONSENT_ISSUER, demo_catalog
from hpf.policies import DEFAULT_POLICY
from hpf.policies.loader import load_policy

app = typer.Typer()
register(app)
runner = CliRunner()


def _catalog(tmp_path: Path) -> Path:
    path = tmp_path / "federation.yaml"
    issuers = [{"id": DEMO_CONSENT_ISSUER, "key": "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="}]  # the demo's
    doc = demo_catalog({"shanghai": "127.0.0.1:50051"}, issuers=issuers)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


def _check_extending(tmp_path: Path, roles: str) -> tuple[Path, Result]:
    """`hpf policy check` on a node file that extends the defaults with ``roles`` (YAML under ``roles:``)."""
    path = tmp_path / "node.yaml"
    path.write_text("version: 1\nextends: " + str(DEFAULT_POLICY) + "\nroles:\n" + roles)
    return path, runner.invoke(app, ["policy", "check", str(path)])


def test_check_prints_a_summary_of_the_defaults(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "check", str(DEFAULT_POLICY), "--catalog", str(_catalog(tmp_path))])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"{DEFAULT_POLICY}: ok: 4 role(s), 4 purpose(s), checked against ")
    assert "  caseworker: k=5, 120 requests / 60 s, aggregates count, sum, avg\n" in out
    assert "    loans (purpose loan-review | account-transfer)\n" in out
    assert "    loans (purpose loan-review)\n" in out  # a bank's statistics: DP, no free-text consent
    assert "consent tokens from shanghai-consent" in out
    assert "auditor" not in out


def test_check_lists_every_problem_with_its_line_and_exits_2(tmp_path: Path) -> None:
    path, result = _check_extending(tmp_path, "  caseworker:\n    min_group_size: 0\n    aggregates: [count, median]\n")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}:6: roles.caseworker.aggregates[1]: unknown aggregate 'median': aggregates are count, sum, "
        "avg, var_pop, var_samp, stddev_pop, stddev_samp",
        f"error: {path}:5: roles.caseworker.min_group_size: min_group_size (k) must be at least 1 (got 0); "
        "1 releases every group",
        "2 problem(s) [POLICY_FILE_INVALID]; hint: see the comments in policies/base.yaml for the format",
    ]


def test_check_refuses_group_without_output(tmp_path: Path) -> None:
    path, result = _check_extending(
        tmp_path, "  analyst:\n    tables:\n      loans:\n        columns:\n          status: [filter, group]\n"
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"error: {path}:8: roles.analyst.tables.loans.columns.status: group reveals the key's values: add output"
    )


def test_check_against_a_catalog_names_what_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(DEFAULT_POLICY.read_text(encoding="utf-8").replace("      withdrawals: {}", "      withdrawal: {}"))
    result = runner.invoke(app, ["policy", "check", str(path), "--catalog", str(_catalog(tmp_path))])
    assert result.exit_code == 2
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "withdrawal: {}" in text)
    assert result.stderr.splitlines()[0] == (
        f"error: {path}:{line}: roles.operator.tables.withdrawal: the catalog has no table 'withdrawal'; "
        "did you mean 'withdrawals'?"
    )


def test_check_a_bad_catalog_or_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "check", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {tmp_path / 'absent.yaml'}: file not found")
    bad = tmp_path / "federation.yaml"
    bad.write_text("federation: x\n")
    result = runner.invoke(app, ["policy", "check", str(DEFAULT_POLICY), "--catalog", str(bad)])
    assert result.exit_code == 2 and "nodes" in result.stderr


def test_show_prints_the_effective_policy_which_loads_back_the_same(tmp_path: Path) -> None:
    example = DEFAULT_POLICY.with_name("strict-node.example.yaml")
    result = runner.invoke(app, ["policy", "show", str(example)])
    assert result.exit_code == 0, result.stderr
    assert "extends" not in result.stdout and "withdrawals" in result.stdout  # the operator's, not caseworker's
    shown = tmp_path / "shown.yaml"
    shown.write_text(result.stdout)
    assert load_policy(shown).model_dump() == load_policy(example).model_dump()


def test_hpf_policy_is_a_command_group(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hpf.cli", "policy", "check", str(DEFAULT_POLICY)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{DEFAULT_POLICY}: ok: 4 role(s)")


def test_check_reports_every_mistake_of_a_file_at_once_and_exits_2(tmp_path: Path) -> None:
    """A duplicated key, values the format refuses, undeclared purposes and what the catalog lacks: all of them in
    one run, each with its line, and the hints for each kind."""
    path = tmp_path / "node.yaml"
    path.write_text(
        "version: 1\n"
        "purposes: {statistics: reporting}\n"
        "roles:\n"
        "  caseworker:\n"
        "    aggregates: [count, median]\n"
        "    min_group_size: 5\n"
        "    min_group_size: 6\n"
        "    purposes: [audit]\n"
        "    tables:\n"
        "      withdrawal: {}\n"
        "      loans: {columns: {status: [filter, group]}}\n"
    )
    result = runner.invoke(app, ["policy", "check", str(path), "--catalog", str(_catalog(tmp_path))])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: {path}:7: roles.caseworker.min_group_size: written twice (first on line 6)",
        f"error: {path}:5: roles.caseworker.aggregates[1]: unknown aggregate 'median': aggregates are count, sum, "
        "avg, var_pop, var_samp, stddev_pop, stddev_samp",
        f"error: {path}:11: roles.caseworker.tables.loans.columns.status: group reveals the key's values: add output",
        f"error: {path}:8: roles.caseworker.purposes[0]: purpose 'audit' is not declared in purposes (declared: "
        "statistics)",
        f"error: {path}:10: roles.caseworker.tables.withdrawal: the catalog has no table 'withdrawal'; did you mean "
        "'withdrawals'?",
        "5 problem(s) [POLICY_FILE_INVALID]; hint: write each key once; see the comments in policies/base.yaml for "
        "the format; declare the purpose under purposes, or fix its name; compare the policy with the catalog",
    ]


def test_check_and_show_take_the_packaged_names(tmp_path: Path) -> None:
    result = runner.invoke(app, ["policy", "show", "hpf:base"])
    assert result.exit_code == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert all(set(role["tables"]) <= {"*"} for role in shown["roles"].values())
    tpch = Path(__file__).resolve().parents[1] / "fixtures" / "tpch_catalog.yaml"
    result = runner.invoke(app, ["policy", "check", "hpf:base", "--catalog", str(tpch)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("hpf:base: ok: 4 role(s), 4 purpose(s), checked against ")
    assert '    "*" (any table not listed)\n' in result.stdout
    result = runner.invoke(app, ["policy", "check", "hpf:default", "--catalog", str(tpch)])
    assert result.exit_code == 2 and result.stderr.splitlines()[-1].startswith(
        "13 problem(s) [POLICY_FILE_INVALID]"  # its 12 tables, and the consent issuer it names
    )
    result = runner.invoke(app, ["policy", "show", "hpf:nope"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "error: 'hpf:nope': no packaged policy has that name; the packaged policies are hpf:base, hpf:default"
    )
