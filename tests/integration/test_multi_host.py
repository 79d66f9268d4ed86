"""A federation of separate hosts: four regions, the coordinator and the asker, each in its own network namespace.

Each party runs in a host of its own (:mod:`netns_hosts`), reached by a DNS name its hosts file maps to the host's
address, with a server certificate naming that host besides its server name. Between the coordinator and each
region a relay in the region's host adds 15 ms each way (:mod:`latency_relay`; this kernel has no netem), and each
region's host drops 2% of the TCP packets it receives, at random (nftables). The asker runs the Python client in
its own host (:mod:`netns_client`). Every answer is checked: exact answers (the operator's, purpose statistics)
against DuckDB over the union of the answering regions' files, lookups against the pooled facts, a screening
against the people the generator planted. A region whose link is cut is named missing within the coordinator's
deadline, and answered again once its link returns, with nothing restarted; a region backed up, lost with its host
and restored on a new host at a new address answers again once the catalog names that address and its envelope
window after the restore has passed (its time from loss to answer, the RTO, printed; every node runs with the
least window, 10 s). Every region's audit log verifies at the end.

Run with ``pytest -s`` to see the times measured. It needs root (``ip netns``); otherwise the module is skipped.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import netns_hosts
import pytest
import yaml
from cryptography import x509
from netns_hosts import Host, Network, stop_processes, wait_for

from hpf.client.answers import LookupAnswer, QueryAnswer
from hpf.client.plan_cache import derive
from hpf.demo.examples import EXAMPLES
from hpf.demo.launcher import (
    DemoLayout,
    ensure_data,
    layout_for,
    use_policy_extending_default,
    write_configs,
)
from hpf.demo.lookups import ABSENT_ID, CONSENT, grant_applicants
from hpf.demo.oracle import Files, matches, pooled, pooled_person_facts, withheld_groups
from hpf.demo.synth.generator import planted_duplicate_loans
from hpf.federation.catalog import Catalog, load_catalog
from hpf.federation.crypto.lookup_codec import fields_of
from hpf.federation.trust.pki import COORDINATOR_NAME, issue_certificate
from hpf.federation.trust.server_names import ServerNames
from hpf.policies.engine import Asker, check_query
from hpf.policies.loader import load_policy

_UNAVAILABLE = netns_hosts.unavailable()
pytestmark = [pytest.mark.integration, pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")]

TESTS = Path(__file__).resolve().parents[1]
ROWS, SEED = 3_000, 11
DELAY_MS = 15  # each way, between the coordinator and each region: 30 ms a round trip
LOSS_PERCENT = 2  # of the TCP packets each region's host receives
DEADLINE_MS = 3_000  # the coordinator's wait for the regions (its floor too)
START_S = 60.0  # the most any party may take to start
WAIT_S = 30.0  # the most any other wait below takes
ASK_S = 60.0  # the most one question may take, end to end
WINDOW_S = 10  # every node's envelope_window_s: a restored node refuses questions for this long after its restore
# exact answers: the operator's, for purpose statistics (the default policy's one exact role)
OPERATOR, STATISTICS = "operator", "statistics"
QUERIES = tuple(e.sql for e in EXAMPLES if e.person == OPERATOR and e.purpose == STATISTICS)
SCREENED = 40  # applicants in the screening
FIRST_HOST = 11  # region i's host is 10.<run>.0.<FIRST_HOST + i>; a host rebuilt takes FIRST_HOST + 20 + i


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ClientHost:
    """The client's process in its host: one JSON request a line in, one answer a line out (:mod:`netns_client`)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lines: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _line(self, timeout_s: float) -> str:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"the client gave no answer within {timeout_s:.0f} s") from None
        if not line:
            raise AssertionError(f"the client exited (code {self.process.poll()})")
        return line.decode().rstrip("\n")

    def ready(self, timeout_s: float) -> None:
        assert self._line(timeout_s) == "ready"

    def ask(self, request: dict[str, Any], timeout_s: float = ASK_S) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        self.process.stdin.flush()
        kind, _, rest = self._line(timeout_s).partition(" ")
        if kind == "error":
            code, _, message = rest.partition(" ")
            raise Refused(code, message)
        assert kind == "ok", kind
        return pickle.loads(base64.b64decode(rest))


@dataclass
class HostedFederation:
    """The demo federation's parties, each in its own host, and what the tests measure of it."""

    layout: DemoLayout
    network: Network
    client: ClientHost
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # node ids, "coordinator", relays
    regions: dict[str, Host] = field(default_factory=dict)  # node id -> its host
    states: dict[str, Path] = field(default_factory=dict)  # node id -> its state directory
    times: dict[str, float] = field(default_factory=dict)

    @property
    def catalog(self) -> Catalog:
        return load_catalog(self.layout.catalog)

    def query(self, sql: str) -> QueryAnswer:
        answer: QueryAnswer = self.client.ask(
            {"op": "query", "profile": str(self.layout.profile_of(OPERATOR)), "sql": sql, "purpose": STATISTICS}
        )
        return answer

    def lookup(self, person_id: str) -> LookupAnswer:
        request = {"op": "lookup", "profile": str(self.layout.profile_of("caseworker")), "ids": [person_id]}
        answer: LookupAnswer = self.client.ask({**request, "purpose": "loan-review", "consent": CONSENT})
        return answer

    def screen(self, ids: list[str], tokens: list[str]) -> LookupAnswer:
        request = {"op": "screen", "profile": str(self.layout.profile_of("bank")), "ids": ids, "tokens": tokens}
        answer: LookupAnswer = self.client.ask({**request, "purpose": "loan-review"})
        return answer

    def files(self, nodes: list[str]) -> Files:
        """The oracle's files: ``nodes``' only (``"*"`` is every one of them)."""
        return lambda table, node: [f for n in nodes if node in ("*", n) for f in self.layout.files(table, n)]

    def exact(self, sql: str, answer: QueryAnswer, nodes: list[str]) -> bool:
        """``answer`` equals DuckDB over ``nodes``' files (the groups some region withholds under k aside)."""
        catalog, plan = self.catalog, derive(sql, self.catalog)
        policy = load_policy(yaml.safe_load(self.layout.node_config(nodes[0]).read_text())["policy"])
        k = check_query(policy, catalog, plan, Asker(OPERATOR, OPERATOR, None), STATISTICS, False, party="test")
        withheld = withheld_groups(catalog, self.files(nodes), nodes, plan, k.min_group_size)
        oracle = pooled(catalog, self.files(nodes), "*", sql)
        return answer.privacy.get("mode") == "exact" and matches(answer, oracle, plan, withheld)

    def missing(self, answer: QueryAnswer | LookupAnswer) -> list[str]:
        return [m["node_id"] for m in answer.missing]

    def set_address(self, node_id: str, address: str) -> None:
        """The catalog names ``address`` for ``node_id`` from now on (written whole, then moved into place)."""
        doc = yaml.safe_load(self.layout.catalog.read_text(encoding="utf-8"))
        for node in doc["nodes"]:
            if node["id"] == node_id:
                node["address"] = address
        written = self.layout.catalog.with_suffix(".yaml.new")
        written.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        os.replace(written, self.layout.catalog)


def _spawn(host: Host, log: Path, *argv: str, stdio: bool = False) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            host.exec_args(*argv),
            stdin=subprocess.PIPE if stdio else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdio else out,
            stderr=out,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _started(processes: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path], marks: dict[str, str]) -> bool:
    """True once every log holds its mark; an AssertionError naming a process that exited before."""
    for name, mark in marks.items():
        if mark in logs[name].read_text(errors="replace"):
            continue
        if processes[name].poll() is not None:
            tail = logs[name].read_text(errors="replace").strip().splitlines()[-5:]
            raise AssertionError(f"{name} exited at start (code {processes[name].returncode}): " + " | ".join(tail))
        return False
    return True


def _hpf(*args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpf.cli", *args], capture_output=True, text=True, timeout=timeout_s, cwd=TESTS.parent
    )


def _layout(directory: Path) -> DemoLayout:
    layout = layout_for(directory, 4)
    ensure_data(layout, ROWS, SEED, lambda _msg: None)
    write_configs(layout, 0, node_threads=1)
    for node_id in layout.node_ids:  # a restored node answers again one window after its restore: the least
        config = yaml.safe_load(layout.node_config(node_id).read_text(encoding="utf-8"))
        config["envelope_window_s"] = WINDOW_S
        layout.node_config(node_id).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    use_policy_extending_default(  # room for the questions the waits below ask
        layout,
        "multi-host-test.yaml",
        "test policy: the default with room for the operator's many questions, 600 a minute",
        {OPERATOR: {"rate_limit": {"requests": 600, "per_seconds": 60}}},
    )
    return layout


def _place(layout: DemoLayout, network: Network) -> dict[str, Host]:
    """Give every party a host: certificates naming it, the catalog and configs its addresses."""
    coordinator = network.add_host("coordinator", 2)
    network.add_host("client", 3)
    regions = {n: network.add_host(n, FIRST_HOST + i) for i, n in enumerate(layout.node_ids)}
    issue_certificate(  # its server name, and its host's DNS name and address
        layout.pki, layout.pki, COORDINATOR_NAME, "coordinator", hosts=[coordinator.dns, coordinator.address]
    )
    for node_id, host in regions.items():
        issue_certificate(
            layout.pki, layout.pki / "nodes", node_id, "node", region=node_id, hosts=[host.dns, host.address]
        )
    doc = yaml.safe_load(layout.catalog.read_text(encoding="utf-8"))
    for node in doc["nodes"]:  # the coordinator dials each region's relay, by the region's DNS name
        node["address"] = f"{regions[node['id']].dns}:{layout.ports[node['id']]}"
    layout.catalog.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    config = yaml.safe_load(layout.coordinator_config.read_text(encoding="utf-8"))
    config.update(
        listen=f"{coordinator.address}:{layout.ports['coordinator']}",
        deadline_ms=DEADLINE_MS,
        min_deadline_ms=DEADLINE_MS,
    )
    layout.coordinator_config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    for profile in layout.data.glob("client*.yaml"):
        doc = yaml.safe_load(profile.read_text(encoding="utf-8"))
        doc["coordinator"] = f"{coordinator.dns}:{layout.ports['coordinator']}"
        profile.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return regions


def _node_argv(config: Path) -> tuple[str, ...]:
    return (sys.executable, "-m", "hpf.cli", "node", "serve", "--config", str(config))


def _relay_argv(host: Host, port: int) -> tuple[str, ...]:
    target = ("--listen", f"{host.address}:{port}", "--to", f"127.0.0.1:{port}")
    return (sys.executable, str(TESTS / "latency_relay.py"), *target, "--delay-ms", str(DELAY_MS))


def _start(fed: HostedFederation, logs: dict[str, Path]) -> None:
    """Every node, relay and the coordinator at once, then the client; waits (bounded) until each is up."""
    layout, marks = fed.layout, {}
    for node_id, host in fed.regions.items():
        logs[node_id], logs[f"relay-{node_id}"] = layout.log(node_id), layout.log(f"relay-{node_id}")
        fed.processes[node_id] = _spawn(host, logs[node_id], *_node_argv(layout.node_config(node_id)))
        fed.processes[f"relay-{node_id}"] = _spawn(
            host, logs[f"relay-{node_id}"], *_relay_argv(host, layout.ports[node_id])
        )
        marks[node_id], marks[f"relay-{node_id}"] = "serving on port", "ready"
    logs["coordinator"] = layout.log("coordinator")
    coordinator = fed.network.hosts["coordinator"]
    serve = ("-m", "hpf.cli", "coordinator", "serve", "--config", str(layout.coordinator_config))
    fed.processes["coordinator"] = _spawn(coordinator, logs["coordinator"], sys.executable, *serve)
    marks["coordinator"] = "serving on port"
    wait_for(lambda: _started(fed.processes, logs, marks), "every party serving", START_S)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedFederation]:
    netns_hosts.sweep_dead_runs()
    started = time.monotonic()
    layout = _layout(tmp_path_factory.mktemp("multi-host") / "fed")
    network = Network()
    processes: list[subprocess.Popen[bytes]] = []
    hosted: HostedFederation | None = None
    try:
        regions = _place(layout, network)
        for host in regions.values():
            host.drop_incoming(LOSS_PERCENT)
        client_log = layout.log("client")
        client_log.parent.mkdir(parents=True, exist_ok=True)
        agent = _spawn(network.hosts["client"], client_log, sys.executable, str(TESTS / "netns_client.py"), stdio=True)
        processes.append(agent)
        hosted = HostedFederation(
            layout, network, ClientHost(agent), regions=regions, states={n: layout.state(n) for n in layout.node_ids}
        )
        _start(hosted, {})
        hosted.client.ready(START_S)
        everyone = layout.node_ids

        def all_answer() -> bool:
            try:
                return not hosted.query(QUERIES[0]).missing
            except Refused as refused:  # too few regions up yet for a masked sum
                if refused.code != "REGIONS_MISSING":
                    raise
                return False

        wait_for(all_answer, "every region answering through its relay", WAIT_S, interval_s=0.5)
        hosted.times["setup_s"] = time.monotonic() - started
        print(
            f"\n[multi-host] setup: {len(everyone)} regions, coordinator and client in their own hosts, "
            f"{hosted.times['setup_s']:.1f} s"
        )
        yield hosted
    finally:
        try:  # every party started, a region rebuilt on a new host included
            stop_processes([*processes, *(hosted.processes.values() if hosted else ())])
        finally:
            network.close()
    assert netns_hosts.leftovers(network.pid) == [], "namespaces or /etc/netns folders left behind"


def _planted(fed: HostedFederation) -> list[str]:
    """The people the generator planted with loans in two or more cities."""
    planted = [p.person_id for p in planted_duplicate_loans(SEED, ROWS, fed.layout.node_ids)]
    assert planted, "the generator planted no one with loans in two cities"
    return planted


def test_answers_across_hosts_are_exact_with_latency_and_loss(fed: HostedFederation) -> None:
    everyone = fed.layout.node_ids
    for sql in QUERIES:
        answer = fed.query(sql)
        assert answer.answered == everyone and not answer.missing
        assert fed.exact(sql, answer, everyone), sql
        assert answer.timings["fanout_ms"] >= 2 * DELAY_MS  # every region is a relay's round trip away
    planted = _planted(fed)
    looked_up = fed.lookup(planted[0])
    assert looked_up.complete
    expected = pooled_person_facts(fed.catalog, fed.files(everyone), [planted[0]])[planted[0]]
    assert {name: getattr(looked_up.facts[0], name) for name in expected} == expected
    others = pooled(fed.catalog, fed.files(everyone), "*", "SELECT DISTINCT person_id FROM accounts ORDER BY 1")
    applicants = sorted({*planted[: len(planted) // 2 + 1], *(r[0] for r in others[:SCREENED])}) + [ABSENT_ID]
    screened = fed.screen(applicants, grant_applicants(fed.layout, applicants))
    assert screened.complete and not screened.withheld
    flagged = {pid for pid, facts in zip(applicants, screened.facts, strict=True) if facts.duplicate_loans}
    assert flagged == set(planted) & set(applicants)
    kept = fields_of(screened.facts_asked)
    for pid, facts in pooled_person_facts(fed.catalog, fed.files(everyone), applicants).items():
        answered = screened.facts[applicants.index(pid)]
        assert {k: getattr(answered, k) for k in facts if k in kept} == {k: v for k, v in facts.items() if k in kept}
    for node_id, host in fed.regions.items():  # every region was reached through its relay, under random loss
        assert "open " in fed.layout.log(f"relay-{node_id}").read_text()
        print(f"[multi-host] {node_id}: {host.dropped()} packets dropped at random so far")


def test_every_server_certificate_names_its_host(fed: HostedFederation) -> None:
    """Each server's certificate carries its server name, its host's DNS name and its host's address."""
    names = ServerNames(fed.catalog.federation)
    servers = {"coordinator": (fed.layout.pki / "coordinator.pem", names.coordinator)}
    servers |= {n: (fed.layout.pki / "nodes" / f"{n}.pem", names.node(n)) for n in fed.layout.node_ids}
    for party, (path, server_name) in servers.items():
        host = fed.network.hosts[party]
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [server_name, host.dns], party
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == [host.address], party


def test_a_region_cut_off_is_named_missing_within_the_deadline(fed: HostedFederation) -> None:
    cut = fed.layout.node_ids[-1]
    others = [n for n in fed.layout.node_ids if n != cut]
    fed.regions[cut].link(False)
    sent = time.monotonic()
    answer = fed.query(QUERIES[0])
    fed.times["cut_to_missing_s"] = time.monotonic() - sent
    print(
        f"[multi-host] cut to missing: {fed.times['cut_to_missing_s']:.2f} s (deadline {DEADLINE_MS} ms), "
        f"{answer.missing}"
    )
    assert fed.missing(answer) == [cut] and answer.answered == others
    assert fed.exact(QUERIES[0], answer, others)  # the other regions' rows, exactly
    assert fed.times["cut_to_missing_s"] < DEADLINE_MS / 1000 + 5  # the deadline, and the client's own work
    later = fed.query(QUERIES[1])  # known unwell now: named again, the others exact
    assert fed.missing(later) == [cut] and fed.exact(QUERIES[1], later, others)
    # a lookup names it too, and is not answered without it: the others' figures would show its own by difference
    with pytest.raises(Refused) as refused:
        fed.lookup(_planted(fed)[0])
    assert refused.value.code == "LOOKUP_REGION_MISSING" and f"{cut} (NODE_UNWELL)" in str(refused.value)


def test_a_region_whose_link_returns_is_answered_again_with_nothing_restarted(fed: HostedFederation) -> None:
    cut = fed.layout.node_ids[-1]
    pids = {name: p.pid for name, p in fed.processes.items()}
    fed.regions[cut].link(True)
    back = time.monotonic()
    answers: list[QueryAnswer] = []

    def answered_again() -> bool:
        answers.append(fed.query(QUERIES[0]))
        return not answers[-1].missing

    wait_for(answered_again, f"{cut} answered again", WAIT_S, interval_s=0.3)
    fed.times["return_to_answered_s"] = time.monotonic() - back
    print(f"[multi-host] link back to answered: {fed.times['return_to_answered_s']:.2f} s, {len(answers)} questions")
    assert answers[-1].answered == fed.layout.node_ids
    assert fed.exact(QUERIES[0], answers[-1], fed.layout.node_ids)
    assert {name: p.pid for name, p in fed.processes.items()} == pids  # nothing restarted
    assert all(p.poll() is None for p in fed.processes.values())


def test_a_region_restored_from_backup_on_a_new_host_answers_again(fed: HostedFederation, tmp_path: Path) -> None:
    """Back up region X's node, lose its host (link, process, namespace and state), rebuild it at a new address,
    restore the backup there, publish the new address in the catalog: every party takes it without a restart,
    and X answers again, exactly. The time from the loss to that answer is the RTO."""
    layout, network = fed.layout, fed.network
    lost = layout.node_ids[0]
    port = layout.ports[lost]
    others = {name: p.pid for name, p in fed.processes.items() if name not in (lost, f"relay-{lost}")}
    backup = tmp_path / f"backup-{lost}"
    made = _hpf("node", "backup", str(backup), "--config", str(layout.node_config(lost)))
    assert made.returncode == 0, made.stdout + made.stderr

    old = fed.regions[lost]
    old.link(False)  # the loss: from here to its next answer is the RTO
    lost_at = time.monotonic()
    for name in (lost, f"relay-{lost}"):  # the host is gone: its processes end with no chance to tidy up
        fed.processes[name].kill()
        fed.processes[name].wait(timeout=10)
    network.remove_host(lost)
    shutil.rmtree(fed.states[lost])  # its disk went with it: only the backup is left
    asked = time.monotonic()
    answer = fed.query(QUERIES[0])  # a question meanwhile names it missing (its wait is not the operator's)
    witness_s = time.monotonic() - asked
    assert fed.missing(answer) == [lost] and fed.exact(QUERIES[0], answer, layout.node_ids[1:])

    new = network.add_host(f"{lost}-new", FIRST_HOST + 20, dns=old.dns)  # its DNS name, at a new address
    new.drop_incoming(LOSS_PERCENT)
    fed.regions[lost] = new
    config = yaml.safe_load(layout.node_config(lost).read_text(encoding="utf-8"))
    fed.states[lost] = Path(config["state_dir"]).with_name(f"{lost}-restored")
    config["state_dir"] = str(fed.states[lost])
    restored_config = layout.node_config(lost).with_name(f"node-{lost}-restored.yaml")
    restored_config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    done = subprocess.run(
        new.exec_args(
            sys.executable, "-m", "hpf.cli", "node", "restore", str(backup), "--config", str(restored_config)
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    logs = {lost: layout.log(f"{lost}-restored"), f"relay-{lost}": layout.log(f"relay-{lost}-restored")}
    fed.processes[lost] = _spawn(new, logs[lost], *_node_argv(restored_config))
    fed.processes[f"relay-{lost}"] = _spawn(new, logs[f"relay-{lost}"], *_relay_argv(new, port))
    fed.set_address(lost, f"{new.address}:{port}")  # every party reads the catalog's change, none restarted
    wait_for(
        lambda: _started(fed.processes, logs, {lost: "serving on port", f"relay-{lost}": "ready"}),
        f"{lost} serving on its new host",
        START_S,
    )
    answers: list[QueryAnswer] = []
    refusals: list[str] = []

    def answered_again() -> bool:
        try:
            answers.append(fed.query(QUERIES[0]))
        except Refused as refused:  # within its window after the restore, the first question it is sent
            if refused.code != "AUTH_SIGNED_BEFORE_RESTORE":
                raise
            refusals.append(refused.code)
            return False
        return not answers[-1].missing

    # it answers nothing until its envelope window after the restore has passed (NOT_SERVING meanwhile)
    wait_for(answered_again, f"{lost} answered again at its new address", WINDOW_S + WAIT_S, interval_s=0.3)
    assert len(refusals) <= 1  # then the coordinator names it missing until its window has passed
    fed.times["rto_s"] = time.monotonic() - lost_at - witness_s
    print(
        f"[multi-host] RTO of {lost} (link down to answered from a new host at {new.address}): "
        f"{fed.times['rto_s']:.1f} s, its envelope window after the restore ({WINDOW_S} s) included (not counting "
        f"the {witness_s:.1f} s its own question waited meanwhile)"
    )
    assert answers[-1].answered == layout.node_ids and fed.exact(QUERIES[0], answers[-1], layout.node_ids)
    assert fed.exact(QUERIES[1], fed.query(QUERIES[1]), layout.node_ids)
    planted = _planted(fed)
    looked_up = fed.lookup(planted[0])
    expected = pooled_person_facts(fed.catalog, fed.files(layout.node_ids), [planted[0]])[planted[0]]
    assert looked_up.complete and {name: getattr(looked_up.facts[0], name) for name in expected} == expected
    assert {name: fed.processes[name].pid for name in others} == others  # no other party restarted


def test_every_regions_audit_log_verifies(fed: HostedFederation) -> None:
    for node_id in fed.layout.node_ids:
        audit = fed.states[node_id] / "audit"
        checked = _hpf("audit", "verify", str(audit), "--catalog", str(fed.layout.catalog), "--node", node_id)
        assert checked.returncode == 0, f"{node_id}: {checked.stdout}{checked.stderr}"
        # the region restored from its backup declares the break; no other log has one
        restored = fed.states[node_id].name.endswith("-restored")
        assert ("declared break: restored from checkpoint" in checked.stdout) == restored, checked.stdout
    print("[multi-host] times: " + ", ".join(f"{k} {v:.2f}" for k, v in fed.times.items()))
