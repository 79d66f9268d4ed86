"""Consent tokens travel sealed with the identifiers: only the region opens them, the signed commitment covers
them (every region checks the same tokens), and a malformed token section is refused like a tampered blob."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import consent
from federation.errors import FederationError
from federation.person_id import person_id_array
from federation.sealing import ID_CHARS, SALT_BYTES, AgreementKey, OneTimeKey

IDS: list[str] = person_id_array([310101, 330106, 320102], [19850612, 19790101, 20010129], [17, 248, 999]).tolist()
QID = "5e" * 16
NODE = "hangzhou"
KEY = Ed25519PrivateKey.generate()
TOKENS = [
    t.encode()
    for t in consent.issue_batch(
        KEY, "sh-consent", IDS, grantee=bytes(32), purpose="loan-review", facts=["balance"], not_after=2**40
    )
]


@pytest.fixture
def region(tmp_path: Path) -> AgreementKey:
    return AgreementKey.load_or_create(tmp_path / NODE)


def test_tokens_open_with_their_identifiers_in_their_region_only(region: AgreementKey) -> None:
    one_time = OneTimeKey()
    tokens = [TOKENS[0], b"", TOKENS[2]]  # the second person without a token
    blob = one_time.seal(IDS, region.public, QID, NODE, tokens)
    assert TOKENS[0] not in blob and TOKENS[0][-32:] not in blob
    assert len(blob) == SALT_BYTES + len(IDS) * ID_CHARS + sum(2 + len(t) for t in tokens) + 16
    commitment = one_time.commitment(IDS, tokens)
    assert region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment) == (IDS, tokens)
    with pytest.raises(FederationError) as refused:  # a region that reads identifiers only sees tokens it ignores
        region.open(blob, one_time.public, QID, NODE, len(IDS), commitment)
    assert refused.value.code == "LOOKUP_SEAL_INVALID"


def test_without_tokens_nothing_changes(region: AgreementKey) -> None:
    one_time = OneTimeKey()
    blob = one_time.seal(IDS, region.public, QID, NODE)
    commitment = one_time.commitment(IDS)
    assert region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment) == (IDS, None)
    assert commitment == one_time.commitment(IDS, None)


def test_the_signed_commitment_covers_the_tokens(region: AgreementKey) -> None:
    """An asker cannot give one region a token and another region none, or another token: the commitment the
    envelope signs is over the tokens too."""
    one_time = OneTimeKey()
    signed = one_time.commitment(IDS, TOKENS)
    for other in ([TOKENS[1], TOKENS[0], TOKENS[2]], [b"", TOKENS[1], TOKENS[2]], None):
        blob = one_time.seal(IDS, region.public, QID, NODE, other)
        with pytest.raises(FederationError) as refused:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), signed)
        assert refused.value.code == "LOOKUP_SEAL_INVALID"


def test_a_malformed_token_section_is_refused(region: AgreementKey) -> None:
    import federation.sealing as sealing

    one_time = OneTimeKey()
    for section in (b"\x00", b"\x00\x00" * 2, b"\x00\x00" * 4, b"\xff\xff" + b"\x00" * 4):
        plain_ids = "".join(IDS).encode()
        commitment = sealing._commitment(one_time._salt, plain_ids + section)
        shared = one_time._key.exchange(sealing.X25519PublicKey.from_public_bytes(region.public))
        aead = sealing._derive(shared, QID, NODE, one_time.public, region.public)
        blob = aead.encrypt(sealing._NONCE, one_time._salt + plain_ids + section, sealing._aad(QID, NODE))
        with pytest.raises(FederationError) as refused:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment)
        assert refused.value.code == "LOOKUP_SEAL_INVALID"


def test_sealing_refuses_tokens_that_do_not_fit(region: AgreementKey) -> None:
    with pytest.raises(ValueError):
        OneTimeKey().seal(IDS, region.public, QID, NODE, TOKENS[:2])
    with pytest.raises(ValueError):
        OneTimeKey().commitment(IDS, [b"x" * (consent.MAX_TOKEN_BYTES + 1)] * 3)


def test_a_policy_takes_tokens_only_from_the_issuers_it_names() -> None:
    from policies.model import LookupPolicy

    taken = LookupPolicy.model_validate({"purposes": ["loan-review"], "consent": "token", "consent_issuers": ["a"]})
    assert taken.consent_issuers == ["a"]
    for bad in ({"consent": "token"}, {"consent": "required", "consent_issuers": ["a"]}):
        with pytest.raises(ValueError, match="consent_issuers"):
            LookupPolicy.model_validate({"purposes": ["loan-review"], **bad})


def test_a_policy_naming_an_issuer_the_catalog_does_not_publish_is_a_problem(tmp_path: Path) -> None:
    import base64

    import yaml

    from federation.catalog import Catalog
    from policies import DEFAULT_POLICY
    from policies.loader import check_against_catalog, load_policy

    key = base64.b64encode(consent.public_raw(KEY)).decode()
    catalog = Catalog.model_validate(
        {
            "federation": "f",
            "nodes": [{"id": "n1", "address": "h:1"}],
            "tables": {"t": {"columns": {"x": {"type": "BIGINT"}}}},
            "issuers": [{"id": "sh-consent", "key": key}],
        }
    )
    path = tmp_path / "p.yaml"
    lookups = {"consent": "token", "consent_issuers": ["sh-consent", "sh-consnet"]}
    path.write_text(
        yaml.safe_dump({"version": 1, "extends": str(DEFAULT_POLICY), "roles": {"integrator": {"lookups": lookups}}})
    )
    problems = [p for p in check_against_catalog(load_policy(path), catalog) if "consent issuer" in p]
    assert len(problems) == 1 and "consent_issuers" in problems[0] and "'sh-consnet'" in problems[0]
    assert "sh-consent" in problems[0].split("'sh-consnet'")[1]  # did you mean
