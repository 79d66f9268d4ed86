"""Whom a person lookup is about stays between the asker and the regions (protocol.md, "What each party may
learn"): the coordinator never receives an identifier, in any form, in any message; nodes keep only keyed,
nonce-salted tags of it in their audit logs, and nothing in their state or logs; an auditor holding a region's
subject key finds exactly the requests that looked a given person up.

One federation runs a caseworker's single, per-city and home-excluding lookups, a refused lookup and an
integrator's batch screening of everyone, while the coordinator's every incoming message is recorded (on its
server and on its channels to the nodes, as in test_secrecy.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc
import harness
import numpy as np
import pytest
from coordinator_recorder import CoordinatorRecorder, recording

from hpf.client.answers import LookupAnswer
from hpf.demo.synth import generate_node, planted_duplicate_loans
from hpf.federation.crypto import he
from hpf.federation.crypto.he import HE_FORMAT
from hpf.federation.crypto.sealing import (
    ID_CHARS,
    KEY_BYTES,
    SALT_BYTES,
    AgreementKey,
    OneTimeKey,
    load_public_b64,
    read_secret,
)
from hpf.federation.crypto.subject_tags import subject_tag
from hpf.federation.errors import FederationError, from_rpc_error
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.generated import hpf_federation_pb2_grpc as pb_grpc
from hpf.federation.hpf_schema import hpf_tables
from hpf.federation.person_id import person_id_array
from hpf.federation.trust.channels import secure_channel
from hpf.federation.trust.envelope import Signer, query_id
from hpf.federation.trust.tls import TlsConfig
from hpf.policies import DEFAULT_POLICY

# four regions: every one but the caseworker's home is three, the fewest a region sums its answer with by default
NODES = ["shanghai", "hangzhou", "nanjing", "suzhou"]
SEED, ROWS = 11, 10_000
PEOPLE = (("caseworker", "caseworker", "shanghai"), ("bank", "integrator", "hangzhou"))
REVIEW: dict[str, Any] = {"purpose": "loan-review", "consent": "CONSENT-7731"}
TRANSFER: dict[str, Any] = {"purpose": "account-transfer", "consent": "CONSENT-7732"}
BATCH = 400
RPC_TIMEOUT_S = 20.0


# ------------------------------------------------------------------------------ what the coordinator receives


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


# ------------------------------------------------------------------------------ finding identifiers in bytes

_DIGIT_RUN = re.compile(rb"[0-9]{17,}")
_WIDE_DIGIT_RUN = re.compile(rb"(?:[0-9]\x00){17,}")


class IdentifierSearch:
    """Finds any of a set of identifiers in bytes: as ASCII or UTF-16 text (upper- or lower-case check character,
    or the 17 digits alone), as hex of that text, or as a 64-bit integer (little- or big-endian)."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = sorted(set(ids))
        self._prefixes = {pid[:17].encode(): pid for pid in self.ids}
        self._hex = {pid[:17].encode().hex().encode(): pid for pid in self.ids}
        numbers = {int(pid[:17]): pid for pid in self.ids} | {int(pid): pid for pid in self.ids if pid[17] != "X"}
        self._numbers = numbers
        self._ints = np.array(sorted(numbers), dtype=np.uint64)

    def _text(self, run: bytes) -> set[str]:
        found = {self._prefixes[run[i : i + 17]] for i in range(len(run) - 16) if run[i : i + 17] in self._prefixes}
        found |= {self._hex[run[i : i + 34]] for i in range(len(run) - 33) if run[i : i + 34] in self._hex}
        return found

    def __call__(self, data: bytes) -> set[str]:
        found: set[str] = set()
        for m in _DIGIT_RUN.finditer(data):
            found |= self._text(m.group())
        for m in _WIDE_DIGIT_RUN.finditer(data):
            found |= self._text(m.group()[::2])
        for offset in range(8):
            usable = (len(data) - offset) // 8 * 8
            if usable <= 0:
                continue
            words = np.frombuffer(data, dtype="<u8", count=usable // 8, offset=offset)
            for view in (words, words.byteswap()):
                for value in view[np.isin(view, self._ints)].tolist():
                    found.add(self._numbers[int(value)])
        return found


# ------------------------------------------------------------------------------ the recorded run


@dataclasses.dataclass
class Call:
    """One lookup request the client made: whom it asked about, where, and (once known) its nonce."""

    query_id: str
    ids: list[str]
    regions: list[str]
    identity: str
    purpose: str
    allowed: bool


@dataclasses.dataclass
class Run:
    fed: harness.Federation
    recorder: CoordinatorRecorder
    logs: LogRecords
    keys: he.ClientKeys
    target: str  # looked up alone, per city, without the home region, and in the screening
    used: list[str]  # every identifier any lookup asked about
    calls: list[Call]
    screening: LookupAnswer
    nonces: dict[str, str]  # query id -> the envelope's nonce (hex), from what the client sent


def absent_ids(n: int) -> list[str]:
    return person_id_array([110101] * n, [19810203] * n, list(range(n))).tolist()


def single(client: Any, calls: list[Call], pid: str, regions: Sequence[str] = NODES, **kw: Any) -> LookupAnswer:
    answer: LookupAnswer = client.lookup([pid], **kw)
    calls.append(Call(answer.query_ids[0], [pid.strip().upper()], list(regions), "caseworker", kw["purpose"], True))
    return answer


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("lookup-secrecy")
    for node in NODES:
        generate_node(root / "data", node, ROWS, SEED)
    logs = LogRecords()

    root_logger = logging.getLogger()
    old_level = root_logger.level
    root_logger.addHandler(logs)
    root_logger.setLevel(logging.DEBUG)
    keys = he.ClientKeys.generate()
    try:
        with pytest.MonkeyPatch.context() as patch, recording(patch) as recorder:
            with harness.federation(
                root, hpf_tables(), {n: {} for n in NODES}, write_data=False, policy=DEFAULT_POLICY, people=PEOPLE
            ) as fed:
                yield _traffic(fed, recorder, logs, keys)
    finally:
        root_logger.removeHandler(logs)
        root_logger.setLevel(old_level)


def _traffic(fed: harness.Federation, recorder: CoordinatorRecorder, logs: LogRecords, keys: he.ClientKeys) -> Run:
    everyone = sorted(
        r[0]
        for r in fed.oracle(
            "SELECT person_id FROM accounts UNION SELECT person_id FROM deposits UNION SELECT person_id FROM loans "
            "UNION SELECT person_id FROM withdrawals"
        )
    )
    planted = [p.person_id for p in planted_duplicate_loans(SEED, ROWS, NODES)]
    home = {r[0] for r in fed.node_oracle("shanghai", "SELECT person_id FROM accounts")}
    target = next(p for p in planted if p in home)  # in shanghai and another region
    x_person = next(p for p in everyone if p.endswith("X"))
    rng = random.Random(5)
    others = rng.sample([p for p in everyone if p != target and p != x_person], 3)
    absent = absent_ids(3)
    calls: list[Call] = []
    with fed.client(keys=keys) as caseworker:
        single(caseworker, calls, target, **REVIEW)
        single(caseworker, calls, f" {x_person[:17]}x ", **REVIEW)  # as typed: spaces, lower-case x
        for pid in [*others, absent[0]]:
            single(caseworker, calls, pid, **REVIEW)
        by_city = single(caseworker, calls, target, by_city=True, **TRANSFER)
        assert by_city.by_city is not None and sum(c.cities for c in by_city.by_city[0].values()) >= 2
        single(caseworker, calls, target, regions=NODES[1:], exclude_home=True, **REVIEW)
        with pytest.raises(FederationError) as refused:
            caseworker.lookup([others[0]], purpose="statistics", consent="C-1")
        assert refused.value.code == "POLICY_PURPOSE_NOT_ALLOWED"
        refused_qid = query_id(recorder.from_client("/Lookup")[-1].envelope)
        calls.append(Call(refused_qid, [others[0]], NODES, "caseworker", "statistics", False))
    screened = [*everyone, *absent]
    random.Random(6).shuffle(screened)
    with fed.client(keys=keys, person="bank") as bank:
        screening = bank.screen(screened, batch=BATCH, parallel=2, tokens=fed.consent_tokens(screened), **REVIEW)
    for i, qid in enumerate(screening.query_ids):
        calls.append(Call(qid, screened[i * BATCH : (i + 1) * BATCH], NODES, "bank", "loan-review", True))
    assert {p for p, f in zip(screened, screening.facts, strict=True) if f.duplicate_loans} == set(planted)
    recorder.from_nodes(sum(len(c.regions) for c in calls))
    nonces = {}
    for request in recorder.from_client("/Lookup"):
        envelope = pb.QueryEnvelope.FromString(request.envelope.envelope)
        nonces[query_id(request.envelope)] = envelope.nonce.hex()
    used = sorted({pid for c in calls for pid in c.ids})
    return Run(fed, recorder, logs, keys, target, used, calls, screening, nonces)


def audit_entries(fed: harness.Federation, node: str) -> list[dict[str, Any]]:
    lines = (fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------------------------ the tests


def test_the_search_finds_an_identifier_in_every_form_it_looks_for() -> None:
    """The detector itself: if an identifier were in a message, in any of these forms, it would be found."""
    pid, x_pid = absent_ids(1)[0], next(p for p in absent_ids(40) if p.endswith("X"))
    search = IdentifierSearch([pid, x_pid])
    noise = bytes(range(256)) * 3
    forms = [
        pid.encode(),
        pid[:17].encode(),
        x_pid[:17].encode() + b"x",
        pid.encode("utf-16-le"),
        pid.encode().hex().encode(),
        int(pid).to_bytes(8, "little"),
        int(pid[:17]).to_bytes(8, "big"),
    ]
    for form in forms:
        for at in (0, 1, 7, 100):
            assert search(noise[:at] + form + noise) != set(), form
    assert search(noise + pid[:16].encode() + noise) == set()
    assert search(b"12345678901234567890123") == set()  # digits, but nobody's


def test_the_recording_is_complete_and_blobs_pass_through_untouched(run: Run) -> None:
    lookups = run.recorder.from_client("/Lookup")
    assert sorted(query_id(r.envelope) for r in lookups) == sorted(c.query_id for c in run.calls)
    expected_answers = sum(len(c.regions) for c in run.calls)
    from_nodes = [r for r in run.recorder.from_nodes(expected_answers) if r.method.endswith("/Lookup")]
    assert len(from_nodes) == expected_answers
    refused = [r for r in from_nodes if r.message is None]
    assert len(refused) == len(NODES)  # the one refused lookup, refused by each region
    by_qid = {query_id(r.envelope): r for r in lookups}
    calls = {c.query_id: c for c in run.calls}
    assert set(calls) == set(by_qid)
    forwarded = [(m, r) for m, r in run.recorder.node_requests if m.endswith("/Lookup")]
    assert len(forwarded) == expected_answers
    for _, request in forwarded:
        original = by_qid[request.query_id]
        blobs = {s.node_id: s.blob for s in original.sealed}
        assert request.envelope == original.envelope
        assert request.sealed in blobs.values()  # the client's own blob for one of the regions it asked
        # one run over exactly the regions asked (no region failed): region names, nothing about anyone
        assert sorted(request.participants) == sorted(calls[request.query_id].regions)
    for request in lookups:
        call = calls[query_id(request.envelope)]
        assert sorted(s.node_id for s in request.sealed) == sorted(call.regions)
        sealed = [s.blob for s in request.sealed]
        assert len(set(sealed)) == len(sealed)  # a separate sealing for each region
        # the count is all it shows (and, for the bank's lookups under consent tokens, the key the tokens travel under)
        keyed = KEY_BYTES if call.identity == "bank" else 0
        assert all(len(b) == SALT_BYTES + len(call.ids) * ID_CHARS + keyed + 16 for b in sealed)


def test_no_identifier_reaches_the_coordinator_in_any_message(run: Run) -> None:
    search = IdentifierSearch(run.used)
    assert len(run.used) > 500
    messages: list[tuple[str, bytes]] = [(f"{r.source} {r.method}", r.wire) for r in run.recorder.received]
    messages += [("a reply to the client", reply.SerializeToString()) for reply in run.recorder.replies]
    messages += [(f"a request to a node {m}", r.SerializeToString()) for m, r in run.recorder.node_requests]
    assert len(messages) > 4 * len(run.calls)
    assert sum(len(w) for _, w in messages) > 1_000_000  # ciphertexts and sealed blobs: there is a lot to search
    for what, wire in messages:
        assert search(wire) == set(), f"an identifier is in {what}"
    # the people looked up one at a time, in every form, searched for plainly too
    for pid in {c.ids[0] for c in run.calls if c.identity == "caseworker"}:
        for form in (pid, pid[:17], pid[:17] + "x", pid.lower()):
            for what, wire in messages:
                assert form.encode() not in wire and form.encode("utf-16-le") not in wire, what


def test_audit_logs_hold_keyed_tags_and_no_identifier(run: Run) -> None:
    search = IdentifierSearch(run.used)
    for node in NODES:
        state = run.fed.root / "state" / node
        files = [p for p in state.rglob("*") if p.is_file()]
        assert state / "audit" / "entries.jsonl" in files
        for path in files:
            assert search(path.read_bytes()) == set(), f"an identifier is in {path}"
        lookups = [e for e in audit_entries(run.fed, node) if e["operation"] == "lookup"]
        asked_here = [c for c in run.calls if node in c.regions]
        assert len(lookups) == len(asked_here)
        by_nonce = {run.nonces[c.query_id]: c for c in asked_here}
        for entry in lookups:
            call = by_nonce[entry["nonce"]]
            tags = entry["subjects"].split()
            assert len(tags) == len(call.ids) and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in tags)
            assert (entry["identity"], entry["purpose"]) == (call.identity, call.purpose)
            assert entry["decision"] == ("allowed" if call.allowed else "refused")


def test_an_auditor_with_the_subject_key_finds_exactly_who_looked_a_person_up(run: Run) -> None:
    target = run.target
    looked_up = [c for c in run.calls if target in c.ids]
    assert len(looked_up) == 4  # alone, per city, without shanghai, and in one screening batch
    keys = {n: read_secret(run.fed.audit_dir(n) / "subject-tag.key") for n in NODES}
    for node in NODES:
        entries = audit_entries(run.fed, node)
        key = keys[node]
        found = [e for e in entries if subject_tag(key, e["nonce"], target) in e.get("subjects", "").split()]
        expected = {run.nonces[c.query_id] for c in looked_up if node in c.regions}
        assert {e["nonce"] for e in found} == expected and len(found) == len(expected)
        assert len(expected) == (3 if node == "shanghai" else 4)
        # each entry's tag for the person is another: without the key, two lookups of one person are unlinkable
        tags = [subject_tag(key, e["nonce"], target) for e in found]
        assert len(set(tags)) == len(tags)
        # the key is the region's own: another region's key finds nobody in this log
        other = keys[next(n for n in NODES if n != node)]
        assert not [e for e in entries if subject_tag(other, e["nonce"], target) in e.get("subjects", "").split()]
        # and the person refused a lookup is found in exactly that refused entry
        refused = next(c for c in run.calls if not c.allowed)
        hits = [e for e in entries if subject_tag(key, e["nonce"], refused.ids[0]) in e.get("subjects", "").split()]
        assert any(e["decision"] == "refused" and e["code"] == "POLICY_PURPOSE_NOT_ALLOWED" for e in hits)


def test_receipts_carry_the_tags_and_no_identifier(run: Run) -> None:
    search = IdentifierSearch(run.used)
    assert len(run.screening.receipts) == len(run.screening.query_ids) * len(NODES)
    for receipt in run.screening.receipts:
        entry = receipt.fields()
        assert entry["operation"] == "lookup" and entry["identity"] == "bank"
        assert 0 < len(entry["subjects"].split()) <= BATCH
        assert search(receipt.entry) == set()


def test_no_identifier_is_logged(run: Run) -> None:
    search = IdentifierSearch(run.used)
    text = "\n".join(run.logs.lines)
    assert "lookup" in text and "answered" in text  # the servers' own log lines were captured
    assert search(text.encode()) == set()


def test_a_client_cannot_ask_one_region_about_a_person(run: Run) -> None:
    """Only the coordinator may call a node: a client must not learn one region's facts by asking it alone."""
    fed, keys = run.fed, run.keys
    pki = fed.pki_dir
    one_time = OneTimeKey()
    spec = pb.LookupSpec(
        subjects=1,
        seal_public_key=one_time.public,
        regions=["hangzhou"],
        subjects_commitment=one_time.commitment([run.target]),
    )
    signed = Signer.from_files(pki / "people" / "caseworker.pem", pki / "people" / "caseworker.key").sign(
        sql="",
        context_digest=he.context_digest(keys.public_context()),
        federation=fed.catalog.federation,
        operation="lookup",
        purpose=REVIEW["purpose"],
        consent_ref=REVIEW["consent"],
        lookup=spec,
    )
    qid = query_id(signed)
    region_key = load_public_b64(next(n.agreement_key or "" for n in fed.catalog.nodes if n.id == "hangzhou"))
    request = pb.NodeLookupRequest(
        he_format=HE_FORMAT,
        query_id=qid,
        public_context=keys.public_context(),
        envelope=signed,
        sealed=one_time.seal([run.target], region_key, qid, "hangzhou"),
    )
    caseworker = TlsConfig(
        ca=pki / "ca.pem", cert=pki / "people" / "caseworker.pem", key=pki / "people" / "caseworker.key"
    )
    before = len(audit_entries(fed, "hangzhou"))
    with secure_channel(f"127.0.0.1:{fed.nodes['hangzhou'].port}", caseworker) as channel:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.NodeStub(channel).Lookup(request, timeout=RPC_TIMEOUT_S)
    assert from_rpc_error(info.value).code == "PARTY_NOT_ALLOWED"
    entries = audit_entries(fed, "hangzhou")
    assert len(entries) == before + 1
    assert (entries[-1]["decision"], entries[-1]["code"]) == ("refused", "PARTY_NOT_ALLOWED")
    assert "subjects" not in entries[-1]  # refused before anything was opened


def test_sealed_blobs_in_the_recording_open_only_for_their_region(run: Run) -> None:
    """What the coordinator holds is useless to it: a recorded blob, given to any region but its own (or to its
    own under any other question), does not open."""
    request = run.recorder.from_client("/Lookup")[0]
    spec = pb.QueryEnvelope.FromString(request.envelope.envelope).lookup
    qid = query_id(request.envelope)
    agreement = {n: AgreementKey.load_or_create(run.fed.root / "state" / n) for n in NODES}
    for sealed in request.sealed:
        commitment = spec.subjects_commitment
        opened = agreement[sealed.node_id].open(sealed.blob, spec.seal_public_key, qid, sealed.node_id, 1, commitment)
        assert opened == [run.target]
        for node in NODES:
            if node != sealed.node_id:
                with pytest.raises(FederationError) as info:
                    agreement[node].open(sealed.blob, spec.seal_public_key, qid, node, 1, commitment)
                assert info.value.code == "LOOKUP_SEAL_INVALID"
        with pytest.raises(FederationError):
            agreement[sealed.node_id].open(
                sealed.blob, spec.seal_public_key, run.calls[1].query_id, sealed.node_id, 1, commitment
            )
