"""`hpf consent`: an issuer's key, a granted CSV whose tokens a region accepts, revocations by grant id or token,
and no identifier in any line the commands print."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hpf.cli.app import _register, app
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import load_issuer, public_raw
from hpf.federation.consent.revocations import RevocationWatch
from hpf.federation.consent.verifier import ConsentVerifier
from hpf.federation.person_id import person_id_array

PEOPLE = list(person_id_array([320101] * 3, [19850101, 19900202, 19951231], [21, 22, 23]))
GRANTEE = "sha256:" + "ab" * 32
RUNNER = CliRunner()
_register("consent")


def hpf(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "people.csv").write_text("ref,person_id\n" + "".join(f"r{i},{p}\n" for i, p in enumerate(PEOPLE)))
    return tmp_path


def test_keys_make_once_and_print_the_catalog_entry(folder: Path) -> None:
    code, out = hpf("consent", "keys", "--issuer", "nj-consent")
    assert code == 0 and "- id: nj-consent\n  key: " in out
    assert (folder / "consent-issuer" / "issuer.key").stat().st_mode & 0o777 == 0o600
    again, out2 = hpf("consent", "keys")
    assert again == 0 and out2.splitlines()[:3] == out.splitlines()[:3]
    conflict, msg = hpf("consent", "keys", "--issuer", "other")
    assert conflict == 2 and "CONSENT_KEY_CONFLICT" in msg


def test_grant_writes_tokens_a_region_accepts_and_never_prints_an_id(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hpf("consent", "keys", "--issuer", "nj-consent")
    caplog.set_level(logging.DEBUG)
    code, out = hpf(
        "consent", "grant", "--input", "people.csv", "--to", GRANTEE, "--purpose", "loan-review",
        "--facts", "duplicate_loans,loan_cities", "--days", "30", "--out", "tokens.csv",
    )  # fmt: skip
    assert code == 0, out
    assert "granted: 3 consent(s) in 1 signed batch(es)" in out and GRANTEE in out
    rows = list(csv.DictReader((folder / "tokens.csv").open()))
    assert [r["ref"] for r in rows] == ["r0", "r1", "r2"] and [r["row"] for r in rows] == ["1", "2", "3"]
    assert "person_id" not in rows[0]
    text = (folder / "tokens.csv").read_text() + out + caplog.text
    assert not any(p in text for p in PEOPLE)
    issuer = load_issuer(folder / "consent-issuer")
    verifier = ConsentVerifier({issuer.id: public_raw(issuer.key)})
    ask = {"grantee": bytes.fromhex("ab" * 32), "purpose": "loan-review", "facts": ["loan_cities"]}
    for row, person in zip(rows, PEOPLE, strict=True):
        token = consent.parse_token_text(row["consent_token"])
        assert token.grant.grant_id.hex() == row["grant_id"]
        assert verifier.check(token, person, **ask) is None  # type: ignore[arg-type]


def test_a_bad_identifier_is_named_by_its_line_only(folder: Path) -> None:
    hpf("consent", "keys", "--issuer", "nj-consent")
    bad = PEOPLE[1][:-1] + ("0" if PEOPLE[1][-1] != "0" else "1")
    (folder / "people.csv").write_text(f"person_id\n{PEOPLE[0]}\n{bad}\n")
    code, out = hpf(
        "consent", "grant", "-i", "people.csv", "--to", GRANTEE, "--purpose", "p", "--facts", "balance",
        "--days", "1", "-o", "t.csv",
    )  # fmt: skip
    assert code == 2 and "line 3" in out and bad not in out and PEOPLE[0] not in out
    assert not (folder / "t.csv").exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--facts", "everything"], "CONSENT_TERMS_INVALID"),
        (["--days", "0"], "CONSENT_TERMS_INVALID"),
        (["--purpose", "Loan Review"], "CONSENT_TERMS_INVALID"),
        (["--to", "nobody.pem"], "CONSENT_GRANTEE_INVALID"),
    ],
)
def test_grant_refuses_bad_terms(folder: Path, args: list[str], code: str) -> None:
    hpf("consent", "keys", "--issuer", "nj-consent")
    base = {"--to": GRANTEE, "--purpose": "loan-review", "--facts": "balance", "--days": "7"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    exit_code, out = hpf("consent", "grant", "-i", "people.csv", "-o", "t.csv", *[w for kv in base.items() for w in kv])
    assert exit_code == 2 and code in out


def test_revoke_by_grant_id_or_token_numbers_each_list(folder: Path) -> None:
    hpf("consent", "keys", "--issuer", "nj-consent")
    hpf(
        "consent", "grant", "-i", "people.csv", "--to", GRANTEE, "--purpose", "loan-review", "--facts", "balance",
        "--days", "7", "-o", "tokens.csv",
    )  # fmt: skip
    rows = list(csv.DictReader((folder / "tokens.csv").open()))
    code, out = hpf("consent", "revoke", rows[0]["grant_id"], "--list", "revocations.json")
    assert code == 0 and "(number 1)" in out
    code, out = hpf("consent", "revoke", rows[1]["consent_token"], "--list", "revocations.json")
    assert code == 0 and "(number 2)" in out and "2 in all" in out
    issuer = load_issuer(folder / "consent-issuer")
    watch = RevocationWatch(folder / "revocations.json", issuer.id, public_raw(issuer.key))
    assert [watch.revoked(bytes.fromhex(r["grant_id"])) for r in rows] == [True, True, False]
    code, out = hpf("consent", "revoke", "not-a-grant", "--list", "revocations.json")
    assert code == 4 and "CONSENT_MALFORMED" in out


def test_a_screening_shows_withheld_applicants_without_figures() -> None:
    from hpf.cli.lookup import Check, screen_table
    from hpf.client.answers import LookupAnswer
    from hpf.client.screening import WITHHELD
    from hpf.federation.crypto.lookup_codec import PersonFacts

    facts = PersonFacts(2, 1, 1, 12, 100, 50, 1, 0, 10, 2, 0)
    answer = LookupAnswer(
        facts=[facts, WITHHELD], regions=["a"], answered=["a"], missing=[], query_ids=[],
        withheld={1: "CONSENT_EXPIRED"},
    )  # fmt: skip
    rows = [{"ref": "r0"}, {"ref": "r1"}]
    out = screen_table(["ref"], rows, answer, Check.duplicate_loans)
    assert out[0]["consent_refused"] is None and out[0]["duplicate_loans"] is True and out[0]["balance_fen"] == 50
    assert out[1]["consent_refused"] == "CONSENT_EXPIRED" and out[1]["duplicate_loans"] is None
    assert all(out[1][k] is None for k in facts.as_dict())
