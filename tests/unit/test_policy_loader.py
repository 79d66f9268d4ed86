"""Policy files: validation with the exact line, ``extends`` merging and tightening, cycles, the shipped files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpf.federation.catalog import Catalog
from hpf.federation.errors import ConfigError
from hpf.federation.hpf_schema import DEMO_CONSENT_ISSUER, demo_catalog
from hpf.policies import DEFAULT_POLICY
from hpf.policies.loader import check_against_catalog, check_policy, load_policy

# the demo catalog, publishing the consent service the default policy names (a key nobody here signs with)
ISSUERS = [{"id": DEMO_CONSENT_ISSUER, "key": "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="}]
DEMO = Catalog.model_validate(demo_catalog({"shanghai": "127.0.0.1:1"}, issuers=ISSUERS))

BASE = """\
version: 1
purposes:
  loan-review: checking a loan applicant
  statistics: aggregate reporting
classes:
  public: [output, filter, group, aggregate]
  sensitive: [filter, aggregate]
roles:
  caseworker:
    aggregates: [count, sum, avg]
    min_group_size: 5
    rate_limit: {requests: 120, per_seconds: 60}
    tables:
      deposits: {}
      withdrawals: {}
      loans:
        purposes: [loan-review]
        columns: {status: [filter, group, output]}
  analyst:
    aggregates: [count, sum]
    min_group_size: 10
    tables:
      deposits: {}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    return info.value


def test_a_good_file_loads_and_knows_where_each_field_was_written(tmp_path: Path) -> None:
    path = write(tmp_path, "base.yaml", BASE)
    policy = load_policy(path)
    assert policy.roles["caseworker"].tables["loans"].purposes == ["loan-review"]
    assert policy.where("roles", "caseworker", "min_group_size") == f"{path}:11"
    assert policy.where("roles", "caseworker", "tables", "loans", "columns", "status") == f"{path}:18"
    assert policy.where("roles", "nobody", "tables") == f"{path}:8"  # nearest written parent: roles


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        (
            "min_group_size: 5",
            "min_group_size: 0",
            11,
            "roles.caseworker.min_group_size: min_group_size (k) must be at least 1",
        ),
        (
            "aggregates: [count, sum, avg]",
            "aggregates: [count, median]",
            10,
            "roles.caseworker.aggregates[1]: unknown aggregate 'median'",
        ),
        (
            "{status: [filter, group, output]}",
            "{status: [filter, show]}",
            18,
            "roles.caseworker.tables.loans.columns.status[1]: unknown use 'show'",
        ),
        (
            "{requests: 120, per_seconds: 60}",
            "{requests: 0, per_seconds: 60}",
            12,
            "roles.caseworker.rate_limit.requests: requests must be at least 1",
        ),
        (
            "{requests: 120, per_seconds: 60}",
            "{requests: 9, per_seconds: -1}",
            12,
            "roles.caseworker.rate_limit.per_seconds: per_seconds must be positive",
        ),
        (
            "      withdrawals: {}",
            "      withdrawals: {consent: maybe}",
            15,
            "roles.caseworker.tables.withdrawals.consent: Input should be 'required' or 'optional'",
        ),
        ("  analyst:", "  analist:", 19, "roles.analist: unknown role 'analist'"),
        (
            '    tables:\n      deposits: {}\n"""',
            '    tabels:\n      deposits: {}\n"""',
            22,
            "roles.analyst.tabels: unknown key",
        ),
        (
            "  sensitive: [filter, aggregate]",
            "  secret: [filter]",
            7,
            "classes.secret: Input should be 'identifier', 'public', 'sensitive' or 'commercial'",
        ),
        ("version: 1", "version: 2", 1, "version: Input should be 1"),
    ],
)
def test_errors_name_the_file_and_exact_line(tmp_path: Path, old: str, new: str, line: int, expected: str) -> None:
    text = (BASE + '"""').replace(old, new).removesuffix('"""')
    assert text != BASE
    path = write(tmp_path, "node.yaml", text)
    err = error(path)
    assert err.code == "POLICY_FILE_INVALID"
    assert any(problem.startswith(f"{path}:{line}: {expected}") for problem in err.message.splitlines()), err.message


@pytest.mark.parametrize(
    ("old", "new", "line", "path"),
    [
        ("  sensitive: [filter, aggregate]", "  sensitive: [filter, group, aggregate]", 7, "classes.sensitive"),
        (
            "    tables:\n      deposits: {}\n      withdrawals",
            "    classes: {public: [group]}\n    tables:\n      deposits: {}\n      withdrawals",
            13,
            "roles.caseworker.classes.public",
        ),
        (
            "{status: [filter, group, output]}",
            "{status: [filter, group]}",
            18,
            "roles.caseworker.tables.loans.columns.status",
        ),
    ],
)
def test_group_without_output_is_refused_with_its_line(
    tmp_path: Path, old: str, new: str, line: int, path: str
) -> None:
    # the slot layout is public and the asker decrypts every cell: a group key's values always reach them
    text = BASE.replace(old, new)
    assert text != BASE
    node = write(tmp_path, "node.yaml", text)
    err = error(node)
    assert err.code == "POLICY_FILE_INVALID"
    assert err.message == f"{node}:{line}: {path}: group reveals the key's values: add output"


def test_group_without_output_in_a_file_that_extends_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    node = write(
        tmp_path,
        "node.yaml",
        "version: 1\nextends: base.yaml\nroles:\n  analyst:\n    tables:\n      deposits:\n"
        "        columns: {city_code: [group]}\n",
    )
    assert error(node).message == (
        f"{node}:7: roles.analyst.tables.deposits.columns.city_code: group reveals the key's values: add output"
    )


def test_a_missing_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "node.yaml", BASE.replace("    min_group_size: 10\n", ""))
    assert error(path).message == f"{path}:19: roles.analyst.min_group_size: required, but missing"


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = BASE.replace("min_group_size: 5", "min_group_size: 0").replace(
        "aggregates: [count, sum]", "aggregates: [max]"
    )
    lines = error(write(tmp_path, "node.yaml", text)).message.splitlines()
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in lines] == ["11", "20"]


def test_an_undeclared_purpose_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "node.yaml", BASE.replace("purposes: [loan-review]", "purposes: [loan-review, audit]"))
    err = error(path)
    assert err.code == "POLICY_FILE_INVALID"
    assert err.message == (
        f"{path}:17: roles.caseworker.tables.loans.purposes[1]: purpose 'audit' is not declared in purposes "
        "(declared: loan-review, statistics)"
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("  loan-review: checking", '  "loan-review\\n": checking'),  # a purpose code
        ("      deposits: {}\n      withdrawals", '      "deposits\\n": {}\n      withdrawals'),  # a table
        ("columns: {status:", 'columns: {"status\\r":'),  # a column
        ("      deposits: {}\n      withdrawals", '      "depo\\0sits": {}\n      withdrawals'),
    ],
    ids=["purpose ending in \\n", "table ending in \\n", "column ending in \\r", "table with a NUL"],
)
def test_names_with_a_line_break_or_nul_are_refused(tmp_path: Path, old: str, new: str) -> None:
    assert old in BASE
    err = error(write(tmp_path, "node.yaml", BASE.replace(old, new, 1)))
    assert err.code == "POLICY_FILE_INVALID" and "must be lower-case" in err.message, err.message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node.yaml",
        BASE.replace("      deposits: {}\n      withdrawals", "      deposits: {\n      withdrawals"),
    )
    err = error(path)
    assert err.code == "CONFIG_SYNTAX"
    assert err.message == (
        f"{path}:16: YAML syntax: expected ',' or '}}', but got '<scalar>' (column 7), "
        "while parsing a flow mapping begun on line 14"
    )


def test_an_unquoted_wildcard_is_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "node.yaml", BASE + "      *: {}\n")
    assert error(path).code == "CONFIG_SYNTAX"
    path.write_text(BASE + '      "*": {}\n')
    assert "*" in load_policy(path).roles["analyst"].tables


def test_a_key_written_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "node.yaml", BASE + "    min_group_size: 1\n")
    err = error(path)
    assert err.message == f"{path}:24: roles.analyst.min_group_size: written twice (first on line 21)"


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert (
        error(write(tmp_path, "empty.yaml", "# nothing\n")).message == f"{tmp_path / 'empty.yaml'}:1: the file is empty"
    )
    assert error(tmp_path / "absent.yaml").code == "CONFIG_NOT_FOUND"
    err = error(write(tmp_path, "list.yaml", "- 1\n"))
    assert err.message.startswith(f"{tmp_path / 'list.yaml'}:1: (top level): Input should be a valid dictionary")


# -- extends -------------------------------------------------------------------------------------------


def test_extends_merges_mappings_and_replaces_lists_and_scalars(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    node = write(
        tmp_path,
        "node.yaml",
        """\
        version: 1
        extends: base.yaml
        roles:
          caseworker:
            min_group_size: 10
            aggregates: [count]
            tables:
              withdrawals: ~
              loans:
                columns: {status: [filter]}
          analyst: ~
        """,
    )
    policy = load_policy(node)
    caseworker = policy.roles["caseworker"]
    assert caseworker.min_group_size == 10 and caseworker.aggregates == ["count"]
    assert caseworker.rate_limit is not None and caseworker.rate_limit.requests == 120  # kept from the base
    assert set(caseworker.tables) == {"deposits", "loans"}  # withdrawals removed
    assert caseworker.tables["loans"].purposes == ["loan-review"]  # merged key by key
    assert caseworker.tables["loans"].columns == {"status": ["filter"]}
    assert set(policy.roles) == {"caseworker"}
    assert set(policy.purposes) == {"loan-review", "statistics"}
    assert policy.where("roles", "caseworker", "min_group_size") == f"{node}:5"
    assert policy.where("roles", "caseworker", "rate_limit") == f"{tmp_path / 'base.yaml'}:12"


def test_an_error_in_the_base_names_the_base_file_and_line(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", BASE.replace("aggregates: [count, sum]", "aggregates: [count, mode]"))
    node = write(
        tmp_path, "node.yaml", "version: 1\nextends: base.yaml\nroles:\n  caseworker:\n    min_group_size: 0\n"
    )
    lines = error(node).message.splitlines()
    assert lines == [
        f"{node}:5: roles.caseworker.min_group_size: min_group_size (k) must be at least 1 (got 0); "
        "1 releases every group",
        f"{base}:20: roles.analyst.aggregates[1]: unknown aggregate 'mode': aggregates are count, sum, avg, var_pop, "
        "var_samp, stddev_pop, stddev_samp",
    ]


def test_extends_chains_and_refuses_cycles(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    write(tmp_path, "region.yaml", "version: 1\nextends: base.yaml\nroles: {analyst: {min_group_size: 20}}\n")
    node = write(tmp_path, "node.yaml", "version: 1\nextends: region.yaml\nroles: {analyst: {min_group_size: 30}}\n")
    assert load_policy(node).roles["analyst"].min_group_size == 30
    assert load_policy(tmp_path / "region.yaml").roles["analyst"].min_group_size == 20

    a = write(tmp_path, "a.yaml", "version: 1\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "version: 1\n\nextends: a.yaml\n")
    err = error(a)
    assert err.code == "POLICY_FILE_INVALID"
    loop = "(a.yaml -> b.yaml -> a.yaml)"
    assert err.message == f"{tmp_path / 'b.yaml'}:3: extends: a.yaml leads back to a file already extended {loop}"
    selfish = write(tmp_path, "self.yaml", "version: 1\nextends: ./self.yaml\n")
    assert "leads back" in error(selfish).message


def test_extends_a_missing_or_malformed_base(tmp_path: Path) -> None:
    node = write(tmp_path, "node.yaml", "version: 1\nextends: nowhere.yaml\n")
    assert error(node).message == f"{node}:2: extends: {tmp_path / 'nowhere.yaml'}: file not found"
    node = write(tmp_path, "node.yaml", "version: 1\nextends: [a.yaml]\n")
    assert error(node).message.startswith(f"{node}:2: extends: give the base policy, a packaged one (hpf:base")


# -- the shipped files ---------------------------------------------------------------------------------


def test_the_defaults_validate_against_the_demo_catalog() -> None:
    policy = load_policy(DEFAULT_POLICY)
    assert check_against_catalog(policy, DEMO) == []
    assert set(policy.roles) == {"caseworker", "analyst", "operator", "integrator"}  # auditors run no queries
    assert policy.roles["caseworker"].min_group_size == 5
    assert policy.roles["analyst"].min_group_size == 10
    loans = policy.roles["integrator"].tables["loans"]  # statistics for loan review: DP, no free-text consent
    assert loans.consent == "optional" and loans.purposes == ["loan-review"]
    lookups = policy.roles["integrator"].lookups
    assert lookups is not None and (lookups.consent, lookups.consent_issuers) == ("token", [DEMO_CONSENT_ISSUER])


def test_the_strict_example_tightens_the_defaults() -> None:
    strict = load_policy(DEFAULT_POLICY.with_name("strict-node.example.yaml"))
    default = load_policy(DEFAULT_POLICY)
    assert check_against_catalog(strict, DEMO) == []
    assert strict.roles["caseworker"].min_group_size > default.roles["caseworker"].min_group_size
    assert (
        "withdrawals" in default.roles["caseworker"].tables and "withdrawals" not in strict.roles["caseworker"].tables
    )
    assert default.asker_rule("caseworker", "lookup") is None
    rule = strict.asker_rule("caseworker", "lookup")
    assert rule is not None and rule[0].provinces == ["same"] and rule[1] == "askers.lookup"
    assert strict.asker_rule("caseworker", "query") is None
    integrator = strict.asker_rule("integrator", "lookup")
    assert integrator is not None and integrator[0].anywhere


def test_catalog_check_names_unknown_tables_and_columns_with_lines(tmp_path: Path) -> None:
    text = (
        BASE.replace("      withdrawals: {}", "      withdrawal: {}").replace(
            "{status: [filter, group, output]}", "{stat: [filter]}"
        )
        + '      "*": {columns: {colour: [filter]}}\n'
    )
    path = write(tmp_path, "node.yaml", text)
    assert check_against_catalog(load_policy(path), DEMO) == [
        f"{path}:15: roles.caseworker.tables.withdrawal: the catalog has no table 'withdrawal'; "
        "did you mean 'withdrawals'?",
        f"{path}:18: roles.caseworker.tables.loans.columns.stat: table 'loans' of the catalog has no column 'stat'; "
        "did you mean 'status'?",
        f"{path}:24: roles.analyst.tables.*.columns.colour: no table of the catalog has a column 'colour'",
    ]


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "node.yaml",
        """\
        version: 1
        roles:
          caseworker: &base
            aggregates: [count]
            min_group_size: 3
            tables: {deposits: {}}
          analyst:
            <<: *base
            min_group_size: 9
        """,
    )
    policy = load_policy(path)
    assert policy.roles["analyst"].min_group_size == 9 and policy.roles["analyst"].aggregates == ["count"]


def test_a_dp_role_on_a_table_without_a_contribution_bound_is_a_catalog_problem() -> None:
    policy = load_policy(DEFAULT_POLICY)
    doc = demo_catalog({"shanghai": "127.0.0.1:1"}, issuers=ISSUERS)
    del doc["tables"]["loans"]["contribution"]
    problems = check_against_catalog(policy, Catalog.model_validate(doc))
    # caseworkers, analysts and integrators answer loans with DP; operators are exact, so not named
    assert [p.split(": ")[1] for p in problems] == [
        "roles.caseworker.tables.loans",
        "roles.analyst.tables.loans",
        "roles.integrator.tables.loans",
    ]
    assert all("DP_UNBOUNDED" in p for p in problems)


# -- every problem at once -----------------------------------------------------------------------------------

SEVERAL_MISTAKES = """\
version: 1
purposes:
  statistics: aggregate reporting
roles:
  caseworker:
    aggregates: [count, median]
    min_group_size: 5
    purposes: [audit]
    tables:
      deposits:
        columns: {amount_fen: [aggregate, shown]}
      withdrawal: {}
      loans:
        purposes: [loan-review]
        columns: {stat: [filter]}
    lookups: {purposes: [screening]}
  analyst:
    aggregates: [count]
    min_group_size: 10
    min_group_size: 20
    tables: {deposits: {}}
"""


def test_every_independent_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    """Before, a key written twice hid every other problem, a value the format refuses hid the undeclared
    purposes, and both hid what the catalog lacks: each fix showed the next. Now one check names them all."""
    path = write(tmp_path, "node.yaml", SEVERAL_MISTAKES)
    checked = check_policy(path, DEMO)
    assert checked.policy is None
    assert checked.problems == [
        f"{path}:20: roles.analyst.min_group_size: written twice (first on line 19)",
        f"{path}:6: roles.caseworker.aggregates[1]: unknown aggregate 'median': aggregates are count, sum, avg, "
        "var_pop, var_samp, stddev_pop, stddev_samp",
        f"{path}:11: roles.caseworker.tables.deposits.columns.amount_fen[1]: unknown use 'shown': uses are output, "
        "filter, group, aggregate",
        f"{path}:8: roles.caseworker.purposes[0]: purpose 'audit' is not declared in purposes (declared: statistics)",
        f"{path}:14: roles.caseworker.tables.loans.purposes[0]: purpose 'loan-review' is not declared in purposes "
        "(declared: statistics)",
        f"{path}:16: roles.caseworker.lookups.purposes[0]: purpose 'screening' is not declared in purposes "
        "(declared: statistics)",
        f"{path}:12: roles.caseworker.tables.withdrawal: the catalog has no table 'withdrawal'; did you mean "
        "'withdrawals'?",
        f"{path}:15: roles.caseworker.tables.loans.columns.stat: table 'loans' of the catalog has no column 'stat'; "
        "did you mean 'status'?",
    ]
    assert checked.hints == [
        "write each key once",
        "see the comments in policies/base.yaml for the format",
        "declare the purpose under purposes, or fix its name",
        "compare the policy with the catalog",
    ]
    # loading (what a node does) reports the same problems of the file itself, all of them
    err = error(path)
    assert err.code == "POLICY_FILE_INVALID"
    assert err.message.splitlines() == checked.problems[:6]


def test_problems_in_the_base_and_the_extending_file_are_reported_together(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        BASE.replace("aggregates: [count, sum]", "aggregates: [count, mode]") + "    min_group_size: 11\n",
    )
    node = write(
        tmp_path,
        "node.yaml",
        "version: 1\nextends: base.yaml\nroles:\n  caseworker:\n    min_group_size: 0\n    purposes: [audit]\n"
        "    purposes: [statistics, audit]\n",
    )
    base = tmp_path / "base.yaml"
    assert error(node).message.splitlines() == [
        f"{node}:7: roles.caseworker.purposes: written twice (first on line 6)",
        f"{base}:24: roles.analyst.min_group_size: written twice (first on line 21)",
        f"{node}:5: roles.caseworker.min_group_size: min_group_size (k) must be at least 1 (got 0); "
        "1 releases every group",
        f"{base}:20: roles.analyst.aggregates[1]: unknown aggregate 'mode': aggregates are count, sum, avg, var_pop, "
        "var_samp, stddev_pop, stddev_samp",
        f"{node}:7: roles.caseworker.purposes[1]: purpose 'audit' is not declared in purposes (declared: "
        "loan-review, statistics)",
    ]


def test_a_good_file_has_no_problems_and_its_policy(tmp_path: Path) -> None:
    checked = check_policy(write(tmp_path, "node.yaml", BASE), DEMO)
    assert checked.problems == [] and checked.hints == [] and checked.policy is not None
    assert checked.policy.model_dump() == load_policy(tmp_path / "node.yaml").model_dump()


def test_what_leaves_nothing_to_check_still_stops_at_once(tmp_path: Path) -> None:
    """A file that cannot be read or parsed, or a base that cannot be found, is the one problem to fix first."""
    syntax = write(tmp_path, "syntax.yaml", BASE + "  oops: [\n")
    with pytest.raises(ConfigError) as info:
        check_policy(syntax, DEMO)
    assert info.value.code == "CONFIG_SYNTAX"
    missing = write(tmp_path, "node.yaml", "version: 1\nextends: gone.yaml\nroles: {x: {}}\n")
    with pytest.raises(ConfigError) as info:
        check_policy(missing, DEMO)
    assert info.value.message == f"{missing}:2: extends: {tmp_path / 'gone.yaml'}: file not found"


def test_the_model_and_loader_examples() -> None:
    import doctest

    import hpf.policies.loader
    import hpf.policies.model

    for module in (hpf.policies.model, hpf.policies.loader):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# -- malformed files: a clear error with a code, never a hang, never a traceback -------------------------------


def _check_within(path: Path, seconds: float = 10.0) -> BaseException | str:
    """What ``check_policy(path)`` raised (or "no error"), or "blocked" when it is still running after ``seconds``."""
    import threading

    got: list[BaseException | str] = []

    def run() -> None:
        try:
            check_policy(path)
            got.append("no error")
        except BaseException as err:  # noqa: BLE001 - a RecursionError or ValueError is what this looks for
            got.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return got[0] if got else "blocked"


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["version: 1", "a0: &a0 [" + ", ".join(["count"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"roles: {{caseworker: {{aggregates: *a{levels - 1}}}}}"]) + "\n"


MALFORMED = {
    "nested lists": ("version: 1\nroles: " + "[" * 3000 + "]" * 3000 + "\n", "CONFIG_TOO_COMPLEX", "nested deeper"),
    "nested mappings": (
        "version: 1\nroles:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(1000)),
        "CONFIG_TOO_COMPLEX",
        "nested deeper",
    ),
    "an alias inside its own anchor": ("version: 1\nroles: &r\n  x: *r\n", "CONFIG_TOO_COMPLEX", "inside the value"),
    "an alias bomb": (_alias_bomb(), "CONFIG_TOO_COMPLEX", "values once its aliases are expanded"),
    "extends a name with a NUL": ('version: 1\nextends: "base\\0.yaml"\nroles: {}\n', "POLICY_FILE_INVALID", "extends"),
    "extends a name too long": (f'version: 1\nextends: "{"b" * 5000}"\nroles: {{}}\n', "POLICY_FILE_INVALID", "long"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_policy_file_gets_a_clear_error_at_once(name: str, tmp_path: Path) -> None:
    text, code, says = MALFORMED[name]
    path = tmp_path / "node.yaml"
    path.write_text(text)
    got = _check_within(path)
    assert isinstance(got, ConfigError), f"{name}: {got!r}"
    assert got.code == code and says in got.message and str(path) in got.message, got.message


def test_an_extended_malformed_base_is_named_as_the_base(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(_alias_bomb())
    node = tmp_path / "node.yaml"
    node.write_text("version: 1\nextends: base.yaml\nroles: {}\n")
    got = _check_within(node)
    assert isinstance(got, ConfigError) and got.code == "CONFIG_TOO_COMPLEX", repr(got)
    assert str(tmp_path / "base.yaml") in got.message


def test_a_policy_file_that_is_a_fifo_a_device_or_too_large_is_refused_without_reading_it(tmp_path: Path) -> None:
    import contextlib
    import os

    from hpf.federation.config_files import MAX_CONFIG_BYTES

    fifo = tmp_path / "node.yaml"
    os.mkfifo(fifo)
    try:
        got = _check_within(fifo)
    finally:
        with contextlib.suppress(OSError):  # let a reader blocked opening it go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert isinstance(got, ConfigError) and got.code == "CONFIG_UNREADABLE", repr(got)
    got = _check_within(Path("/dev/zero"))  # read whole, it would never end and fill the memory
    assert isinstance(got, ConfigError) and got.code == "CONFIG_UNREADABLE", repr(got)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:  # sparse: no disk used
        fh.truncate(MAX_CONFIG_BYTES + 1)
    got = _check_within(big)
    assert isinstance(got, ConfigError) and got.code == "CONFIG_TOO_LARGE", repr(got)


def test_a_policy_with_anchors_and_aliases_of_a_sane_size_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(
        "version: 1\nextends: hpf:base\nroles:\n  caseworker: &cw\n    aggregates: [count, sum]\n"
        "    min_group_size: 5\n    tables: {'*': {}}\n  operator: *cw\n"
    )
    assert load_policy(path).roles["operator"].aggregates == ["count", "sum"]
