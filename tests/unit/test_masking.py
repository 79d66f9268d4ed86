"""Secure aggregation masks: they cancel exactly in the sum over the participants (through real BFV too), while one
region's masked answer, decrypted alone by a colluding coordinator and client, is uniform noise; the PRG that
two regions must agree on is pinned by known answers."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from uniformity import CHI2_LIMIT, chi_square_uniform

from hpf.federation.catalog import Catalog
from hpf.federation.crypto import he
from hpf.federation.crypto.masking import SEED_BYTES, _draw, apply, mask, pair_seed, prg_residues, run_id
from hpf.federation.crypto.sealing import AgreementKey
from hpf.federation.errors import CryptoError, PlanError
from hpf.node.protection import Protector

T = he.PLAIN_MODULUS
H = he.HALF_PLAIN
QID = "3f" * 16
NAMES = ["shanghai", "beijing", "Hangzhou", "x-1", "guangzhou.2", "chengdu", "a"]  # mixed case: order is str order


def fixed_key(name: str) -> AgreementKey:
    """A region's agreement key derived from its name, so every run of the tests sees the same masks."""
    return AgreementKey(
        X25519PrivateKey.from_private_bytes(hashlib.sha256(b"hpf-test-agreement/" + name.encode()).digest())
    )


def masks_for(names: list[str], n: int, query_id: str = QID) -> dict[str, np.ndarray]:
    keys = {name: fixed_key(name) for name in names}
    peers = {name: key.public for name, key in keys.items()}
    run = run_id(query_id, names)
    return {name: mask(name, peers, key.exchange, run, n) for name, key in keys.items()}


@pytest.fixture(scope="module")
def keys() -> he.ClientKeys:
    return he.ClientKeys.generate()


@pytest.fixture(scope="module")
def public_ctx(keys: he.ClientKeys) -> ts.Context:
    return he.load_public_context(keys.public_context())


@pytest.mark.parametrize("count", range(2, 8))
def test_masks_cancel_and_masked_slots_sum_to_the_plain_sum(count: int) -> None:
    names = NAMES[:count]
    n = 257
    masks = masks_for(names, n)
    total = np.zeros(n, dtype=np.int64)
    for m in masks.values():
        assert m.dtype == np.int64 and m.shape == (n,)
        assert int(m.min()) >= 0 and int(m.max()) < T
        total = (total + m) % T
    assert not total.any()

    rng = np.random.default_rng(count)
    edges = np.array([2**38, -(2**38), 2**38 - 1, -(2**38) + 1, H, -H, 0, -1, 1], dtype=np.int64)
    plain_sum = np.zeros(n, dtype=np.int64)
    masked_sum = np.zeros(n, dtype=np.int64)
    for name in names:
        slots = rng.integers(-(2**38), 2**38, size=n, dtype=np.int64)
        slots[: edges.size] = np.roll(edges, names.index(name))
        masked = apply(slots, masks[name])
        assert masked.dtype == np.int64 and int(masked.min()) >= -H and int(masked.max()) <= H
        plain_sum = (plain_sum + slots) % T
        masked_sum = (masked_sum + masked) % T
    assert masked_sum.tolist() == plain_sum.tolist()


def test_mask_with_keys_from_state_directories(tmp_path: Path) -> None:
    names = ["north", "south", "west"]
    keys = {name: AgreementKey.load_or_create(tmp_path / name) for name in names}
    peers = {name: key.public for name, key in keys.items()}
    run = run_id(QID, names)
    masks = [mask(name, peers, key.exchange, run, 64) for name, key in keys.items()]
    assert not (np.sum(masks, axis=0) % T).any()
    reloaded = AgreementKey.load_or_create(tmp_path / "north")
    assert mask("north", peers, reloaded.exchange, run, 64).tolist() == masks[0].tolist()


def test_end_to_end_through_bfv(keys: he.ClientKeys, public_ctx: ts.Context) -> None:
    names = ["beijing", "hangzhou", "shanghai"]
    n = he.SLOTS
    masks = masks_for(names, n)
    rng = np.random.default_rng(7)
    slots = {
        "beijing": rng.integers(-(2**38), 2**38, size=n, dtype=np.int64),
        "hangzhou": np.zeros(n, dtype=np.int64),
        "shanghai": np.full(n, 123_456_789, dtype=np.int64),
    }
    blobs = {name: he.encrypt_slots(public_ctx, apply(slots[name], masks[name])) for name in names}
    running = he.CiphertextSum(public_ctx, [n])
    for name in names:
        running.add([blobs[name]])
    expected = slots["beijing"] + slots["hangzhou"] + slots["shanghai"]
    assert keys.decrypt(running.result()[0], n).tolist() == expected.tolist()

    # what a coordinator and client colluding see: one region's ciphertext, decrypted alone
    for name in names:
        alone = keys.decrypt(blobs[name], n)
        assert np.count_nonzero(alone == slots[name]) <= 1
        assert chi_square_uniform(alone) < CHI2_LIMIT, name
    # the test has power: the unmasked answers are nowhere near uniform
    assert chi_square_uniform(slots["shanghai"]) > 10 * CHI2_LIMIT
    assert chi_square_uniform(slots["beijing"]) > 10 * CHI2_LIMIT
    # and the plaintext cannot be read off the masked values: no correlation (sd about 1/64 for 4096 slots)
    alone = keys.decrypt(blobs["beijing"], n).astype(np.float64)
    assert abs(np.corrcoef(alone, slots["beijing"].astype(np.float64))[0, 1]) < 0.08


def test_half_plain_round_trips_and_beyond_is_refused(keys: he.ClientKeys, public_ctx: ts.Context) -> None:
    edge = np.array([H, -H, 0, H - 1, -(H - 1), 1, -1], dtype=np.int64)
    assert keys.decrypt(he.encrypt_slots(public_ctx, edge), edge.size).tolist() == edge.tolist()
    for value in (H + 1, -(H + 1)):
        with pytest.raises(CryptoError) as info:
            he.encrypt_slots(public_ctx, np.array([0, value], dtype=np.int64))
        assert info.value.code == "SLOT_RANGE"


def test_run_id_binds_query_and_set_not_order() -> None:
    base = run_id(QID, ["b", "a", "c"])
    assert len(base) == 64 and int(base, 16) >= 0
    assert run_id(QID, ["c", "b", "a"]) == base
    assert run_id(QID, ("a", "b", "c")) == base
    assert run_id(QID, ["a", "b"]) != base  # the survivors' re-run
    assert run_id("40" * 16, ["a", "b", "c"]) != base
    for bad in ([], ["a", "b", "a"], ["a", ""], ["a\nb", "c"], ["a\x00", "b"]):
        with pytest.raises(PlanError) as info:
            run_id(QID, bad)
        assert info.value.code == "SECAGG_PARTICIPANTS_INVALID"


def test_pair_seed_is_symmetric_and_fresh_per_run_and_pair() -> None:
    shared = bytes(range(32))
    run = run_id(QID, ["a", "b", "c"])
    seed = pair_seed(shared, run, "a", "b")
    assert len(seed) == SEED_BYTES
    assert pair_seed(shared, run, "b", "a") == seed
    assert pair_seed(shared, run_id(QID, ["a", "b"]), "a", "b") != seed
    assert pair_seed(shared, run, "a", "c") != seed
    assert pair_seed(bytes(32), run, "a", "b") != seed


# RFC 8439, appendix A.1, test vectors 1 and 2: the ChaCha20 keystream for the all-zero key and nonce, blocks 0 and 1
RFC8439_BLOCKS = bytes.fromhex(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
    "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
)


def test_prg_is_chacha20_low_40_bits_little_endian() -> None:
    words = [int.from_bytes(RFC8439_BLOCKS[i : i + 8], "little") & (2**40 - 1) for i in range(0, 128, 8)]
    assert all(w < T for w in words)  # no rejection among these, so the residues are the words themselves
    assert prg_residues(bytes(32), 16).tolist() == words


def test_prg_known_answer() -> None:
    # cross-region agreement depends on this stream: a change here breaks every mixed-version federation
    assert prg_residues(bytes(range(32)), 6).tolist() == [
        934107938105,
        792270716301,
        809330292106,
        928996248754,
        699673617195,
        250885377599,
    ]


def test_prg_is_deterministic_in_range_and_prefix_stable() -> None:
    seed = hashlib.sha256(b"seed").digest()
    first = prg_residues(seed, 10_000)
    assert first.dtype == np.int64 and first.shape == (10_000,)
    assert int(first.min()) >= 0 and int(first.max()) < T
    assert prg_residues(seed, 10_000).tolist() == first.tolist()
    assert prg_residues(seed, 77).tolist() == first[:77].tolist()
    assert prg_residues(seed, 0).shape == (0,)
    assert prg_residues(hashlib.sha256(b"other").digest(), 100).tolist() != first[:100].tolist()
    with pytest.raises(CryptoError) as info:
        prg_residues(seed[:16], 4)
    assert info.value.code == "SECAGG_SEED_INVALID"


@pytest.mark.parametrize("modulus", [2**39 + 1, 5, 1000])
def test_rejection_sampling_extends_the_stream(modulus: int) -> None:
    """With a modulus just above a power of two about half the words are rejected, so the stream is extended
    several times; the result must still be the first n accepted words of one continuous keystream."""
    seed = hashlib.sha256(b"reject").digest()
    n = 3000
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor().update(bytes(8 * 4 * n))
    bits = (1 << modulus.bit_length()) - 1
    words = [int.from_bytes(stream[i : i + 8], "little") & bits for i in range(0, len(stream), 8)]
    reference = [w for w in words if w < modulus][:n]
    assert len(reference) == n
    drawn = _draw(seed, n, modulus)
    assert drawn.tolist() == reference
    assert _draw(seed, 100, modulus).tolist() == reference[:100]


def test_exchange_is_symmetric_cached_and_refuses_bad_keys() -> None:
    a, b = fixed_key("a"), fixed_key("b")
    secret = a.exchange(b.public)
    assert len(secret) == 32 and secret == b.exchange(a.public)
    assert a.exchange(b.public) is secret  # computed once per peer
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(a.exchange(fixed_key("c").public))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    for bad in (bytes(32), b"\x01" + bytes(31), bytes(31), b""):
        with pytest.raises(CryptoError) as info:
            a.exchange(bad)
        assert info.value.code == "SECAGG_PEER_KEY_INVALID"


def test_mask_and_apply_refuse_misuse() -> None:
    key = fixed_key("a")
    peers = {"a": key.public, "b": fixed_key("b").public}
    run = run_id(QID, ["a", "b"])
    with pytest.raises(PlanError) as plan_info:
        mask("c", peers, key.exchange, run, 8)
    assert plan_info.value.code == "SECAGG_PARTICIPANTS_INVALID"
    with pytest.raises(CryptoError) as key_info:
        mask("a", {"a": key.public, "b": bytes(32)}, key.exchange, run, 8)
    assert key_info.value.code == "SECAGG_PEER_KEY_INVALID"
    assert not mask("a", {"a": key.public}, key.exchange, run_id(QID, ["a"]), 8).any()  # alone: nothing to hide

    m = mask("a", peers, key.exchange, run, 8)
    assert m.tolist() != mask("a", peers, key.exchange, run_id("40" * 16, ["a", "b"]), 8).tolist()
    for slots, bad_mask, code in (
        (np.zeros(7, dtype=np.int64), m, "SECAGG_MASK_INVALID"),
        (np.zeros(8, dtype=np.int64), np.full(8, T, dtype=np.int64), "SECAGG_MASK_INVALID"),
        (np.zeros(8, dtype=np.int64), np.full(8, -1, dtype=np.int64), "SECAGG_MASK_INVALID"),
        (np.full(8, H + 1, dtype=np.int64), m, "SLOT_RANGE"),
        (np.full(8, -(H + 1), dtype=np.int64), m, "SLOT_RANGE"),
        (np.zeros(8, dtype=np.int32), m, "SLOT_TYPE"),
    ):
        with pytest.raises(CryptoError) as info:
            apply(slots, bad_mask)
        assert info.value.code == code


def _catalog(keys: dict[str, str | None]) -> Catalog:
    return Catalog.model_validate(
        {
            "federation": "f",
            "nodes": [{"id": n, "address": "h:1", "agreement_key": k} for n, k in keys.items()],
            "tables": {"t": {"columns": {"v": {"type": "BIGINT"}}}},
        }
    )


def test_a_node_takes_peer_keys_published_while_running_and_a_run_keeps_the_keys_it_was_checked_with() -> None:
    """A running node takes agreement keys published where there were none (federation.catalog_watch); a run
    checked before a catalog change is masked with the keys it was checked with, so the masks of one run never
    mix two catalogs' keys, whatever the catalog is changed to meanwhile."""
    names = ["north", "south", "west"]
    agreement = {n: fixed_key(n) for n in names}
    published = {n: agreement[n].public_b64() for n in names}
    protectors = {n: Protector(n, _catalog(published), agreement[n], bytes(32)) for n in names}
    north = Protector("north", _catalog({**published, "south": None}), agreement["north"], bytes(32))
    with pytest.raises(CryptoError) as info:
        north.run(QID, names, 1, {})
    assert info.value.code == "SECAGG_PEER_KEY_MISSING"

    north.publish(_catalog(published))  # south's key published while the node runs
    run = north.run(QID, names, 1, {})
    north.publish(_catalog({**published, "south": fixed_key("impostor").public_b64()}))  # meanwhile, another
    zeros = [np.zeros(300, dtype=np.int64), np.zeros(12, dtype=np.int64)]
    total = [np.zeros(z.size, dtype=np.int64) for z in zeros]
    for name, protector in {**protectors, "north": north}.items():
        masked = protector.mask(run if name == "north" else protector.run(QID, names, 1, {}), zeros)
        assert any(m.any() for m in masked)
        total = [(t + m) % T for t, m in zip(total, masked, strict=True)]
    assert not any(t.any() for t in total)  # the masks cancel: north's run used south's key as published
