"""Identifiers sealed to one region (X25519, HKDF-SHA256, ChaCha20-Poly1305, bound to the query id), and the
keyed, nonce-salted subject tags a region's audit log holds instead of identifiers."""

from __future__ import annotations

import base64
import functools
import hashlib
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hpf.federation.crypto.sealing import (
    AGREEMENT_KEY,
    AGREEMENT_PUBLIC,
    ID_CHARS,
    SALT_BYTES,
    SUBJECT_KEY,
    AgreementKey,
    OneTimeKey,
    load_or_create_subject_key,
    load_public_b64,
    read_secret,
)
from hpf.federation.crypto.subject_tags import subject_tag
from hpf.federation.errors import FederationError
from hpf.federation.person_id import check_char, person_id_array

IDS: list[str] = person_id_array([310101, 330106, 320102], [19850612, 19790101, 20010129], [17, 248, 999]).tolist()
QID = "3f" * 16
NODE = "shanghai"


def with_x() -> str:
    """A valid identifier whose check character is X."""
    for seq in range(1000):
        first = f"31010119900307{seq:03d}"
        if check_char(first) == "X":
            return first + "X"
    raise AssertionError("no X check character in 1000 sequences")


@pytest.fixture
def region(tmp_path: Path) -> AgreementKey:
    return AgreementKey.load_or_create(tmp_path / "shanghai")


def code_of(call: Callable[[], object]) -> str:
    with pytest.raises(FederationError) as info:
        call()
    return info.value.code


def test_sealed_identifiers_open_only_in_their_region_for_their_question(region: AgreementKey) -> None:
    ids = [*IDS, with_x()]
    one_time = OneTimeKey()
    blob = one_time.seal(ids, region.public, QID, NODE)
    assert len(blob) == SALT_BYTES + len(ids) * ID_CHARS + 16  # salt, identifiers, tag: the count is all it shows
    for pid in ids:
        assert pid.encode() not in blob and pid[:17].encode() not in blob
    assert region.open(blob, one_time.public, QID, NODE, len(ids), one_time.commitment(ids)) == ids


def test_a_blob_for_one_region_or_question_opens_nowhere_else(tmp_path: Path, region: AgreementKey) -> None:
    other_region = AgreementKey.load_or_create(tmp_path / "hangzhou")
    one_time = OneTimeKey()
    blob = one_time.seal(IDS, region.public, QID, NODE)
    attempts = {
        "another region's key": lambda: other_region.open(
            blob, one_time.public, QID, NODE, len(IDS), one_time.commitment(IDS)
        ),
        "another region's name": lambda: region.open(
            blob, one_time.public, QID, "hangzhou", len(IDS), one_time.commitment(IDS)
        ),
        "another query id": lambda: region.open(
            blob, one_time.public, "4e" * 16, NODE, len(IDS), one_time.commitment(IDS)
        ),
        "another one-time key": lambda: region.open(
            blob, OneTimeKey().public, QID, NODE, len(IDS), one_time.commitment(IDS)
        ),
        "a short one-time key": lambda: region.open(
            blob, one_time.public[:31], QID, NODE, len(IDS), one_time.commitment(IDS)
        ),
        "one identifier fewer": lambda: region.open(
            blob, one_time.public, QID, NODE, len(IDS) - 1, one_time.commitment(IDS)
        ),
        "one identifier more": lambda: region.open(
            blob, one_time.public, QID, NODE, len(IDS) + 1, one_time.commitment(IDS)
        ),
        "no identifier": lambda: region.open(blob, one_time.public, QID, NODE, 0, one_time.commitment(IDS)),
        "a cut blob": lambda: region.open(blob[:-1], one_time.public, QID, NODE, len(IDS), one_time.commitment(IDS)),
    }
    for what, attempt in attempts.items():
        assert code_of(attempt) == "LOOKUP_SEAL_INVALID", what
    # and the right region, name, question and key still open it
    assert region.open(blob, one_time.public, QID, NODE, len(IDS), one_time.commitment(IDS)) == IDS


@pytest.mark.parametrize("position", [0, 17, 18 * 3 - 1, -16, -1])
def test_a_tampered_blob_is_refused(region: AgreementKey, position: int) -> None:
    one_time = OneTimeKey()
    blob = bytearray(one_time.seal(IDS, region.public, QID, NODE))
    blob[position] ^= 0x01
    assert (
        code_of(lambda: region.open(bytes(blob), one_time.public, QID, NODE, len(IDS), one_time.commitment(IDS)))
        == "LOOKUP_SEAL_INVALID"
    )


def test_blobs_differ_per_region_and_per_lookup(tmp_path: Path, region: AgreementKey) -> None:
    other_region = AgreementKey.load_or_create(tmp_path / "hangzhou")
    one_time = OneTimeKey()
    to_shanghai = one_time.seal(IDS, region.public, QID, NODE)
    to_hangzhou = one_time.seal(IDS, other_region.public, QID, "hangzhou")
    again = OneTimeKey().seal(IDS, region.public, QID, NODE)  # the same people, another lookup
    assert len({to_shanghai, to_hangzhou, again}) == 3
    assert other_region.open(to_hangzhou, one_time.public, QID, "hangzhou", len(IDS), one_time.commitment(IDS)) == IDS


def test_only_valid_normalised_identifiers_come_out_of_a_blob(region: AgreementKey) -> None:
    """A client (or anyone holding a one-time key) sealing something else gets no identifier through."""
    x_id = with_x()
    for plain in (["ABCDEFGHIJKLMNOPQR"], [x_id[:17] + "x"], [IDS[0][:17] + str((int(IDS[0][17]) + 1) % 10)]):
        one_time = OneTimeKey()
        blob = one_time.seal(plain, region.public, QID, NODE)
        commitment = one_time.commitment(plain)
        assert (
            code_of(functools.partial(region.open, blob, one_time.public, QID, NODE, 1, commitment))
            == "LOOKUP_SEAL_INVALID"
        )


def test_sealing_to_an_unusable_key_is_refused() -> None:
    # the all-zero point gives an all-zero shared secret, which X25519 refuses
    assert code_of(lambda: OneTimeKey().seal(IDS, bytes(32), QID, NODE)) == "LOOKUP_KEY_INVALID"


def test_agreement_key_is_kept_private_and_published_in_catalog_form(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    key = AgreementKey.load_or_create(directory)
    assert stat.S_IMODE((directory / AGREEMENT_KEY).stat().st_mode) == 0o600
    assert (directory / AGREEMENT_PUBLIC).read_text().strip() == key.public_b64()
    assert load_public_b64(key.public_b64()) == key.public and len(key.public) == 32
    again = AgreementKey.load_or_create(directory)
    assert again.public == key.public
    one_time = OneTimeKey()
    sealed = one_time.seal(IDS, key.public, QID, NODE)
    assert again.open(sealed, one_time.public, QID, NODE, len(IDS), one_time.commitment(IDS)) == IDS
    private_pem = (directory / AGREEMENT_KEY).read_bytes()
    for text in (repr(key), repr(one_time)):
        assert text.endswith("(...)") and key.public_b64() not in text and private_pem.decode() not in text


def test_a_bad_agreement_key_file_or_catalog_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / AGREEMENT_KEY).write_text("not a key\n")
    assert code_of(lambda: AgreementKey.load_or_create(tmp_path)) == "KEY_FILE_INVALID"
    for text in ("", "!!!!", base64.b64encode(bytes(31)).decode(), base64.b64encode(bytes(33)).decode()):
        assert code_of(functools.partial(load_public_b64, text)) == "CONFIG_INVALID", text


def test_subject_key_is_private_and_read_back(tmp_path: Path) -> None:
    key = load_or_create_subject_key(tmp_path)
    path = tmp_path / SUBJECT_KEY
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_secret(path) == key == load_or_create_subject_key(tmp_path)
    path.write_text(base64.b64encode(bytes(16)).decode())
    assert code_of(lambda: read_secret(path)) == "KEY_FILE_INVALID"
    assert code_of(lambda: read_secret(tmp_path / "absent.key")) == "KEY_FILE_UNREADABLE"


def test_subject_tags_are_keyed_and_salted_with_the_request_nonce() -> None:
    key, other_key = bytes(range(32)), bytes(range(1, 33))
    nonce, other_nonce = "ab" * 16, "cd" * 16
    pid = IDS[0]
    tag = subject_tag(key, nonce, pid)
    assert len(tag) == 32 and int(tag, 16) >= 0
    assert subject_tag(key, nonce, pid) == tag  # an auditor holding the key recomputes it
    assert subject_tag(key, other_nonce, pid) != tag  # two lookups of one person cannot be linked
    assert subject_tag(other_key, nonce, pid) != tag  # nor tested against a guess without the key
    assert subject_tag(key, nonce, IDS[1]) != tag
    assert pid not in tag and pid[:17] not in tag
    unkeyed = {hashlib.sha256(pid.encode()).hexdigest(), hashlib.sha256((nonce + pid).encode()).hexdigest()}
    assert not any(u.startswith(tag) for u in unkeyed)


def test_every_region_must_get_the_people_the_asker_signed_for(tmp_path: Path, region: AgreementKey) -> None:
    """A client sealing someone else to one region (to read that city's figures as the "total") is refused there."""
    other_region = AgreementKey.load_or_create(tmp_path / "hangzhou")
    one_time = OneTimeKey()
    signed_for = one_time.commitment(IDS[:1])
    honest = one_time.seal(IDS[:1], region.public, QID, NODE)
    swapped = one_time.seal(IDS[1:2], other_region.public, QID, "hangzhou")
    assert region.open(honest, one_time.public, QID, NODE, 1, signed_for) == IDS[:1]
    assert code_of(lambda: other_region.open(swapped, one_time.public, QID, "hangzhou", 1, signed_for)) == (
        "LOOKUP_SEAL_INVALID"
    )
    # the commitment hides the people: another lookup of the same person commits to something else
    assert OneTimeKey().commitment(IDS[:1]) != signed_for


def test_a_person_sealed_twice_is_refused(region: AgreementKey) -> None:
    one_time = OneTimeKey()
    twice = [IDS[0], IDS[0]]
    blob = one_time.seal(twice, region.public, QID, NODE)
    assert code_of(lambda: region.open(blob, one_time.public, QID, NODE, 2, one_time.commitment(twice))) == (
        "LOOKUP_SEAL_INVALID"
    )
