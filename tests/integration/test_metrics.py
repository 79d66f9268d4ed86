"""Prometheus metrics of a running federation, scraped as a scraper would (a plain HTTP GET, or HTTPS with a
client certificate): exact counts by operation and stable code, audit appends, budget refusals, regions held
unwell; and nothing of the data, the SQL, the caller or a region in any label or value.

Two regions under the DP test policy (tests/fixtures/policies/open-dp.yaml: 3 answers of epsilon 1 a day per
person on every region). Region n0 serves its metrics over mutual TLS, n1 and the coordinator on plain loopback.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import harness
import pytest
from prometheus_client.parser import text_string_to_metric_families
from raw_rpc import raw_channels, send_raw

from hpf.federation.crypto import he
from hpf.federation.error_codes import REGISTRY
from hpf.federation.errors import is_code
from hpf.federation.metrics import LATENCY_BUCKETS

NODES = ("n0", "n1")
DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")
PERSON_PREFIX = "PX-SECRET-"
TABLES: dict[str, Any] = {
    "claims": {
        "contribution": {"person": "person_id", "max_rows": 2, "max_regions": 2},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "kind": {"type": "VARCHAR", "class": "public", "domain": {"values": ["alpha-kind", "beta-kind"]}},
            "amount": {"type": "BIGINT", "class": "public", "bounds": [0, 1000]},
            "opened": {"type": "DATE", "class": "public"},
        },
    }
}
AMOUNTS = [731, 419, 853]  # values of the data no metric may carry
NODE_ROWS = {
    n: {
        "claims": [
            (f"{PERSON_PREFIX}{n}-{i}", "alpha-kind" if i % 2 else "beta-kind", AMOUNTS[i % 3], dt.date(2021, 5, 17))
            for i in range(12)
        ]
    }
    for n in NODES
}
PEOPLE = (
    ("caseworker", "caseworker", None),
    ("cw_budget", "caseworker", None),
    ("cw_other", "caseworker", None),
    ("scraper", "operator", None),  # the one that may read a party's metrics over TLS
)
SQL = "SELECT kind, COUNT(*) AS n_claims, SUM(amount) AS total_amount FROM claims WHERE amount < 999 GROUP BY kind"
NODE_OPERATIONS = {"ComputePartial", "Explain", "AuditProof", "Describe", "Lookup", "Check", "Watch"}
COORDINATOR_OPERATIONS = {"Query", "Lookup", "Explain", "AuditProof", "GetCatalog", "Check", "Watch"}
SCRAPE_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("metrics")
    nodes = {
        "n0": {"metrics": {"listen": "127.0.0.1:0", "tls": True}},
        "n1": {"metrics": {"listen": "127.0.0.1:0"}},
    }
    with harness.federation(
        root,
        TABLES,
        NODE_ROWS,
        policy=DP_POLICY,
        people=PEOPLE,
        node_settings=nodes,
        coordinator_settings={"metrics": {"listen": "127.0.0.1:0"}},
    ) as f:
        yield f


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


def client_tls(fed: harness.Federation, person: str | None = "scraper") -> ssl.SSLContext:
    """What a scraper of n0 uses: the federation's CA, and ``person``'s certificate (None: no certificate)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(fed.pki_dir / "ca.pem"))
    context.check_hostname = False  # the node's certificate names n0.node.test; the CA is still verified
    if person is not None:
        people = fed.pki_dir / "people"
        context.load_cert_chain(people / f"{person}.pem", people / f"{person}.key")
    return context


def scrape_text(fed: harness.Federation, party: str) -> str:
    if party == "coordinator":
        port = fed.coordinator.metrics_port
    else:
        port = fed.nodes[party].metrics_port
    assert port is not None and port > 0
    secure = party == "n0"
    url = f"{'https' if secure else 'http'}://127.0.0.1:{port}/metrics"
    context = client_tls(fed) if secure else None
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S, context=context) as reply:
        assert reply.status == 200
        return str(reply.read().decode("utf-8"))


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(fed: harness.Federation, party: str) -> Samples:
    return parse(scrape_text(fed, party))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests(samples: Samples, operation: str, code: str) -> float:
    return value(samples, "hpf_requests_total", operation=operation, code=code)


def timed(samples: Samples, operation: str) -> float:
    return value(samples, "hpf_request_seconds_count", operation=operation)


def everything(fed: harness.Federation) -> dict[str, Samples]:
    return {party: scrape(fed, party) for party in (*NODES, "coordinator")}


@pytest.fixture(scope="module")
def traffic(fed: harness.Federation, keys: he.ClientKeys) -> dict[str, dict[str, Samples]]:
    """Scrapes before and after: three DP answers to cw_budget (its whole budget), a fourth refused by every
    region (POLICY_PRIVACY_BUDGET), and a request the coordinator cannot read (RPC_MALFORMED)."""
    before = everything(fed)
    with fed.client(keys=keys, person="cw_budget") as client:
        answers = [client.query(SQL) for _ in range(3)]
        refused = harness.refusal(lambda: client.query(SQL))
    assert all(a.privacy["mode"] == "dp" for a in answers)
    assert refused.code == "POLICY_PRIVACY_BUDGET"
    with raw_channels(fed) as channels:
        err = send_raw(channels["coordinator"], "/hpf.v1.Coordinator/Explain", False, b"\xff\xff\xff")
    assert err is not None
    return {"before": before, "after": everything(fed)}


def test_each_region_counts_the_questions_it_answered_and_refused(
    traffic: dict[str, dict[str, Samples]],
) -> None:
    before, after = traffic["before"], traffic["after"]
    for node in NODES:
        b, a = before[node], after[node]
        assert requests(a, "ComputePartial", "OK") - requests(b, "ComputePartial", "OK") == 3
        assert (
            requests(a, "ComputePartial", "POLICY_PRIVACY_BUDGET")
            - requests(b, "ComputePartial", "POLICY_PRIVACY_BUDGET")
            == 1
        )
        # every call timed once, whatever its code
        assert timed(a, "ComputePartial") - timed(b, "ComputePartial") == 4
        assert value(a, "hpf_budget_refusals_total") - value(b, "hpf_budget_refusals_total") == 1
        # one entry per question, allowed or refused (the region's health checks log nothing)
        assert value(a, "hpf_audit_appends_total") - value(b, "hpf_audit_appends_total") == 4


def test_the_coordinator_counts_each_question_by_the_code_its_caller_got(
    traffic: dict[str, dict[str, Samples]],
) -> None:
    b, a = traffic["before"]["coordinator"], traffic["after"]["coordinator"]
    assert requests(a, "Query", "OK") - requests(b, "Query", "OK") == 3
    assert requests(a, "Query", "POLICY_PRIVACY_BUDGET") - requests(b, "Query", "POLICY_PRIVACY_BUDGET") == 1
    assert requests(a, "Explain", "RPC_MALFORMED") - requests(b, "Explain", "RPC_MALFORMED") == 1
    assert timed(a, "Query") - timed(b, "Query") == 4
    assert value(a, "hpf_regions") == len(NODES)
    assert value(a, "hpf_regions_unwell") == 0
    # a histogram's buckets add up to its count
    assert value(a, "hpf_request_seconds_bucket", operation="Query", le="+Inf") == timed(a, "Query")


def test_no_label_or_value_names_the_data_the_sql_the_caller_or_a_region(
    fed: harness.Federation, traffic: dict[str, dict[str, Samples]]
) -> None:
    forbidden = [PERSON_PREFIX, "alpha-kind", "beta-kind", "2021-05-17", SQL, "claims", "n_claims", "total_amount"]
    forbidden += [name for name, _, _ in PEOPLE] + [harness.FEDERATION + "."]
    # the data's amounts and the sums the questions asked for, per region and in all (the row counts are left out:
    # small numbers a request count may equal by chance)
    sums = "SELECT kind, SUM(amount) FROM claims WHERE amount < 999 GROUP BY kind"
    numbers = {float(a) for a in AMOUNTS} | {float(row[1]) for row in fed.oracle(sums)}
    for node in NODES:
        numbers |= {float(row[1]) for row in fed.node_oracle(node, sums)}
    assert min(numbers) > 100
    for party in (*NODES, "coordinator"):
        text = scrape_text(fed, party)
        for word in forbidden:
            assert word not in text, (party, word)
        operations = NODE_OPERATIONS if party in NODES else COORDINATOR_OPERATIONS
        for (name, labels), sample in parse(text).items():
            assert name.endswith("_created") or sample not in numbers, (party, name, labels, sample)
            assert name.startswith(("hpf_", "python_", "process_")) or name.endswith("_created"), name
            for key, label in labels:
                assert key in {"operation", "code", "le"}, (party, name, key)
                if key == "le":
                    assert label == "+Inf" or float(label) in LATENCY_BUCKETS, (party, label)
                if key == "operation":
                    assert label in operations, (party, label)
                if key == "code":
                    assert label == "OK" or (is_code(label) and label in REGISTRY), (party, label)
    # the coordinator's metrics name no region at all
    coordinator = scrape_text(fed, "coordinator")
    for node in NODES:
        assert f'"{node}"' not in coordinator


def test_metrics_over_tls_are_read_only_with_an_operators_certificate_of_the_federation(
    fed: harness.Federation, traffic: dict[str, dict[str, Samples]]
) -> None:
    port = fed.nodes["n0"].metrics_port
    url = f"https://127.0.0.1:{port}/metrics"
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S, context=client_tls(fed, person=None)) as reply:
            reply.read()
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):  # plain HTTP is not served either
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as reply:
            reply.read()
    # an asker's certificate of the federation is verified, and refused: a region's timings are not an asker's
    with pytest.raises(urllib.error.HTTPError) as refused:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S, context=client_tls(fed, "cw_other")) as reply:
            reply.read()
    assert refused.value.code == 403 and b"hpf_" not in refused.value.read()
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S, context=client_tls(fed, "scraper")) as reply:
        assert reply.status == 200 and b"hpf_requests_total" in reply.read()
    with pytest.raises(urllib.error.HTTPError) as elsewhere:  # the operator reads /metrics, and nothing else
        urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=SCRAPE_TIMEOUT_S, context=client_tls(fed))
    assert elsewhere.value.code == 404


def test_a_region_that_stops_is_counted_unwell_and_its_metrics_endpoint_closes(
    fed: harness.Federation, keys: he.ClientKeys, traffic: dict[str, dict[str, Samples]]
) -> None:
    port = fed.nodes["n1"].metrics_port
    fed.stop_node("n1")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S)
    with fed.client(keys=keys, person="cw_other") as client:
        answer = client.query(SQL)
    assert [m["node_id"] for m in answer.missing] == ["n1"]
    # a region that refuses connections costs no wait, so it is not held unwell (coordinator.region_health)
    assert value(scrape(fed, "coordinator"), "hpf_regions_unwell") == 0
    fed.coordinator.health.note_missed("n1")  # what a question that waited out its deadline on n1 records
    deadline = time.monotonic() + 10
    while value(scrape(fed, "coordinator"), "hpf_regions_unwell") != 1:  # once a health probe of n1 fails too
        assert time.monotonic() < deadline, "the coordinator never counted n1 unwell"
        time.sleep(0.1)
    assert value(scrape(fed, "coordinator"), "hpf_regions") == len(NODES)
