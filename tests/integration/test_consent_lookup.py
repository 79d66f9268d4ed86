"""Person lookups under verifiable consent: a bank whose role's policy takes tokens is answered only with each
person's token, sealed with the identifier, and every bad token is refused by its own code, after which the same
servers answer an honest lookup."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import harness
import pytest
import yaml
from coordinator_recorder import CoordinatorRecorder, recording
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpf.client.federation_client import FederationClient
from hpf.demo.synth import generate_node
from hpf.federation.consent import revocations as consent_revocations
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.errors import FederationError
from hpf.federation.hpf_schema import hpf_tables
from hpf.federation.trust import certificates
from hpf.policies import DEFAULT_POLICY

NODES = ["shanghai", "hangzhou", "nanjing"]
SEED, ROWS = 11, 2_000
PEOPLE = (("caseworker", "caseworker", "shanghai"), ("bank", "integrator", "nanjing"))
ISSUER, OTHER_ISSUER = "sh-consent", "bj-consent"
KEY, OTHER_KEY = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
REVIEW = {"purpose": "loan-review"}
LOAN_REVIEW = ("duplicate_loans", "loan_cities")  # what a bank's loan review asks for by default


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Federation]:
    root = tmp_path_factory.mktemp("consent")
    for node in NODES:
        generate_node(root / "data", node, ROWS, SEED)
    policy = root / "token-consent.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "extends": str(DEFAULT_POLICY),
                "description": "banks look people up with each person's consent token",
                "roles": {"integrator": {"lookups": {"consent": "token", "consent_issuers": [ISSUER]}}},
            }
        )
    )
    issuers = [
        {"id": i, "key": base64.b64encode(public_raw(k)).decode()}
        for i, k in ((ISSUER, KEY), (OTHER_ISSUER, OTHER_KEY))
    ]
    revocations = root / "revocations.json"
    consent_revocations.revoke(revocations, KEY, ISSUER, [])  # the issuer's first list: nothing revoked yet
    with (
        pytest.MonkeyPatch.context() as patch,
        recording(patch) as recorder,
        harness.federation(
            root,
            hpf_tables(),
            {n: {} for n in NODES},
            write_data=False,
            policy=policy,
            people=PEOPLE,
            catalog_extra={"issuers": issuers},
            node_settings={n: {"consent_revocations": {ISSUER: str(revocations)}} for n in NODES},
        ) as f,
    ):
        RECORDED["recorder"] = recorder
        yield f


RECORDED: dict[str, CoordinatorRecorder] = {}  # what the coordinator received and sent, for the last test
SENT: list[tuple[list[str], list[str]]] = []  # every lookup's identifiers and tokens


def people(fed: harness.Federation, n: int) -> list[str]:
    rows = fed.oracle("SELECT DISTINCT person_id FROM accounts ORDER BY person_id")
    return [r[0] for r in rows[:n]]


def grantee(fed: harness.Federation, person: str) -> bytes:
    return consent.grantee_of(certificates.load_certificate((fed.pki_dir / "people" / f"{person}.pem").read_bytes()))


def tokens_for(
    fed: harness.Federation,
    ids: Sequence[str],
    *,
    key: Ed25519PrivateKey = KEY,
    issuer: str = ISSUER,
    to: str = "bank",
    purpose: str = "loan-review",
    facts: Sequence[str] = consent.FACTS,
    days: float = 30,
) -> list[str]:
    granted = issue_batch(
        key,
        issuer,
        ids,
        grantee=grantee(fed, to),
        purpose=purpose,
        facts=facts,
        not_after=int(time.time() + days * 86_400),
    )
    texts = [consent.token_text(t) for t in granted]
    SENT.append((list(ids), texts))
    return texts


def refused(fed: harness.Federation, ids: Sequence[str], tokens: Sequence[str] | None) -> FederationError:
    with fed.client(person="bank") as bank, pytest.raises(FederationError) as info:
        bank.lookup(ids, tokens=tokens, **REVIEW)  # type: ignore[arg-type]
    return info.value


def test_a_bank_with_tokens_gets_what_a_caseworker_gets(fed: harness.Federation) -> None:
    ids = people(fed, 3)
    with fed.client(person="bank") as bank:
        answer = bank.lookup(ids, tokens=tokens_for(fed, ids), **REVIEW)  # type: ignore[arg-type]
    with fed.client() as caseworker:
        reference = [caseworker.lookup([pid], consent="C-1", **REVIEW).facts[0] for pid in ids]  # type: ignore[arg-type]
    assert answer.facts_asked == ("duplicate_loans", "loan_cities")  # a loan review's default for a bank
    assert answer.facts == [r.only(answer.facts_asked) for r in reference] and sorted(answer.answered) == sorted(NODES)


def test_without_tokens_a_bank_is_refused(fed: harness.Federation) -> None:
    err = refused(fed, people(fed, 1), None)
    assert err.code == "POLICY_CONSENT_REQUIRED" and err.rule and err.rule.endswith("lookups.consent")


def _bad(fed: harness.Federation, ids: list[str], kind: str) -> list[str]:
    good = tokens_for(fed, ids)
    if kind == "CONSENT_SIGNATURE_INVALID":  # a root signed by a key that is not the issuer's
        return [good[0], tokens_for(fed, ids, key=OTHER_KEY)[1]]
    if kind == "CONSENT_ISSUER_UNKNOWN":  # an issuer the catalog publishes but this policy does not accept
        return [good[0], tokens_for(fed, ids, key=OTHER_KEY, issuer=OTHER_ISSUER)[1]]
    if kind == "CONSENT_GRANTEE_MISMATCH":
        return [good[0], tokens_for(fed, ids, to="caseworker")[1]]
    if kind == "CONSENT_PURPOSE_MISMATCH":
        return [good[0], tokens_for(fed, ids, purpose="marketing")[1]]
    if kind == "CONSENT_FACTS_NOT_GRANTED":
        return [good[0], tokens_for(fed, ids, facts=["duplicate_loans"])[1]]
    if kind == "CONSENT_EXPIRED":
        return [good[0], tokens_for(fed, ids, days=-1)[1]]
    if kind == "CONSENT_PERSON_MISMATCH":  # one person's token replayed for another
        return [good[0], good[0]]
    if kind == "CONSENT_MALFORMED":  # a token cut short after the client's own check: sent as the bank's bytes
        raise AssertionError("checked by the client")
    raise AssertionError(kind)


BAD_TOKENS = (
    "CONSENT_SIGNATURE_INVALID",
    "CONSENT_ISSUER_UNKNOWN",
    "CONSENT_GRANTEE_MISMATCH",
    "CONSENT_PURPOSE_MISMATCH",
    "CONSENT_FACTS_NOT_GRANTED",
    "CONSENT_EXPIRED",
    "CONSENT_PERSON_MISMATCH",
)
# which issuers a region accepts is in its policy: only the region checks CONSENT_ISSUER_UNKNOWN
REFUSED = [(code, "region") for code in BAD_TOKENS] + [
    (code, "client") for code in BAD_TOKENS if code != "CONSENT_ISSUER_UNKNOWN"
]


@pytest.mark.parametrize(("code", "checked_by"), REFUSED)
def test_each_bad_token_is_refused_by_its_code_and_the_next_lookup_is_answered(
    fed: harness.Federation, code: str, checked_by: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every region refuses a bad token by its code, also from a client that does not check its tokens first; an
    honest client refuses it itself, before anything is sent, but for the checks only a region can make."""
    ids = people(fed, 2)
    if checked_by == "region":
        monkeypatch.setattr(FederationClient, "consent_refusals", lambda *args: {})
    err = refused(fed, ids, _bad(fed, ids, code))
    assert err.code == code, err
    assert "applicant 2 of 2" in err.message and all(pid not in str(err) for pid in ids)
    with fed.client(person="bank") as bank:
        assert len(bank.lookup(ids, tokens=tokens_for(fed, ids), **REVIEW).facts) == 2  # type: ignore[arg-type]


def test_a_screening_withholds_applicants_whose_tokens_fail_and_answers_the_rest(fed: harness.Federation) -> None:
    ids = people(fed, 6)
    tokens = tokens_for(fed, ids)
    tokens[1] = tokens_for(fed, ids, days=-1)[1]
    tokens[4] = tokens[3]  # another person's token
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=tokens, batch=3, **REVIEW)  # type: ignore[arg-type]
        honest = [0, 2, 3, 5]
        single = bank.lookup([ids[i] for i in honest], tokens=[tokens[i] for i in honest], **REVIEW)  # type: ignore[arg-type]
    assert screened.withheld == {1: "CONSENT_EXPIRED", 4: "CONSENT_PERSON_MISMATCH"}
    assert [screened.facts[i] for i in honest] == single.facts


def test_a_token_that_is_not_one_is_refused_before_anything_is_sent(fed: harness.Federation) -> None:
    ids = people(fed, 2)
    good = tokens_for(fed, ids)
    err = refused(fed, ids, [good[0], good[1][:40]])
    assert err.code == "CONSENT_MALFORMED" and "applicant 2" in err.message


def test_screening_reads_tokens_and_answers_every_consented_applicant(fed: harness.Federation) -> None:
    ids = people(fed, 12)
    tokens = tokens_for(fed, ids)
    with fed.client(person="bank") as bank:
        screened = bank.screen([*ids, ids[0]], tokens=[*tokens, tokens[0]], batch=5, **REVIEW)  # type: ignore[arg-type]
        single = bank.lookup(ids[:5], tokens=tokens[:5], **REVIEW)  # type: ignore[arg-type]
    assert len(screened.facts) == 13 and screened.facts[:5] == single.facts and screened.facts[12] == single.facts[0]


def test_tokens_never_reach_the_coordinator_in_the_clear(fed: harness.Federation, tmp_path: Path) -> None:
    """What the coordinator relays is a sealed blob per region and the tokens sealed once: no token, no salt, no
    path appears in either."""
    from hpf.federation.crypto import sealing

    ids = people(fed, 2)
    raw = [consent.parse_token_text(t).encode() for t in tokens_for(fed, ids)]
    one_time = sealing.OneTimeKey()
    region = fed.catalog.nodes[0]
    assert region.agreement_key is not None
    blob = one_time.seal(ids, sealing.load_public_b64(region.agreement_key), "ab" * 16, region.id, raw)
    shared = one_time.seal_consent(raw, "ab" * 16)
    for token in raw:
        assert all(token[i : i + 16] not in blob + shared for i in range(0, len(token) - 16, 16))
    assert dataclasses.is_dataclass(consent.parse_token(raw[0]))


def test_a_revoked_grant_is_refused_and_an_unreadable_list_refuses_the_issuer(fed: harness.Federation) -> None:
    ids = people(fed, 2)
    tokens = tokens_for(fed, ids)
    path = fed.root / "revocations.json"
    consent_revocations.revoke(path, KEY, ISSUER, [consent.parse_token_text(tokens[1]).grant.grant_id])
    time.sleep(consent_revocations.RECHECK_S + 0.1)  # a region looks at the list at most once a second
    err = refused(fed, ids, tokens)
    assert err.code == "CONSENT_REVOKED" and "applicant 2 of 2" in err.message
    fresh = tokens_for(fed, ids)  # a new grant for the same person is not revoked
    with fed.client(person="bank") as bank:
        assert len(bank.lookup(ids, tokens=fresh, **REVIEW).facts) == 2  # type: ignore[arg-type]
    kept = path.read_bytes()
    path.write_bytes(consent_revocations.sign_list(OTHER_KEY, ISSUER, 99, []))  # not signed by the issuer
    time.sleep(consent_revocations.RECHECK_S + 0.1)
    assert refused(fed, ids, fresh).code == "CONSENT_REVOCATIONS_INVALID"
    path.write_bytes(kept)
    consent_revocations.revoke(path, KEY, ISSUER, [])  # the issuer's next list puts the region right
    time.sleep(consent_revocations.RECHECK_S + 0.1)
    with fed.client(person="bank") as bank:
        assert len(bank.lookup(ids, tokens=fresh, **REVIEW).facts) == 2  # type: ignore[arg-type]


def test_a_token_grants_only_the_facts_it_names(fed: harness.Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token granting duplicate_loans alone answers a request for duplicate_loans; a request for more is refused
    by the client's own check, and, from a bank that skips it, by every region (CONSENT_FACTS_NOT_GRANTED), or by
    the policy first for a fact the bank's role may never receive (POLICY_FACTS_NOT_ALLOWED)."""
    ids = people(fed, 2)
    tokens = tokens_for(fed, ids, facts=["duplicate_loans"])
    with fed.client(person="bank") as bank:
        answer = bank.lookup(ids, tokens=tokens, facts=["duplicate_loans"], **REVIEW)  # type: ignore[arg-type]
        assert answer.facts_asked == ("duplicate_loans",) and sorted(answer.answered) == sorted(NODES)
        assert all(f.duplicate_loans is not None and f.balance_fen is None for f in answer.facts)
        for more in (["duplicate_loans", "balance"], list(LOAN_REVIEW)):
            with pytest.raises(FederationError) as err:
                bank.lookup(ids, tokens=tokens, facts=more, **REVIEW)  # type: ignore[arg-type]
            assert err.value.code == "CONSENT_FACTS_NOT_GRANTED" and "applicant 1 of 2" in err.value.message
        monkeypatch.setattr(FederationClient, "consent_refusals", lambda *args: {})
        with pytest.raises(FederationError) as region:
            bank.lookup(ids, tokens=tokens, facts=list(LOAN_REVIEW), **REVIEW)  # type: ignore[arg-type]
        assert region.value.code == "CONSENT_FACTS_NOT_GRANTED" and "applicant 1 of 2" in region.value.message
        with pytest.raises(FederationError) as policy:
            bank.lookup(ids, tokens=tokens, facts=["duplicate_loans", "balance"], **REVIEW)  # type: ignore[arg-type]
        assert policy.value.code == "POLICY_FACTS_NOT_ALLOWED"


def test_an_older_revocation_list_put_back_while_a_region_is_stopped_is_refused(fed: harness.Federation) -> None:
    ids = people(fed, 2)
    path = fed.root / "revocations.json"
    older = path.read_bytes()
    tokens = tokens_for(fed, ids)
    consent_revocations.revoke(path, KEY, ISSUER, [consent.parse_token_text(tokens[0]).grant.grant_id])
    newest = path.read_bytes()
    time.sleep(consent_revocations.RECHECK_S + 0.1)
    assert refused(fed, ids, tokens).code == "CONSENT_REVOKED"  # every region has read the newest list
    fed.stop_node("shanghai")
    path.write_bytes(older)  # the list before the revocation, put back while the region is down
    with pytest.raises(FederationError) as err:
        fed.restart_node("shanghai")  # the region remembers, in its state directory, the number it accepted
    assert err.value.code == "CONSENT_REVOCATIONS_ROLLBACK"
    state = fed.node_configs["shanghai"].state_dir / consent_revocations.STATE_FILE
    assert ISSUER in state.read_text()
    path.write_bytes(newest)
    fed.restart_node("shanghai")
    fed.wait_for_regions()
    assert refused(fed, ids, tokens).code == "CONSENT_REVOKED"
    with fed.client(person="bank") as bank:
        assert len(bank.lookup(ids[1:], tokens=tokens[1:], **REVIEW).facts) == 1  # type: ignore[arg-type]


def test_the_audit_entry_answers_under_which_consent_a_person_was_looked_up(fed: harness.Federation) -> None:
    import json

    from hpf.federation.crypto.sealing import SUBJECT_KEY, read_secret
    from hpf.federation.crypto.subject_tags import looked_up_under

    ids = people(fed, 2)
    tokens = tokens_for(fed, ids)
    grants = [consent.parse_token_text(t).grant.grant_id for t in tokens]
    with fed.client(person="bank") as bank:
        bank.lookup(ids, tokens=tokens, **REVIEW)  # type: ignore[arg-type]
    for node in NODES:
        entry = json.loads((fed.audit_dir(node) / "entries.jsonl").read_text().splitlines()[-1])
        assert entry["operation"] == "lookup" and entry["decision"] == "allowed", entry
        key = read_secret(fed.audit_dir(node) / SUBJECT_KEY)
        assert all(g.hex() not in json.dumps(entry) for g in grants) and all(t not in json.dumps(entry) for t in tokens)
        assert looked_up_under(entry, key, ids[0], ISSUER, grants[0])
        assert looked_up_under(entry, key, ids[1], ISSUER, grants[1])
        assert not looked_up_under(entry, key, ids[0], ISSUER, grants[1])
        assert not looked_up_under(entry, key, ids[0], OTHER_ISSUER, grants[0])
        assert not looked_up_under(entry, bytes(32), ids[0], ISSUER, grants[0])


def test_an_auditor_finds_under_which_consent_a_person_was_looked_up(fed: harness.Federation, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from hpf.cli.app import _register, app

    _register("audit")
    ids = people(fed, 3)[1:]
    tokens = tokens_for(fed, ids)
    again = tokens_for(fed, ids[:1])  # a second consent of the first person, used for a second lookup
    with fed.client(person="bank") as bank:
        bank.lookup(ids, tokens=tokens, **REVIEW)  # type: ignore[arg-type]
        bank.lookup(ids[:1], tokens=again, **REVIEW)  # type: ignore[arg-type]
    with fed.client(person="caseworker") as counter:  # a caseworker's lookup carries a free-text reference
        counter.lookup(ids[:1], purpose="loan-review", consent="counter form 7")
    issued = tmp_path / "tokens.csv"
    issued.write_text("row,grant_id,consent_token\n" + "".join(f"{i},x,{t}\n" for i, t in enumerate(tokens)))
    log = fed.audit_dir("hangzhou")
    found = CliRunner().invoke(
        app, ["audit", "consent", str(log), "--person", ids[0], "--tokens", str(issued), "--format", "json"]
    )
    assert found.exit_code == 0, found.output
    rows = json.loads(found.output)
    first = consent.parse_token_text(tokens[0]).grant.grant_id.hex()
    second = consent.parse_token_text(again[0]).grant.grant_id.hex()
    lookups = [r for r in rows if r["decision"] == "allowed"]
    assert [r["grant"] for r in lookups if r["role"] == "integrator"][-2:] == [f"{ISSUER}:{first}", None]
    assert lookups[-1]["role"] == "caseworker" and lookups[-1]["consent"].startswith("none")
    named = CliRunner().invoke(app, ["audit", "consent", str(log), "--person", ids[0], "--grant", f"{ISSUER}:{second}"])
    assert named.exit_code == 0 and "1 under a named grant" in named.output, named.output
    again_rows = json.loads(
        CliRunner()
        .invoke(app, ["audit", "consent", str(log), "--person", ids[0], "--grant", f"{ISSUER}:{second}", "-f", "json"])
        .output
    )
    assert [r["grant"] for r in again_rows if r["grant"]] == [f"{ISSUER}:{second}"]
    assert ids[0] not in found.output + named.output and ids[1] not in found.output
    other = CliRunner().invoke(app, ["audit", "consent", str(log), "--person", ids[1], "--format", "json"])
    last = json.loads(other.output)[-1]  # the lookup above: its digest, and no grant named
    assert last["grant"] is None and len(last["consent"]) == 32 and last["consent"] not in json.dumps(rows)


def test_enumerating_ids_yields_only_the_consented_people(
    fed: harness.Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bank that screens every ID of a district born in one year, holding tokens for 5 of them, is answered about
    exactly those 5; without any token, about nobody; and a bank that skips its own check is refused outright."""
    from hpf.federation.person_id import person_id_array

    consented = people(fed, 5)
    days = [int((dt.date(1990, 1, 1) + dt.timedelta(days=d)).strftime("%Y%m%d")) for d in range(365)]
    every = person_id_array([310101] * 1460, [day for day in days for _ in range(4)], [0, 1, 2, 3] * 365)
    enumerated = [p for p in every if p not in consented]  # one district, one year: 365 days, 4 sequences
    ids = enumerated[:700] + consented + enumerated[700:1455]
    assert len(ids) == 1460
    granted = dict(zip(consented, tokens_for(fed, consented, facts=LOAN_REVIEW), strict=True))
    tokens = [granted.get(pid, "") for pid in ids]
    with fed.client(person="bank") as bank:
        screened = bank.screen(ids, tokens=tokens, **REVIEW)  # type: ignore[arg-type]
        reference = bank.lookup(consented, tokens=[granted[p] for p in consented], **REVIEW)  # type: ignore[arg-type]
        assert set(screened.withheld) == set(range(1460)) - set(range(700, 705))
        assert set(screened.withheld.values()) == {"CONSENT_MALFORMED"}
        assert screened.facts[700:705] == reference.facts
        # only the facts their grants name: the loans in other cities, never a balance or contributions
        assert screened.facts_asked == LOAN_REVIEW
        assert all(f.balance_fen is None and f.contribution_fen is None and f.cities is None for f in screened.facts)
        more = bank.screen(ids, tokens=tokens, facts=[*LOAN_REVIEW, "contributions"], **REVIEW)  # type: ignore[arg-type]
        assert set(more.withheld) == set(range(1460)) and more.query_ids == []  # nothing was sent
        assert {more.withheld[i] for i in range(700, 705)} == {"CONSENT_FACTS_NOT_GRANTED"}
        with pytest.raises(FederationError) as nobody:
            bank.screen(ids, **REVIEW)  # type: ignore[arg-type]
        assert nobody.value.code == "POLICY_CONSENT_REQUIRED"
        monkeypatch.setattr(FederationClient, "consent_refusals", lambda *args: {})
        with pytest.raises(FederationError) as skipped:
            bank.screen(ids, tokens=tokens, **REVIEW)  # type: ignore[arg-type]
        assert skipped.value.code == "CONSENT_MALFORMED" and "applicant 1 of" in skipped.value.message


def _bank_profile(fed: harness.Federation) -> Path:
    doc = yaml.safe_load(fed.profile_path.read_text())
    doc["tls"]["cert"] = str(fed.pki_dir / "people" / "bank.pem")
    doc["tls"]["key"] = str(fed.pki_dir / "people" / "bank.key")
    doc["purpose"] = "loan-review"
    path = fed.root / "client-bank.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_cli_reads_a_token_file_and_a_token_column(fed: harness.Federation, tmp_path: Path) -> None:
    import csv
    import subprocess
    import sys

    profile = _bank_profile(fed)
    ids = people(fed, 3)
    tokens = tokens_for(fed, ids)
    (tmp_path / "token.txt").write_text(tokens[0] + "\n")
    hpf = [sys.executable, "-m", "hpf.cli"]
    one = subprocess.run(
        [*hpf, "lookup", "-p", str(profile), "--consent-token", str(tmp_path / "token.txt"), "-f", "json", ids[0]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert one.returncode == 0, one.stderr
    wrong = subprocess.run(
        [*hpf, "lookup", "-p", str(profile), "--consent-token", str(tmp_path / "token.txt"), ids[1]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 4 and "CONSENT_PERSON_MISMATCH" in wrong.stderr and ids[1] not in wrong.stderr
    applicants = tmp_path / "applicants.csv"
    applicants.write_text(
        "ref,person_id,consent_token\n"
        + "".join(f"a{i},{p},{t}\n" for i, (p, t) in enumerate(zip(ids, [*tokens[:2], ""], strict=True)))
    )
    out = tmp_path / "screened.csv"
    screened = subprocess.run(
        [*hpf, "screen", "-p", str(profile), "--input", str(applicants), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screened.returncode == 0, screened.stderr
    assert "1 applicant(s) not asked about" in screened.stderr
    rows = list(csv.DictReader(out.open()))
    assert "consent_token" not in rows[0] and [r["consent_refused"] for r in rows] == ["", "", "CONSENT_MALFORMED"]
    assert rows[2]["loan_cities"] == "" and rows[0]["loan_cities"] != ""
    # a bank screening for a loan review is shown what it asked for by default: never a balance or contributions
    assert {"balance_fen", "contribution_fen", "cities"}.isdisjoint(rows[0])


def test_the_coordinator_never_sees_a_token_or_an_identifier(fed: harness.Federation) -> None:
    """Everything the coordinator received from clients and nodes, and everything it sent, over every lookup of
    this module: no identifier, no token (text or binary, or any 16-byte piece of one), no salt, no grant id."""
    recorder = RECORDED["recorder"]
    seen = [r.wire for r in recorder.received]
    seen += [reply.SerializeToString() for reply in recorder.replies]
    seen += [request.SerializeToString() for _, request in recorder.node_requests]
    assert any(b"/Lookup" in r.method.encode() for r in recorder.received)
    lookups = [r.message for r in recorder.received if r.method.endswith("/Lookup") and r.source == "client"]
    assert any(m.sealed_consent for m in lookups), "the lookups of this module carried sealed tokens"
    everything = b"\x00".join(seen)
    assert SENT
    for ids, texts in SENT:
        for pid in ids:
            assert pid.encode() not in everything and pid[:17].encode() not in everything
        for text in texts:
            raw = consent.parse_token_text(text).encode()
            assert text.encode()[:40] not in everything
            assert all(raw[i : i + 16] not in everything for i in range(0, len(raw) - 16, 16))
