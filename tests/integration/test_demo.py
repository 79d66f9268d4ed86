"""`hpf demo --once`: real node and coordinator processes with mTLS, example queries equal to the oracle."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml


def _hpf(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_demo_once_runs_examples_equal_to_oracle(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    # enough rows that the DP examples' groups clear their threshold (3 noise sd of the count) beyond doubt: the
    # bank's open loans (about 1,360 against 448, the sd 149) and the analyst's accounts by status (sd about 48)
    result = _hpf("demo", "--nodes", "3", "--rows", "100000", "--seed", "11", "--data", str(data), "--once")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    # the operator's exact queries (purpose statistics or operations), then the caseworker's lookups
    assert out.count("equals DuckDB over the pooled files") == 3 + 3
    assert out.count("$ hpf query --profile " + str(data / "client-operator.yaml") + " --purpose ") == 3
    # the caseworker's, the analyst's and the bank's answers are DP: each shown COUNT and SUM within 6 sd of the
    # clamped oracle
    assert out.count("sd of DuckDB over the pooled files (clamped), epsilon 1 spent)") == 3
    within = [float(line.split("within ")[1].split(" sd")[0]) for line in out.splitlines() if "; within " in line]
    assert len(within) == 3 and all(0 <= w <= 6 for w in within)
    assert out.count("differentially private: epsilon 1 (delta 1e-08) spent of your budget at each region") == 3
    caseworker = out[out.index("## Active accounts and balances per city (caseworker: differentially private") :]
    caseworker = caseworker[: caseworker.index("\n## ")]
    assert "differentially private: epsilon 1 (delta 1e-08) spent" in caseworker, caseworker
    flowing = " ".join(out.split())  # notes under a table wrap at its width
    assert "noise standard deviation: COUNT(*) ±" in flowing and "SUM(outstanding_fen) ±" in flowing
    assert flowing.count("at most 2 runs (epsilon 2) can be charged, the bound you signed") == 3
    # the explained DP question: what it costs, before it is asked
    assert "What the analyst's next question would cost" in out and "3 of 3 region(s) would answer" in out
    assert "answer: DP: epsilon 1 per answer, 30 of 30 left this month" in out
    # the threshold: 20 rows, or 3 noise sd of the count where that is more (the count's sd is stated beside it)
    under = re.search(r"groups under (\d+) suppressed; noise sd count\(\*\) ±([\d,.]+)", out)
    assert under is not None
    assert int(under.group(1)) == max(20, math.ceil(3 * float(under.group(2).replace(",", "")) - 0.3))
    assert "masks: every region's answer is masked; summed over at least 3 regions" in out
    assert "DIFFERS" not in out and "NOT the" not in out and "MORE THAN" not in out
    assert "; exactly the " in out and "planted among them" in out  # the screening
    assert "the log holds keyed hashes only: no identifier appears in it" in out
    assert "error: [PERSON_ID_INVALID]" in out
    assert "[PLAN_NOT_ADDITIVE]" in out  # the refused examples say why, and which rule refused
    assert "error: [PLAN_EXPRESSION_NOT_ALLOWED] COLUMNS(...) is not part of the federation's SQL" in out
    assert "error: [PLAN_CAST_NOT_TOTAL]" in out
    assert "[POLICY_PURPOSE_REQUIRED]" in out and "(rule: shanghai: roles.caseworker" in out
    assert "0 of 3 region(s) would answer" in out  # the explained refusal
    assert "3 logs, 33 entries, every root and checkpoint signature verified" in out
    for node in ("shanghai", "hangzhou", "nanjing"):
        assert (data / node / "deposits.parquet").exists()
        assert f"node {node} serving" in result.stderr
    profile = yaml.safe_load((data / "client.yaml").read_text())
    assert profile["tls"]["cert"].endswith("caseworker.pem")  # TLS by default, no insecure flag
    assert "insecure" not in profile
    operator = yaml.safe_load((data / "client-operator.yaml").read_text())
    assert operator["tls"]["cert"].endswith("operator.pem") and "insecure" not in operator
    # the node processes were stopped: their ports are free again
    assert "coordinator serving" in result.stderr

    # the budgets are kept across runs: with 8.5 more of the bank's 10 spent at every region (half an epsilon left), a
    # second run shows the analyst's budget one answer lower and the bank refused, as its explain predicts
    from hpf.node.privacy_budget import Budget, PrivacyLedger

    for node in ("shanghai", "hangzhou", "nanjing"):
        with PrivacyLedger.open(data / "state" / node / "privacy") as ledger:
            ledger.charge("bank", 8.5, 1e-8, Budget(10, 1e-6, "month"), rule="test", party=node)
    again = _hpf("demo", "--nodes", "3", "--rows", "100000", "--seed", "11", "--data", str(data), "--once")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "answer: DP: epsilon 1 per answer, 29 of 30 left this month" in again.stdout
    assert again.stdout.count("sd of DuckDB over the pooled files (clamped), epsilon 1 spent)") == 2  # not the bank
    assert "error: [POLICY_PRIVACY_BUDGET]" in again.stdout
    assert "(refused, as the explain said: 0.5 of the integrator's epsilon 10 is left this month" in again.stdout


def test_demo_refuses_bad_arguments(tmp_path: Path) -> None:
    result = _hpf("demo", "--nodes", "42", "--data", str(tmp_path / "d"), "--once")
    assert result.returncode == 2
    assert "DEMO_ARGS" in result.stderr and "--nodes takes 3 to 41, not 42" in result.stderr
    result = _hpf("demo", "--rows", "10", "--data", str(tmp_path / "d"), "--once")
    assert result.returncode == 2 and "--rows" in result.stderr
    result = _hpf("demo", "--nodes", "2", "--data", str(tmp_path / "d"), "--once")  # masks need 3 regions
    assert result.returncode == 2
    assert "--nodes takes 3 to 41, not 2" in result.stderr and "secure_aggregation.min_participants" in result.stderr


def test_query_cli_json_and_csv_against_demo_layout(tmp_path: Path) -> None:
    """`hpf query` over the files a demo leaves: start the parties, query as JSON and CSV, exact (the operator) and
    DP (the analyst, the caseworker), stop."""
    from hpf.demo.launcher import ensure_data, layout_for, running_parties, write_configs

    layout = layout_for(tmp_path / "q", 3)  # masks: every region sums its answer with at least 3
    ensure_data(layout, 3000, 5, lambda _msg: None)
    write_configs(layout, 0)
    sql = "SELECT status, COUNT(*) AS n FROM loans GROUP BY status ORDER BY status"
    dp_sql = "SELECT status, COUNT(*) AS n, SUM(outstanding_fen) AS owed FROM loans GROUP BY status"
    with running_parties(layout, lambda _msg: None):
        profile, analyst = str(layout.profile_of("operator")), str(layout.profile_of("analyst"))
        as_json = _hpf("query", "--profile", profile, "--purpose", "statistics", "--format", "json", sql)
        as_csv = _hpf("query", "--profile", profile, "--purpose", "statistics", "--format", "csv", sql)
        caseworker = _hpf("query", "--profile", str(layout.client_profile), "--purpose", "loan-review", sql)
        refused = _hpf("query", "--profile", str(layout.client_profile), "SELECT COUNT(person_id) FROM loans")
        explained = _hpf("query", "--profile", analyst, "--purpose", "statistics", "--explain", dp_sql)
        dp_json = _hpf("query", "--profile", analyst, "--purpose", "statistics", "--format", "json", dp_sql)
        dp_table = _hpf("query", "--profile", analyst, "--purpose", "statistics", dp_sql)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["columns"] == ["status", "n"]
    assert doc["regions"] == {"answered": ["shanghai", "hangzhou", "nanjing"], "missing": []}
    assert doc["privacy"] == {"mode": "exact"} and doc["suppressed_groups"] == 0  # operators: exact
    counts = [r[1] for r in doc["rows"]]  # a group some region holds fewer than k rows of is withheld (NULL)
    assert any(isinstance(n, int) for n in counts)
    assert sum(n is None for n in counts) <= doc["withheld_groups"]
    assert all(isinstance(n, int) or n is None for n in counts)
    assert as_csv.returncode == 0
    lines = as_csv.stdout.strip().splitlines()
    assert lines[0] == "status,n" and len(lines) == len(doc["rows"]) + 1
    # the caseworker's aggregate is DP, and its answer says so
    assert caseworker.returncode == 0, caseworker.stderr
    flowing = " ".join(caseworker.stdout.split())
    assert "differentially private: epsilon 1 (delta 1e-08) spent of your budget at each region" in flowing
    assert "noise standard deviation: COUNT(*) ±" in flowing
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: [PLAN_IDENTIFIER_MISUSE]")
    # the analyst's answers are DP: the explain states the cost and the budget, the answer its noise
    assert explained.returncode == 0, explained.stderr
    assert "answer: DP: epsilon 1 per answer, 30 of 30 left this month" in explained.stdout
    assert "noise sd count(*) ±" in explained.stdout and "sum(outstanding_fen) ±" in explained.stdout
    assert dp_json.returncode == 0, dp_json.stderr
    dp = json.loads(dp_json.stdout)
    assert dp["privacy"]["mode"] == "dp" and dp["privacy"]["epsilon"] == 1.0
    count_sd = dp["privacy"]["noise"][0]["sd"]
    assert dp["privacy"]["threshold"] == max(20, math.ceil(3 * count_sd))  # threshold, or 3 sd of the count
    assert [n["component"] for n in dp["privacy"]["noise"]] == [
        "COUNT(*)",
        "COUNT(outstanding_fen)",
        "SUM(outstanding_fen)",
    ]
    assert all(n["sd"] > 0 for n in dp["privacy"]["noise"])
    assert all(r[1] >= dp["privacy"]["threshold"] for r in dp["rows"])  # groups under the threshold are not shown
    assert len(dp["rows"]) + dp["suppressed_groups"] == 5  # 3 statuses, NULL and "other": every cell is noised
    assert dp_table.returncode == 0, dp_table.stderr
    assert "differentially private: epsilon 1 (delta 1e-08) spent of your budget at each region" in dp_table.stdout
    # one line says what the noise did, where it did it: groups not shown, and a sum noise made negative (the true
    # sum of outstanding_fen, bounded below by 0, cannot be)
    lines = dp_table.stdout.splitlines()
    shown = [[c.strip() for c in line.strip("│").split("│")] for line in lines if line.startswith("│")]
    negative = sum(1 for row in shown if row[2].startswith("-"))
    hidden = 5 - len(shown)  # 3 statuses, NULL and "other"
    said = " ".join(line for line in lines if "noisy count under" in line or "is negative in" in line)
    assert (f"{hidden} group{'s' if hidden > 1 else ''} with a noisy count under " in said) == (hidden > 0), said
    assert (f"owed is negative in {negative} row" in said) == (negative > 0), said


def test_node_serves_plaintext_only_with_explicit_insecure_and_warns(tmp_path: Path) -> None:
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from hpf.demo.launcher import free_ports

    catalog = {
        "federation": "t",
        "nodes": [{"id": "north", "address": "127.0.0.1:1"}],
        "tables": {"t": {"columns": {"a": {"type": "BIGINT", "class": "public"}}}},
    }
    (tmp_path / "federation.yaml").write_text(yaml.safe_dump(catalog))
    (tmp_path / "t.csv").write_text("a\n1\n")
    (port,) = free_ports(1)
    config = {"node_id": "north", "listen": f"127.0.0.1:{port}", "catalog": "federation.yaml", "tables": {"t": "t.csv"}}
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))

    refused = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), timeout=30)
    assert refused.returncode == 2 and "hpf pki init" in refused.stderr  # no TLS, no --insecure: refused
    # without TLS a node still verifies every signed question, so it needs the federation CA
    untrusting = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure", timeout=30)
    assert untrusting.returncode == 2 and "federation_ca" in untrusting.stderr
    from hpf.federation.trust.pki import init_federation

    init_federation(tmp_path / "pki", ["north"], federation="t")
    config["federation_ca"] = "pki/ca.pem"
    config["state_dir"] = "state"
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))
    unfitting = _hpf("node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure", timeout=30)
    assert unfitting.returncode == 2 and "no policy" in unfitting.stderr  # the default names tables t lacks
    policy = {"version": 1, "roles": {"analyst": {"aggregates": ["count"], "min_group_size": 5, "tables": {"t": {}}}}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    config["policy"] = "policy.yaml"
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))

    proc = subprocess.Popen(
        [sys.executable, "-m", "hpf.cli", "node", "serve", "--config", str(tmp_path / "node.yaml"), "--insecure"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="hpf.v1.Node"), timeout=1).status
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert "TLS is off" in stderr and "unencrypted" in stderr


def test_lookup_and_screen_cli_against_demo_layout(tmp_path: Path) -> None:
    """`hpf lookup`, `hpf screen` and `hpf audit show --person` over a demo's parties, checked against DuckDB."""
    import csv

    from hpf.demo.launcher import ensure_data, layout_for, running_parties, write_configs
    from hpf.demo.lookups import write_applicants
    from hpf.demo.oracle import pooled_person_facts
    from hpf.demo.synth.generator import planted_duplicate_loans
    from hpf.federation.catalog import load_catalog

    layout = layout_for(tmp_path / "l", 4)  # --exclude-home leaves 3 regions, the fewest a masked sum takes
    ensure_data(layout, 20000, 3, lambda _msg: None)
    write_configs(layout, 0)
    catalog = load_catalog(layout.catalog)

    def files(table: str, node: str) -> list[str]:
        return [str(layout.data / n / f"{table}.parquet") for n in layout.node_ids]

    planted = [p.person_id for p in planted_duplicate_loans(3, 20000, layout.node_ids)]
    assert planted, "the generator plants people with loans in two cities"
    import duckdb

    listed = ", ".join(f"'{f}'" for f in files("accounts", "*"))
    con = duckdb.connect()
    others = [
        r[0]
        for r in con.execute(f"SELECT DISTINCT person_id FROM read_parquet([{listed}]) ORDER BY 1 LIMIT 300").fetchall()
    ]
    con.close()
    applicants = sorted(set(others) | set(planted))
    input_csv = tmp_path / "applicants.csv"  # each applicant's consent token, from the demo's consent service
    write_applicants(layout, input_csv, "ref", applicants)
    plain_csv = tmp_path / "no-tokens.csv"  # the same applicants, without their tokens
    plain_csv.write_text("ref,person_id\n" + "".join(f"R{i},{p}\n" for i, p in enumerate(applicants)))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text(f"ref,person_id\nR1,{applicants[0]}\nR2,{applicants[1][:-1]}Q\nR3,12345\n")
    out_csv = tmp_path / "screened.csv"
    person = planted[0]
    caseworker, bank = str(layout.profile_of("caseworker")), str(layout.profile_of("bank"))
    home = layout.node_ids[0]
    with running_parties(layout, lambda _msg: None):
        looked = _hpf("lookup", "-p", caseworker, "--purpose", "loan-review", "--consent", "C1", "-f", "json", person)
        table = _hpf(
            "lookup", "-p", caseworker, "--purpose", "loan-review", "--consent", "C1", "--exclude-home", person
        )
        invalid = _hpf("lookup", "-p", caseworker, "--purpose", "loan-review", "--consent", "C1", person[:-1] + "Q")
        no_consent = _hpf("lookup", "-p", caseworker, "--purpose", "loan-review", person)
        screened = _hpf(
            "screen",
            "-p",
            bank,
            "--input",
            str(input_csv),
            "--check",
            "duplicate-loans",
            "--purpose",
            "loan-review",
            "--batch",
            "100",
            "-o",
            str(out_csv),
        )
        untokened = _hpf("screen", "-p", bank, "--input", str(plain_csv), "--purpose", "loan-review", "--consent", "B1")
        refused_file = _hpf(
            "screen", "-p", bank, "--input", str(bad_csv), "--purpose", "loan-review", "--consent", "B1"
        )
        who = _hpf("audit", "show", str(layout.state(home) / "audit"), "--person", person, "-f", "json")
    assert looked.returncode == 0, looked.stderr
    doc = json.loads(looked.stdout)
    expected = pooled_person_facts(catalog, files, [person])[person]
    assert {k: doc["facts"][k] for k in expected} == expected
    assert doc["facts"]["duplicate_loans"] is True and doc["complete"] is True
    assert table.returncode == 0, table.stderr
    assert f"every region but {home}" in table.stdout and "regions answered: 3 of 3" in table.stdout
    assert invalid.returncode == 2 and "[PERSON_ID_INVALID]" in invalid.stderr and person[:17] not in invalid.stderr
    assert no_consent.returncode == 4 and "[POLICY_CONSENT_REQUIRED]" in no_consent.stderr
    assert screened.returncode == 0, screened.stderr
    with out_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["ref"] for r in rows] == [f"A{i:06d}" for i in range(1, len(applicants) + 1)]
    assert "consent_token" not in rows[0]  # a token is not copied to the results
    # a bank is answered only under each applicant's token: a free-text reference vouches for no one
    assert untokened.returncode == 4 and "[POLICY_CONSENT_REQUIRED]" in untokened.stderr
    assert {r["person_id"] for r in rows if r["duplicate_loans"] == "true"} == set(planted)
    sample = applicants[::25]
    oracle = pooled_person_facts(catalog, files, sample)
    by_id = {r["person_id"]: r for r in rows}
    # a bank screening for a loan review gets what the decision needs, never a balance or contributions
    assert {"loan_cities", "duplicate_loans"} <= rows[0].keys() and {"balance_fen", "contribution_fen"}.isdisjoint(
        rows[0]
    )
    assert all(int(by_id[p][k]) == v for p in sample for k, v in oracle[p].items() if k in rows[0])
    assert f"screened {len(applicants)} applicant(s)" in screened.stderr
    assert f"{len(planted)} with open housing loans in two or more cities" in screened.stderr
    assert refused_file.returncode == 2 and "[PERSON_ID_INVALID]" in refused_file.stderr
    assert (
        "line 3:" in refused_file.stderr
        and "line 4:" in refused_file.stderr
        and "nothing was sent" in refused_file.stderr
    )
    assert applicants[1][:17] not in refused_file.stderr
    assert who.returncode == 0, who.stderr
    entries = json.loads(who.stdout)
    # the caseworker's two lookups and the bank's screenings reached the home region; the refused ones too
    assert [(e["identity"], e["decision"]) for e in entries] == [
        ("caseworker", "allowed"),
        ("caseworker", "refused"),
        ("bank", "allowed"),
        ("bank", "refused"),  # the screening without tokens
    ]
    assert person not in (layout.state(home) / "audit" / "entries.jsonl").read_text()


def test_demo_replaces_a_ca_left_by_an_older_demo(tmp_path: Path) -> None:
    """The demo owns its pki/: a CA naming no federation or another one is replaced, not refused."""
    from hpf.demo.launcher import DemoLayout, _certificates
    from hpf.federation.trust import pki

    layout = DemoLayout(data=tmp_path, node_ids=["shanghai", "hangzhou"])
    pki.init_federation(layout.pki, layout.node_ids, federation="elsewhere")
    made = _certificates(layout, "yrd-demo")
    assert made["federation"] == "yrd-demo" and (layout.pki / "ca.pem") in made["created"]
    assert _certificates(layout, "yrd-demo")["created"] == []  # then kept, as before


def test_a_second_demo_on_a_directory_in_use_says_so(tmp_path: Path) -> None:
    """A demo already serving from a directory holds it: a second one is refused before it touches a file (it
    would rewrite the configs and data the first one's parties use), and the directory is free once the first
    one stops."""
    import fcntl
    import os

    from hpf.demo.data_lock import LOCK_FILE, only_demo

    data = tmp_path / "demo"
    with only_demo(data):
        assert (data / LOCK_FILE).read_text() == str(os.getpid())
        result = _hpf("demo", "--nodes", "3", "--rows", "1000", "--data", str(data), "--once")
        assert result.returncode == 2, result.stderr
        assert f"[DEMO_RUNNING] a demo is already running on {data} (process {os.getpid()})" in result.stderr
        assert sorted(p.name for p in data.iterdir()) == [LOCK_FILE]  # nothing written
    with open(data / LOCK_FILE) as fh:  # released
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_the_ready_lines_of_a_serving_demo_work_when_pasted(tmp_path: Path) -> None:
    """The serving demo prints a query, a lookup of a real person and a screening of a file it wrote: each works
    pasted into another terminal as it is (no PATH set up, no placeholder to fill in)."""
    import shlex
    import signal
    import time

    data = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, "-m", "hpf.cli", "demo", "--nodes", "3", "--rows", "2000", "--data", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 180
        while len(lines) < 3 and time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert len(lines) == 3 and lines[0].startswith("ready: "), lines
        commands = [shlex.split(line.removeprefix("ready:").strip()) for line in lines]
        env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
        results = [subprocess.run(c, capture_output=True, text=True, timeout=120, env=env) for c in commands]
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=30)
    query, lookup, screen = results
    assert query.returncode == 0 and "regions answered: 3" in query.stdout, query.stderr
    assert lookup.returncode == 0 and "open loans in two or more cities" in lookup.stdout, lookup.stderr
    assert "YES" in lookup.stdout  # the person shown holds loans in two cities
    written = len((data / "applicants.csv").read_text().splitlines()) - 1  # the header
    assert screen.returncode == 0 and f"screened {written} applicant(s)" in screen.stderr, screen.stderr
    assert written > 100 and "with open housing loans in two or more cities" in screen.stderr
