"""A node's own limits, on a running federation: what happens to a question after admission is a masked mark.

n1 stops every scan at 200 ms (``limits.query_ms``); n2 has 24 MB of engine memory (``limits.memory``), too
little for the row-capped ``ledger`` table a DP question about it reads; n0 has time enough. Deposits
are many at n0 and n1, few at n2; the ledger is long at n2 only. The questions are legitimate
(the allow-list accepts them) and only heavy. Each region that stops one answers on time with the encrypted
failure mark: the asker is told that some region could not compute it, never which; no region is named
missing; the DP charge stays spent; and the region goes on answering. Which path ran is read from the
regions themselves (their limit counters and logs), never from wall-clock times.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import grpc
import harness
import pytest

from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.errors import DataError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.planner import sketch_query
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.node.backends.duckdb_backend import DuckDBBackend
from hpf.node.privacy_budget import Budget, PrivacyLedger

ROWS = 600_000  # the heavy question takes n0 about 2 s here
LEDGER_ROWS = 2_000_000  # one person each: capping them takes more than 32 MB, and n2 has 24 MB
NODES = ("n0", "n1", "n2")
DP_POLICY = harness.OPEN_POLICY.with_name("open-dp.yaml")  # caseworkers: epsilon 1 an answer, 3 a day
BUDGET = Budget(3.0, 1e-4, "day")
TABLES: dict[str, Any] = {
    "deposits": {
        "contribution": {"person": "person_id", "max_rows": 5, "max_regions": 3},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "employer": {"type": "VARCHAR", "class": "public"},
            "city_code": {"type": "VARCHAR", "class": "public", "domain": {"values": ["0", "1", "2"]}},
            "amount_fen": {"type": "BIGINT", "class": "public", "bounds": [0, 1_000_000]},
        },
    },
    "ledger": {
        "contribution": {"person": "person_id", "max_rows": 5, "max_regions": 3},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "amount_fen": {"type": "BIGINT", "class": "public", "bounds": [0, 1_000_000]},
        },
    },
    "visits": {
        "contribution": {"person": "person_id", "max_rows": 1, "max_regions": 3},
        "columns": {
            "person_id": {"type": "VARCHAR", "class": "identifier"},
            "amount_fen": {"type": "BIGINT", "class": "public", "bounds": [0, 100]},
        },
    },
}
# legitimate, and heavy: 250 LIKE patterns over every employer name
HEAVY = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits WHERE " + " OR ".join(
    f"employer LIKE '%{i}%{i + 1}%{i + 2}%x%'" for i in range(250)
)
# three times as many patterns, as long as a query may be: a scan of a second or more however warm the files
HEAVIER = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM deposits WHERE " + " OR ".join(
    f"employer LIKE '%{i}%x%'" for i in range(700)
)
LIGHT = "SELECT COUNT(*) AS n FROM visits"


def _write(root: Path) -> None:
    """Deposits: 600,000 rows at n0 and n1, 30 at n2; the ledger: 2,000,000 rows at n2, 30 elsewhere; three visits
    each (made by DuckDB: quick)."""
    con = duckdb.connect()
    try:
        for i, node in enumerate(NODES):
            folder = root / "data" / node
            folder.mkdir(parents=True, exist_ok=True)
            deposits = ROWS if node != "n2" else 30
            con.execute(
                f"COPY (SELECT 'p' || (r % 40000)::VARCHAR AS person_id, "
                f"'employer-' || ((r * 7919 + {i}) % 100003)::VARCHAR || '-co-ltd' AS employer, "
                "(r % 3)::VARCHAR AS city_code, (r % 1000)::BIGINT AS amount_fen "
                f"FROM range({deposits}) t(r)) TO '{folder / 'deposits.parquet'}' (FORMAT parquet)"
            )
            ledger = LEDGER_ROWS if node == "n2" else 30
            con.execute(
                "COPY (SELECT 'person-number-' || r::VARCHAR AS person_id, (r % 1000)::BIGINT AS amount_fen "
                f"FROM range({ledger}) t(r)) TO '{folder / 'ledger.parquet'}' (FORMAT parquet)"
            )
            con.execute(
                "COPY (SELECT 'v' || r::VARCHAR AS person_id, 7::BIGINT AS amount_fen FROM range(3) t(r)) "
                f"TO '{folder / 'visits.parquet'}' (FORMAT parquet)"
            )
    finally:
        con.close()


@pytest.fixture(scope="module")
def fed() -> Iterator[harness.Federation]:
    with tempfile.TemporaryDirectory(prefix="hpf-limits-") as tmp:
        root = Path(tmp)
        _write(root)
        rows: dict[str, dict[str, list[tuple[Any, ...]]]] = {n: {} for n in NODES}
        people = (
            ("cw_time", "caseworker", None),
            ("cw_memory", "caseworker", None),
            ("cw_abandon", "caseworker", None),
            *((f"cw_wait{i}", "caseworker", None) for i in range(3)),  # 3 questions a day each: 7 tries
        )
        with harness.federation(
            root,
            TABLES,
            rows,
            write_data=False,
            policy=DP_POLICY,
            people=people,
            min_deadline_ms=25_000,
            deadline_ms=30_000,
            # n0 and n2 get time enough for the heavy question on a loaded machine: only n1's limit is tested
            node_settings={
                "n0": {"limits": {"query_ms": 20_000}},
                "n1": {"limits": {"query_ms": 200}},
                "n2": {"limits": {"memory": "24MB", "query_ms": 20_000}},
            },
        ) as f:
            yield f


def backend(fed: harness.Federation, node_id: str) -> DuckDBBackend:
    found = fed.nodes[node_id].handler.executor.backend
    assert isinstance(found, DuckDBBackend)
    return found


def spent(fed: harness.Federation, node_id: str, person: str) -> float:
    with PrivacyLedger.open(fed.root / "state" / node_id / "privacy") as ledger:
        return ledger.spent(person, BUDGET).epsilon


def test_a_region_stopped_at_its_time_limit_answers_with_a_mark_and_is_never_named(
    fed: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    hits = backend(fed, "n1").limit_hits
    caplog.set_level(logging.INFO, logger="hpf.coordinator")
    with fed.client(person="cw_time") as client:
        with pytest.raises(DataError) as info:
            client.query(HEAVY)
        err = info.value
        assert err.code == "NODE_EXECUTION_FAILED"
        assert err.message.startswith("1 region(s) could not compute")
        assert not any(n in err.message + (err.hint or "") for n in NODES)
        # the path that ran: n1's own timer interrupted its scan; n0 and n2 ran it to the end
        assert backend(fed, "n1").limit_hits == hits + 1
        assert backend(fed, "n0").limit_hits == 0
        # every region answered with a ciphertext: the coordinator saw no failure and named no region
        lines = [r.getMessage() for r in caplog.records if r.name == "hpf.coordinator"]
        assert any("3 region(s) answered, 0 missing" in line for line in lines), lines
        assert not any("missing (" in line for line in lines)
        # the DP charge stays spent at every region, n1 included: a failure costs what an answer costs
        assert [spent(fed, n, "cw_time") for n in NODES] == [1.0, 1.0, 1.0]
        # and n1 keeps serving
        answer = client.query(LIGHT)
    assert answer.missing == [] and sorted(answer.answered) == list(NODES)
    assert [spent(fed, n, "cw_time") for n in NODES] == [2.0, 2.0, 2.0]


def test_a_region_out_of_memory_for_a_question_answers_with_a_mark(
    fed: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """n2's 24 MB do not hold its row-capped ledger, which a DP question reads: a mark, not a region named missing."""
    caplog.set_level(logging.WARNING, logger="hpf.node.duckdb")
    sql = "SELECT COUNT(*) AS n, SUM(amount_fen) AS total FROM ledger"
    with fed.client(person="cw_memory") as client:
        with pytest.raises(DataError) as info:
            client.query(sql)
        assert info.value.code == "NODE_EXECUTION_FAILED"
        assert info.value.message.startswith("1 region(s) could not compute")
        assert not any(n in info.value.message + (info.value.hint or "") for n in NODES)
        answer = client.query(LIGHT)  # n2 keeps serving questions that fit its memory
    assert answer.missing == [] and sorted(answer.answered) == list(NODES)
    # the path that ran: n2's engine ran out of its own memory while capping the ledger
    assert any("capping table ledger failed: the node ran out of memory" in r.getMessage() for r in caplog.records)
    assert spent(fed, "n2", "cw_memory") == 2.0


def _tls(fed: harness.Federation) -> TlsConfig:
    pki = fed.pki_dir
    return TlsConfig(ca=pki / "ca.pem", cert=pki / "coordinator.pem", key=pki / "coordinator.key")


def _as_the_coordinator(fed: harness.Federation, sql: str, person: str = "cw_abandon") -> pb.PartialRequest:
    """A partial plan of ``sql`` as the coordinator would send it, signed by ``person`` for a fresh key."""
    keys = he.ClientKeys.generate()
    pki = fed.pki_dir
    signer = Signer.from_files(pki / "people" / f"{person}.pem", pki / "people" / f"{person}.key")
    signed = signer.sign(
        sql=sql, context_digest=he.context_digest(keys.public_context()), federation=fed.catalog.federation
    )
    return pb.PartialRequest(
        he_format=HE_FORMAT,
        query_id=query_id(signed),
        public_context=keys.public_context(),
        plan_fingerprint=sketch_query(sql, fed.catalog).fingerprint,
        envelope=signed,
        participants=list(NODES),
    )


def test_a_question_the_coordinator_abandons_is_interrupted_at_the_region(
    fed: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """The coordinator gives a question up (its call's deadline passes); n0 stops the scan, not at its own limit."""
    caplog.set_level(logging.WARNING, logger="hpf.node.duckdb")
    request = _as_the_coordinator(fed, HEAVY)
    hits = backend(fed, "n0").limit_hits
    with secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", _tls(fed)) as channel:
        call = pb_grpc.NodeStub(channel).ComputePartial.future(request, timeout=30)
        time.sleep(0.3)  # the scan is under way (it takes seconds); the coordinator gives the question up
        call.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            call.result()
    for _ in range(100):  # bounded: the scan stops within the engine's next check
        if any("abandoned by the coordinator" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.05)
    assert any("abandoned by the coordinator" in r.getMessage() for r in caplog.records)
    assert backend(fed, "n0").limit_hits == hits  # not its own limit: the coordinator's abandonment


def test_a_question_whose_wait_ends_before_the_regions_limit_is_answered_on_time(
    fed: harness.Federation, caplog: pytest.LogCaptureFixture
) -> None:
    """n0's own limit is 20 s; the coordinator's wait for this call is shorter than n0's scan of HEAVIER: n0 stops
    the scan before the wait ends and answers, on time, with the masked failure mark (never a missed wait, which
    names a region), not at its limit.

    How long admission and the scan take depends on the machine, so the wait is searched for, in a bounded number
    of tries: a wait that outlasts the scan gets the plain answer (shorten it), a wait that ends before admission
    is done gets no answer (lengthen it). The test fails if no try ends the wait during the scan, or if a wait
    that does is not answered on time with the mark."""
    caplog.set_level(logging.WARNING, logger="hpf.node.duckdb")
    caplog.set_level(logging.WARNING, logger="hpf.node")
    short, long = 0.2, 6.0  # the wait lies between these; each try halves the gap
    seen: list[str] = []
    for attempt in range(7):
        wait = (short + long) / 2
        caplog.clear()
        hits = backend(fed, "n0").limit_hits
        request = _as_the_coordinator(fed, HEAVIER, person=f"cw_wait{attempt // 3}")
        try:
            with secure_channel(f"127.0.0.1:{fed.nodes['n0'].port}", _tls(fed)) as channel:
                answer = pb_grpc.NodeStub(channel).ComputePartial(request, timeout=wait)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err  # still in admission when the wait ended
            seen.append(f"{wait:.2f} s: ended in admission")
            short = wait
            continue
        messages = [r.getMessage() for r in caplog.records]
        if not any("abandoned by the coordinator" in m for m in messages):
            seen.append(f"{wait:.2f} s: the scan finished first")  # a plain answer, inside the wait
            long = wait
            continue
        assert answer.node_id == "n0" and answer.ciphertexts  # an answer (the mark is inside its ciphertexts)
        assert backend(fed, "n0").limit_hits == hits  # stopped by the wait, not by its own limit
        assert any("sending the encrypted failure mark" in m for m in messages), messages
        return
    pytest.fail(f"no wait ended during n0's scan: {seen}")
