"""Signed question envelopes, revocation lists and the replay guard, without servers."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from hpf.federation.audit.log import AuditLog
from hpf.federation.errors import AuthError, ConfigError
from hpf.federation.generated import hpf_federation_pb2 as pb
from hpf.federation.trust import ca_record, certificates, key_files, pki, revocation
from hpf.federation.trust.envelope import SIGNING_PREFIX, EnvelopeVerifier, Signer, query_id
from hpf.federation.trust.revocation import RevocationList
from hpf.node.replay import ReplayGuard

DIGEST = "ab" * 32


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> pki.FederationFiles:
    root = tmp_path_factory.mktemp("pki")
    return pki.init_federation(root, ["shanghai"], federation="test", clients=[("alice", "caseworker", "suzhou")])


def signer_for(files: key_files.CertFiles) -> Signer:
    return Signer.from_files(files.cert, files.key)


def verifier(fed: pki.FederationFiles, crl: Path | None = None, window_s: float = 300) -> EnvelopeVerifier:
    return EnvelopeVerifier.from_files(fed["ca"].cert, "test", crl, window_s)


def sign(s: Signer, **kw: object) -> pb.SignedEnvelope:
    args: dict[str, object] = {"sql": "SELECT COUNT(*) FROM t", "context_digest": DIGEST, "federation": "test"}
    args.update(kw)
    return s.sign(**args)  # type: ignore[arg-type]


def test_a_signed_question_verifies_and_names_its_signer(fed: pki.FederationFiles) -> None:
    signed = sign(signer_for(fed["people"]["alice"]), purpose="loan-review", consent_ref="C-1")
    ok = verifier(fed).verify(signed, operation="query")
    assert ok.signer.common_name == "alice" and ok.signer.role == "caseworker" and ok.signer.region == "suzhou"
    assert ok.envelope.sql == "SELECT COUNT(*) FROM t" and ok.envelope.purpose == "loan-review"
    assert ok.envelope.context_digest == DIGEST and len(ok.envelope.nonce) == 16
    assert ok.query_id == query_id(signed) and len(ok.query_id) == 32


def test_each_signature_has_a_fresh_nonce_and_query_id(fed: pki.FederationFiles) -> None:
    s = signer_for(fed["people"]["alice"])
    a, b = sign(s), sign(s)
    assert query_id(a) != query_id(b)


def test_unsigned_is_refused(fed: pki.FederationFiles) -> None:
    with pytest.raises(AuthError) as err:
        verifier(fed).verify(pb.SignedEnvelope(), operation="query")
    assert err.value.code == "AUTH_UNSIGNED"


def _altered(signed: pb.SignedEnvelope, **changes: object) -> pb.SignedEnvelope:
    env = pb.QueryEnvelope()
    env.ParseFromString(signed.envelope)
    for k, v in changes.items():
        setattr(env, k, v)
    return pb.SignedEnvelope(
        envelope=env.SerializeToString(), signature=signed.signature, signer_certificate=signed.signer_certificate
    )


@pytest.mark.parametrize(
    "change",
    [
        {"sql": "SELECT SUM(x) FROM t"},
        {"purpose": "loan-review"},
        {"context_digest": "cd" * 32},
        {"operation": "explain"},
        {"issued_at_ms": 1},
        {"max_runs": 16},  # a coordinator that would run the question more often than the asker allowed
    ],
)
def test_any_alteration_breaks_the_signature(fed: pki.FederationFiles, change: dict[str, object]) -> None:
    signed = _altered(sign(signer_for(fed["people"]["alice"])), **change)
    with pytest.raises(AuthError) as err:
        verifier(fed).verify(signed, operation="query")
    assert err.value.code == "AUTH_SIGNATURE_INVALID"


def test_a_signature_by_another_key_is_refused(fed: pki.FederationFiles, tmp_path: Path) -> None:
    forger = pki.issue_certificate(fed["ca"], tmp_path, "mallory", "person", role="caseworker")
    real = sign(signer_for(fed["people"]["alice"]))
    forged = sign(signer_for(forger))
    mixed = pb.SignedEnvelope(
        envelope=real.envelope, signature=forged.signature, signer_certificate=real.signer_certificate
    )
    with pytest.raises(AuthError) as err:
        verifier(fed).verify(mixed, operation="query")
    assert err.value.code == "AUTH_SIGNATURE_INVALID"


def test_wrong_ca_expired_and_not_a_person(fed: pki.FederationFiles, tmp_path: Path) -> None:
    other = pki.init_federation(tmp_path / "other", [], federation="other", clients=[("eve", "caseworker", None)])
    expired = pki.issue_certificate(fed["ca"], tmp_path, "old", "person", role="analyst", valid_days=-1)
    cases = {
        "AUTH_WRONG_CA": sign(signer_for(other["people"]["eve"])),
        "AUTH_CERT_EXPIRED": sign(signer_for(expired)),
    }
    for code, signed in cases.items():
        with pytest.raises(AuthError) as err:
            verifier(fed).verify(signed, operation="query")
        assert err.value.code == code
    with pytest.raises(AuthError) as err:
        Signer.from_files(fed["nodes"]["shanghai"].cert, fed["nodes"]["shanghai"].key)
    assert err.value.code == "AUTH_NOT_A_PERSON"


def test_operation_federation_and_time_window(fed: pki.FederationFiles) -> None:
    s = signer_for(fed["people"]["alice"])
    v = verifier(fed, window_s=60)
    with pytest.raises(AuthError) as err:
        v.verify(sign(s, operation="explain"), operation="query")
    assert err.value.code == "AUTH_ENVELOPE_OPERATION"
    with pytest.raises(AuthError) as err:
        v.verify(sign(s, federation="elsewhere"), operation="query")
    assert err.value.code == "AUTH_ENVELOPE_FEDERATION"
    now = int(time.time() * 1000)
    for issued in (now - 61_000, now + 61_000):
        with pytest.raises(AuthError) as err:
            v.verify(sign(s, now_ms=issued), operation="query")
        assert err.value.code == "AUTH_ENVELOPE_STALE"
    assert v.verify(sign(s, now_ms=now - 59_000), operation="query").signer.common_name == "alice"


def test_revocation_is_picked_up_when_the_list_changes(fed: pki.FederationFiles, tmp_path: Path) -> None:
    bob = pki.issue_certificate(fed["ca"], tmp_path, "bob", "person", role="caseworker")
    crl = Path(fed["ca"].cert).parent / revocation.CRL_FILE
    crl.unlink(missing_ok=True)
    revocation.revoke(fed["ca"].cert.parent, fed["people"]["alice"].cert.read_bytes())  # someone else first
    v = verifier(fed, crl=crl)
    signed = sign(signer_for(bob))
    assert v.verify(signed, operation="query").signer.common_name == "bob"
    revocation.revoke(fed["ca"].cert.parent, bob.cert.read_bytes(), reason=x509.ReasonFlags.key_compromise)
    os.utime(crl, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    with pytest.raises(AuthError) as err:
        v.verify(sign(signer_for(bob)), operation="query")
    assert err.value.code == "AUTH_CERT_REVOKED"
    entries = list(x509.load_pem_x509_crl(crl.read_bytes()))
    assert {e.serial_number for e in entries} == {
        certificates.read_identity(bob.cert.read_bytes()).serial,
        certificates.read_identity(fed["people"]["alice"].cert.read_bytes()).serial,
    }
    crl.unlink()


def test_a_crl_from_another_ca_is_refused_and_a_broken_one_fails_closed(
    fed: pki.FederationFiles, tmp_path: Path
) -> None:
    other = pki.init_federation(tmp_path / "other", [], federation="other", clients=[("eve", "caseworker", None)])
    foreign = revocation.revoke(tmp_path / "other", other["people"]["eve"].cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(fed["ca"].cert.read_bytes())
    with pytest.raises(AuthError) as err:
        RevocationList(foreign, ca_cert)
    assert err.value.code == "AUTH_CRL_INVALID"
    good = tmp_path / "crl.pem"
    good.write_bytes(revocation.revoke(fed["ca"].cert.parent, fed["people"]["alice"].cert.read_bytes()).read_bytes())
    revoked = RevocationList(good, ca_cert)
    good.write_text("garbage")
    os.utime(good, ns=(time.time_ns(), time.time_ns() + 5_000_000))
    with pytest.raises(AuthError) as err:
        revoked.check(12345, "signer's")
    assert err.value.code == "AUTH_CRL_INVALID"
    (fed["ca"].cert.parent / revocation.CRL_FILE).unlink()


def test_a_crl_replaced_by_a_fifo_fails_closed_without_hanging(fed: pki.FederationFiles, tmp_path: Path) -> None:
    """Every request reads a changed list first: a path that no longer is a file (a FIFO no one writes to) must
    refuse requests, not hold every one of them waiting for a writer."""
    ca_cert = x509.load_pem_x509_certificate(fed["ca"].cert.read_bytes())
    path = tmp_path / "crl.pem"
    path.write_bytes(revocation.revoke(fed["ca"].cert.parent, fed["people"]["alice"].cert.read_bytes()).read_bytes())
    (fed["ca"].cert.parent / revocation.CRL_FILE).unlink()
    revoked = RevocationList(path, ca_cert)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.replace(fifo, path)
    codes: list[str] = []

    def check() -> None:
        with pytest.raises(AuthError) as err:
            revoked.check(12345, "signer's")
        codes.append(err.value.code)

    thread = threading.Thread(target=check, daemon=True)
    thread.start()
    thread.join(10)
    try:
        assert codes == ["AUTH_CRL_INVALID"], "a request hangs on a revocation list that is a FIFO"
    finally:
        with contextlib.suppress(OSError):  # let a reader blocked opening it go
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_revoking_a_certificate_of_another_ca_is_refused(fed: pki.FederationFiles, tmp_path: Path) -> None:
    other = pki.init_federation(tmp_path / "other", [], federation="other", clients=[("eve", "caseworker", None)])
    with pytest.raises(ConfigError) as err:
        revocation.revoke(fed["ca"].cert.parent, other["people"]["eve"].cert.read_bytes())
    assert err.value.code == "PKI_WRONG_CA"


def test_replay_guard_refuses_a_nonce_twice_and_forgets_it_once_stale() -> None:
    guard = ReplayGuard(window_s=60)
    guard.check(b"n" * 16)  # unseen: no error, nothing recorded
    guard.record(b"n" * 16, signed_at=1000.0, now=1000.0)
    for attempt in (lambda: guard.check(b"n" * 16), lambda: guard.record(b"n" * 16, signed_at=1000.0, now=1001.0)):
        with pytest.raises(AuthError) as err:
            attempt()
        assert err.value.code == "AUTH_REPLAY"
    guard.record(b"x" * 16, signed_at=1100.0, now=1100.0)  # a sweep runs: n, signed 100 s ago, is still fresh
    with pytest.raises(AuthError):
        guard.check(b"n" * 16)
    # signed more than window + 60 s ago: the envelope itself is stale now, so its nonce may be forgotten
    guard.record(b"m" * 16, signed_at=1181.0, now=1181.0)
    guard.check(b"n" * 16)
    assert len(guard) == 2


def _audited(log: AuditLog, nonce: bytes, at: float, decision: str = "allowed") -> None:
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    log.append(
        {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "nonce": nonce.hex(),
            "decision": decision,
        }
    )


def test_a_restarted_node_remembers_the_nonces_its_audit_log_holds(tmp_path: Path) -> None:
    now = time.time()
    with AuditLog.open(tmp_path / "audit", "n0", fsync=False) as log:
        _audited(log, b"a" * 16, now - 7200)  # long ago: cannot be replayed any more, not needed
        _audited(log, b"b" * 16, now - 200)  # within two windows: could still be replayed
        _audited(log, b"c" * 16, now - 10, decision="refused")  # a refused question did not use its nonce
        _audited(log, b"d" * 16, now - 1)
    with AuditLog.open(tmp_path / "audit", "n0", fsync=False) as log:
        guard = ReplayGuard.from_audit(log, window_s=300, now=now)
    assert len(guard) == 2  # the nonce from two hours ago was not even read back
    guard.record(b"e" * 16, signed_at=now, now=now)  # a sweep runs: b and d may still be replayed, so stay
    for nonce in (b"b" * 16, b"d" * 16):
        with pytest.raises(AuthError) as err:
            guard.check(nonce)
        assert err.value.code == "AUTH_REPLAY"
    guard.check(b"c" * 16)


def test_a_wider_window_after_a_restart_keeps_the_nonces_it_needs(tmp_path: Path) -> None:
    now = time.time()
    with AuditLog.open(tmp_path / "audit", "n0", fsync=False) as log:
        _audited(log, b"n" * 16, now - 3000)
    with AuditLog.open(tmp_path / "audit", "n0", fsync=False) as log:
        assert len(ReplayGuard.from_audit(log, window_s=60, now=now)) == 0
        wide = ReplayGuard.from_audit(log, window_s=3600, now=now)  # signed up to 3600 s around receipt: fresh
    with pytest.raises(AuthError):
        wide.check(b"n" * 16)


def test_signer_certificate_validity_uses_current_time(fed: pki.FederationFiles, tmp_path: Path) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    future = pki.issue_certificate(fed["ca"], tmp_path, "future", "person", role="caseworker", not_before=later)
    with pytest.raises(AuthError) as err:
        verifier(fed).verify(sign(signer_for(future)), operation="query")
    assert err.value.code == "AUTH_CERT_NOT_YET_VALID"


def test_refreshing_the_list_keeps_its_entries(fed: pki.FederationFiles, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    own = pki.init_federation(ca_dir, [], federation="test", clients=[("zoe", "caseworker", None)])
    revocation.revoke(ca_dir, own["people"]["zoe"].cert.read_bytes())
    before = x509.load_pem_x509_crl((ca_dir / revocation.CRL_FILE).read_bytes())
    revocation.refresh(ca_dir)
    after = x509.load_pem_x509_crl((ca_dir / revocation.CRL_FILE).read_bytes())
    assert [e.serial_number for e in after] == [e.serial_number for e in before]
    assert after.next_update_utc is not None and after.next_update_utc >= before.next_update_utc  # type: ignore[operator]


@pytest.mark.parametrize("max_runs", [0, 17, 1 << 31])
def test_a_question_must_bound_its_runs(fed: pki.FederationFiles, max_runs: int) -> None:
    """A question signed with no bound on its runs (0, as an older client would send) or past the most any asker
    may allow is refused, however validly signed."""
    s = signer_for(fed["people"]["alice"])
    env = pb.QueryEnvelope.FromString(sign(s).envelope)
    env.max_runs = max_runs
    data = env.SerializeToString(deterministic=True)
    signature = s._key.sign(SIGNING_PREFIX + data, ec.ECDSA(hashes.SHA256()))
    signed = pb.SignedEnvelope(envelope=data, signature=signature, signer_certificate=sign(s).signer_certificate)
    with pytest.raises(AuthError) as err:
        verifier(fed).verify(signed, operation="query")
    assert err.value.code == "AUTH_ENVELOPE_MALFORMED" and "max_runs" in err.value.message
    with pytest.raises(ConfigError):
        sign(s, max_runs=max_runs)
    assert verifier(fed).verify(sign(s, max_runs=16), operation="query").envelope.max_runs == 16


# ---------------------------------------------------------------- revocation list numbers: no rollback


def _touch(path: Path) -> None:
    """A new modification time, as a copy over the file would leave (parties re-read on a changed stat)."""
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 7_000_000))


def _unnumbered(ca_dir: Path, serials: list[int]) -> bytes:
    """A list the CA really signed, but without a CRLNumber (as lists were written before they were numbered)."""
    return _signed_with_ca_key(ca_dir, serials, None)


def _signed_with_ca_key(ca_dir: Path, serials: list[int], number: int | None) -> bytes:
    """A list signed with the CA's key outside its tools (a stolen copy of the key, a second copy of the CA folder,
    a CA from before it kept a record): any number, any entries."""
    from cryptography.hazmat.primitives import hashes, serialization

    ca_cert, ca_key = key_files.load_ca(ca_dir)
    now = dt.datetime.now(dt.UTC)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=1))
    if number is not None:
        builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    for serial in serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_every_list_the_ca_signs_has_a_higher_number(tmp_path: Path) -> None:
    own = pki.init_federation(
        tmp_path, [], federation="test", clients=[("zoe", "caseworker", None), ("yan", "caseworker", None)]
    )
    crl = tmp_path / revocation.CRL_FILE
    numbers = [revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes()))]
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())
    numbers.append(revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes())))
    revocation.refresh(tmp_path)
    numbers.append(revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes())))
    revocation.revoke(tmp_path, own["people"]["yan"].cert.read_bytes())
    numbers.append(revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes())))
    assert numbers == [1, 2, 3, 4]
    pki.init_federation(tmp_path, [], clients=[("zoe", "caseworker", None)])  # kept as it is
    assert revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes())) == 4


def test_init_numbers_a_list_from_before_lists_were_numbered_keeping_its_entries(tmp_path: Path) -> None:
    own = pki.init_federation(tmp_path, [], federation="test", clients=[("zoe", "caseworker", None)])
    zoe = certificates.read_identity(own["people"]["zoe"].cert.read_bytes()).serial
    crl = tmp_path / revocation.CRL_FILE
    crl.write_bytes(_unnumbered(tmp_path, [zoe]))
    (tmp_path / ca_record.RECORD_FILE).unlink()  # a CA from before lists were numbered kept no record either
    pki.init_federation(tmp_path, [], clients=[("zoe", "caseworker", None)])
    renewed = x509.load_pem_x509_crl(crl.read_bytes())
    assert revocation.crl_number(renewed) == 1 and [e.serial_number for e in renewed] == [zoe]


def test_an_older_list_put_back_does_not_unrevoke(tmp_path: Path) -> None:
    own = pki.init_federation(
        tmp_path, [], federation="test", clients=[("zoe", "caseworker", None), ("yan", "caseworker", None)]
    )
    ca_cert = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    zoe = certificates.read_identity(own["people"]["zoe"].cert.read_bytes()).serial
    crl = tmp_path / revocation.CRL_FILE
    older = crl.read_bytes()  # list 1: nobody revoked
    listed = RevocationList(crl, ca_cert)
    listed.check(zoe, "signer's")
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())  # list 2
    _touch(crl)
    with pytest.raises(AuthError) as err:
        listed.check(zoe, "signer's")
    assert err.value.code == "AUTH_CERT_REVOKED" and listed.number == 2
    # the attacker's ways back: the older list (really signed by the CA), and a list without a number
    for stale in (older, _unnumbered(tmp_path, [])):
        crl.write_bytes(stale)
        _touch(crl)
        with pytest.raises(AuthError) as err:
            listed.check(zoe, "signer's")
        assert err.value.code == "AUTH_CERT_REVOKED" and listed.number == 2  # list 2 stays in force
        listed.check(
            certificates.read_identity(own["people"]["yan"].cert.read_bytes()).serial, "signer's"
        )  # others pass
    with pytest.raises(AuthError) as err:  # and no party starts on a list without a number
        RevocationList(crl, ca_cert)
    assert err.value.code == "REVOCATION_NUMBER_MISSING"


def test_a_restarted_party_with_state_refuses_an_older_list(tmp_path: Path) -> None:
    own = pki.init_federation(tmp_path / "pki", [], federation="test", clients=[("zoe", "caseworker", None)])
    ca_cert = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    crl, state = tmp_path / "pki" / revocation.CRL_FILE, tmp_path / "state" / "revocation-state.json"
    older = crl.read_bytes()
    revocation.revoke(tmp_path / "pki", own["people"]["zoe"].cert.read_bytes())
    newest = crl.read_bytes()
    assert RevocationList(crl, ca_cert, state).number == 2
    assert json.loads(state.read_text())["crl_number"] == 2 and state.stat().st_mode & 0o777 == 0o600
    crl.write_bytes(older)
    with pytest.raises(AuthError) as err:  # the party would forget the revocation: it does not start
        RevocationList(crl, ca_cert, state)
    assert err.value.code == "REVOCATION_ROLLBACK" and "hpf pki crl" in (err.value.hint or "")
    RevocationList(crl, ca_cert)  # without the state it cannot tell (the coordinator by default)
    crl.write_bytes(newest)
    revocation.refresh(tmp_path / "pki")  # the operator re-signs the newest: list 3
    assert RevocationList(crl, ca_cert, state).number == 3
    # a new federation CA starts its lists afresh: its list 1 is not refused for the old CA's 3
    pki.init_federation(tmp_path / "pki", [], federation="test", force=True)
    new_ca = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    assert RevocationList(crl, new_ca, state).number == 1
    for broken in (b"not json", b'{"ca": "x", "crl_number": "3"}', b"[]"):
        state.write_bytes(broken)
        with pytest.raises(ConfigError) as cerr:
            RevocationList(crl, new_ca, state)
        assert cerr.value.code == "REVOCATION_STATE_INVALID"


def _serials(crl: Path) -> set[int]:
    return {entry.serial_number for entry in x509.load_pem_x509_crl(crl.read_bytes())}


def _number(crl: Path) -> int | None:
    return revocation.crl_number(x509.load_pem_x509_crl(crl.read_bytes()))


@pytest.mark.parametrize("routine", ["hpf pki crl", "hpf pki revoke carol", "hpf pki init"])
def test_a_rolled_back_list_is_not_signed_again_as_a_new_one(tmp_path: Path, routine: str) -> None:
    """The attacker copies list 1 over list 2 (which revoked bob); parties refuse it, and then the operator does
    something routine in the CA folder. The CA signs list 3 from its own record: bob stays revoked everywhere."""
    people = [("bob", "caseworker", None), ("carol", "caseworker", None)]
    own = pki.init_federation(tmp_path / "pki", [], federation="test", clients=people)
    ca_dir, ca_cert = tmp_path / "pki", x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    bob, carol = (certificates.read_identity(own["people"][n].cert.read_bytes()).serial for n in ("bob", "carol"))
    crl, state = ca_dir / revocation.CRL_FILE, tmp_path / "state" / "revocation-state.json"
    list_1 = crl.read_bytes()
    revocation.revoke(ca_dir, own["people"]["bob"].cert.read_bytes())  # list 2
    party = RevocationList(crl, ca_cert, state)
    assert party.number == 2
    crl.write_bytes(list_1)  # the attacker's rollback: refused, list 2 stays in force
    _touch(crl)
    with pytest.raises(AuthError) as err:
        party.check(bob, "signer's")
    assert err.value.code == "AUTH_CERT_REVOKED" and party.number == 2
    if routine == "hpf pki crl":
        revocation.refresh(ca_dir)
    elif routine == "hpf pki revoke carol":
        revocation.revoke(ca_dir, own["people"]["carol"].cert.read_bytes())
    else:
        pki.init_federation(ca_dir, [], clients=people)
    assert _number(crl) == 3  # the next number, never the rolled-back file's next
    assert bob in _serials(crl) and (carol in _serials(crl)) == (routine == "hpf pki revoke carol")
    _touch(crl)
    for listed in (party, RevocationList(crl, ca_cert, state), RevocationList(crl, ca_cert)):  # running, restarted
        with pytest.raises(AuthError) as err:
            listed.check(bob, "signer's")
        assert err.value.code == "AUTH_CERT_REVOKED" and listed.number == 3


def test_another_list_under_the_number_in_force_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A second list numbered as the one in force (signed with the CA's key, say by a second copy of the CA
    folder, without the revocation) does not replace it, at a running party nor at a restarted one."""
    own = pki.init_federation(tmp_path / "pki", [], federation="test", clients=[("zoe", "caseworker", None)])
    ca_dir, ca_cert = tmp_path / "pki", x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    zoe = certificates.read_identity(own["people"]["zoe"].cert.read_bytes()).serial
    crl, state = ca_dir / revocation.CRL_FILE, tmp_path / "state" / "revocation-state.json"
    revocation.revoke(ca_dir, own["people"]["zoe"].cert.read_bytes())  # list 2: zoe
    in_force = crl.read_bytes()
    party = RevocationList(crl, ca_cert, state)
    crl.write_bytes(_signed_with_ca_key(ca_dir, [], 2))  # another list 2: nobody revoked
    _touch(crl)
    with pytest.raises(AuthError) as err:
        party.check(zoe, "signer's")
    assert err.value.code == "AUTH_CERT_REVOKED" and party.number == 2
    assert "REVOCATION_CONFLICT" in caplog.text
    with pytest.raises(AuthError) as err:  # a restarted party knows the list it accepted, not just its number
        RevocationList(crl, ca_cert, state)
    assert err.value.code == "REVOCATION_CONFLICT" and "hpf pki crl" in (err.value.hint or "")
    crl.write_bytes(in_force)  # the very list in force, copied back: accepted as it is
    _touch(crl)
    with pytest.raises(AuthError) as err:
        party.check(zoe, "signer's")
    assert err.value.code == "AUTH_CERT_REVOKED"
    assert RevocationList(crl, ca_cert, state).number == 2
    assert json.loads(state.read_text())["crl_sha256"] == revocation._digest(x509.load_pem_x509_crl(in_force))
    # a state written before parties kept the digest: the list under its number is accepted, and its digest kept
    state.write_text(json.dumps({"ca": ca_record.ca_id(ca_cert), "crl_number": 2}))
    assert RevocationList(crl, ca_cert, state).number == 2
    crl.write_bytes(_signed_with_ca_key(ca_dir, [], 2))
    with pytest.raises(AuthError) as err:
        RevocationList(crl, ca_cert, state)
    assert err.value.code == "REVOCATION_CONFLICT"
    state.write_text(json.dumps({"ca": ca_record.ca_id(ca_cert), "crl_number": 2, "crl_sha256": "zz"}))
    with pytest.raises(ConfigError) as cerr:
        RevocationList(crl, ca_cert, state)
    assert cerr.value.code == "REVOCATION_STATE_INVALID"


def test_the_rollback_hint_does_not_ask_to_re_sign_the_file_put_back(tmp_path: Path) -> None:
    own = pki.init_federation(tmp_path / "pki", [], federation="test", clients=[("zoe", "caseworker", None)])
    ca_cert = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    crl, state = tmp_path / "pki" / revocation.CRL_FILE, tmp_path / "revocation-state.json"
    older = crl.read_bytes()
    revocation.revoke(tmp_path / "pki", own["people"]["zoe"].cert.read_bytes())
    RevocationList(crl, ca_cert, state)
    crl.write_bytes(older)
    with pytest.raises(AuthError) as err:
        RevocationList(crl, ca_cert, state)
    hint = err.value.hint or ""
    assert err.value.code == "REVOCATION_ROLLBACK"
    assert "newest list the CA signed" in hint and "CA's own record" in hint and "re-sign it" not in hint


def test_an_older_copy_of_the_cas_record_neither_reuses_a_number_nor_drops_a_revocation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The CA's record put back from an older backup. With the newest list still published, the CA brings its
    record up to that list. With the list rolled back too, the CA cannot know; but a running party refuses the
    same-numbered list it then signs, and the next one, which leaves out what it had revoked."""
    from hpf.federation.trust import ca_record

    own = pki.init_federation(
        tmp_path, [], federation="test", clients=[("zoe", "caseworker", None), ("yan", "caseworker", None)]
    )
    ca_cert = x509.load_pem_x509_certificate(own["ca"].cert.read_bytes())
    zoe = certificates.read_identity(own["people"]["zoe"].cert.read_bytes()).serial
    crl, record = tmp_path / revocation.CRL_FILE, tmp_path / ca_record.RECORD_FILE
    old_list, old_record = crl.read_bytes(), record.read_bytes()  # list 1: nobody revoked
    party = RevocationList(crl, ca_cert)
    revocation.revoke(tmp_path, own["people"]["zoe"].cert.read_bytes())  # list 2: zoe
    _touch(crl)
    with pytest.raises(AuthError):
        party.check(zoe, "signer's")
    # the record alone goes back: the next list is 3 and still revokes zoe
    record.write_bytes(old_record)
    revocation.refresh(tmp_path)
    newest = x509.load_pem_x509_crl(crl.read_bytes())
    assert revocation.crl_number(newest) == 3 and zoe in {e.serial_number for e in newest}
    _touch(crl)
    with pytest.raises(AuthError) as err:
        party.check(zoe, "signer's")
    assert err.value.code == "AUTH_CERT_REVOKED" and party.number == 3
    # the record and the list both go back: the CA signs 2 (below the list in force), 3 (another list under
    # its number), then 4 and 5 (which leave zoe out): the running party refuses each and zoe stays refused
    record.write_bytes(old_record)
    crl.write_bytes(old_list)
    for expected in ("REVOCATION_ROLLBACK", "REVOCATION_CONFLICT", "REVOCATION_SHRUNK", "REVOCATION_SHRUNK"):
        caplog.clear()
        revocation.refresh(tmp_path)
        _touch(crl)
        with pytest.raises(AuthError) as err:
            party.check(zoe, "signer's")
        assert err.value.code == "AUTH_CERT_REVOKED" and party.number == 3, expected
        assert expected in caplog.text, (expected, caplog.text)
