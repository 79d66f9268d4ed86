"""Consent tokens travel sealed with the identifiers: only the region opens them, the signed commitment covers
them (every region checks the same tokens), and a malformed token section is refused like a tampered blob."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hpf.federation.consent import tokens as consent
from hpf.federation.consent.issuer import issue_batch, public_raw
from hpf.federation.crypto.sealing import CONSENT_PAD_BYTES, ID_CHARS, SALT_BYTES, AgreementKey, OneTimeKey
from hpf.federation.errors import FederationError
from hpf.federation.person_id import person_id_array

IDS: list[str] = person_id_array([310101, 330106, 320102], [19850612, 19790101, 20010129], [17, 248, 999]).tolist()
QID = "5e" * 16
NODE = "hangzhou"
KEY = Ed25519PrivateKey.generate()
TOKENS = [
    t.encode()
    for t in issue_batch(
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
    shared = one_time.seal_consent(tokens, QID)
    assert len(blob) == SALT_BYTES + len(IDS) * ID_CHARS + 32 + 16  # the tokens' key, not the tokens
    # the tokens travel once, for every region, padded to a whole number of CONSENT_PAD_BYTES
    assert sum(2 + len(t) for t in tokens) <= CONSENT_PAD_BYTES and len(shared) == CONSENT_PAD_BYTES + 16
    for sealed in (blob, shared):
        assert TOKENS[0] not in sealed and TOKENS[0][-32:] not in sealed and TOKENS[0][:64] not in sealed
    commitment = one_time.commitment(IDS, tokens)
    opened = region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment, shared)
    assert opened == (IDS, tokens)
    with pytest.raises(FederationError) as refused:  # a region that reads identifiers only: the blob is not one
        region.open(blob, one_time.public, QID, NODE, len(IDS), commitment)
    assert refused.value.code == "LOOKUP_SEAL_INVALID"


def test_without_tokens_nothing_changes(region: AgreementKey) -> None:
    one_time = OneTimeKey()
    blob = one_time.seal(IDS, region.public, QID, NODE)
    commitment = one_time.commitment(IDS)
    assert region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment) == (IDS, None)
    assert commitment == one_time.commitment(IDS, None)
    with pytest.raises(FederationError):  # tokens the blob holds no key for
        region.open_with_tokens(
            blob, one_time.public, QID, NODE, len(IDS), commitment, one_time.seal_consent(TOKENS, QID)
        )


def test_the_signed_commitment_covers_the_tokens(region: AgreementKey) -> None:
    """An asker cannot give the regions other tokens than it signed for, or none: the commitment the envelope
    signs is over the tokens too, and a coordinator cannot swap in another lookup's tokens or alter them."""
    one_time = OneTimeKey()
    signed = one_time.commitment(IDS, TOKENS)
    blob = one_time.seal(IDS, region.public, QID, NODE, TOKENS)
    for other in ([TOKENS[1], TOKENS[0], TOKENS[2]], [b"", TOKENS[1], TOKENS[2]]):
        twin = OneTimeKey()
        twin._consent_key = one_time._consent_key  # the very key this blob holds, other tokens under it
        with pytest.raises(FederationError) as refused:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), signed, twin.seal_consent(other, QID))
        assert refused.value.code == "LOOKUP_SEAL_INVALID"
    good = one_time.seal_consent(TOKENS, QID)
    another = OneTimeKey().seal_consent(TOKENS, QID)  # another lookup's tokens
    flipped = good[:10] + bytes([good[10] ^ 1]) + good[11:]
    for shared in (another, flipped, b"", OneTimeKey().seal_consent(TOKENS, "6f" * 16)):
        with pytest.raises(FederationError) as refused:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), signed, shared)
        assert refused.value.code == "LOOKUP_SEAL_INVALID"
    unsigned = one_time.commitment(IDS)
    with pytest.raises(FederationError):
        region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), unsigned, good)


def test_a_malformed_token_section_is_refused(region: AgreementKey) -> None:
    import hpf.federation.crypto.sealing as sealing

    for section in (b"\x00", b"\x00\x00" * 2, b"\x00\x00" * 4, b"\xff\xff" + b"\x00" * 4):
        one_time = OneTimeKey()
        blob = one_time.seal(IDS, region.public, QID, NODE, TOKENS)
        plain_ids = "".join(IDS).encode()
        commitment = sealing._commitment(one_time._salt, plain_ids + section)
        shared = sealing.ChaCha20Poly1305(one_time._consent_key).encrypt(
            sealing._NONCE, section, sealing._CONSENT_AAD + QID.encode()
        )
        with pytest.raises(FederationError) as refused:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment, shared)
        assert refused.value.code == "LOOKUP_SEAL_INVALID"


@pytest.mark.parametrize(
    "padding",
    [b"\x01", b"\x00" * 100 + b"\x80", bytes(CONSENT_PAD_BYTES), bytes(3 * CONSENT_PAD_BYTES)],
    ids=["one byte set", "a byte set after zeros", "a whole pad too many", "three pads too many"],
)
def test_padding_other_than_a_few_zeros_is_refused(region: AgreementKey, padding: bytes) -> None:
    """The tokens' padding is zeros, fewer than CONSENT_PAD_BYTES of them: a section padded otherwise is refused
    even when the commitment covers its tokens as an honest client's does (only the padding is wrong)."""
    import hpf.federation.crypto.sealing as sealing

    tokens_part = b"".join(len(t).to_bytes(2, "big") + t for t in TOKENS)
    one_time = OneTimeKey()
    blob = one_time.seal(IDS, region.public, QID, NODE, TOKENS)
    commitment = one_time.commitment(IDS, TOKENS)
    for section, refused in ((tokens_part + bytes(7), False), (tokens_part + padding, True)):
        shared = sealing.ChaCha20Poly1305(one_time._consent_key).encrypt(
            sealing._NONCE, section, sealing._CONSENT_AAD + QID.encode()
        )
        if not refused:  # zeros, fewer than a pad: the honest form opens
            assert region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment, shared)[1] == TOKENS
            continue
        with pytest.raises(FederationError) as err:
            region.open_with_tokens(blob, one_time.public, QID, NODE, len(IDS), commitment, shared)
        assert err.value.code == "LOOKUP_SEAL_INVALID"


def test_sealing_refuses_tokens_that_do_not_fit(region: AgreementKey) -> None:
    with pytest.raises(ValueError):
        OneTimeKey().commitment(IDS, TOKENS[:2])
    with pytest.raises(ValueError):
        OneTimeKey().commitment(IDS, [b"x" * (consent.MAX_TOKEN_BYTES + 1)] * 3)
    with pytest.raises(ValueError):
        OneTimeKey().seal_consent([b"x" * (consent.MAX_TOKEN_BYTES + 1)], QID)


def test_a_policy_takes_tokens_only_from_the_issuers_it_names() -> None:
    from hpf.policies.model import LookupPolicy

    taken = LookupPolicy.model_validate({"purposes": ["loan-review"], "consent": "token", "consent_issuers": ["a"]})
    assert taken.consent_issuers == ["a"]
    for bad in ({"consent": "token"}, {"consent": "required", "consent_issuers": ["a"]}):
        with pytest.raises(ValueError, match="consent_issuers"):
            LookupPolicy.model_validate({"purposes": ["loan-review"], **bad})


def test_a_policy_naming_an_issuer_the_catalog_does_not_publish_is_a_problem(tmp_path: Path) -> None:
    import base64

    import yaml

    from hpf.federation.catalog import Catalog
    from hpf.policies import DEFAULT_POLICY
    from hpf.policies.loader import check_against_catalog, load_policy

    key = base64.b64encode(public_raw(KEY)).decode()
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
