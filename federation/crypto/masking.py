"""Secure aggregation: pairwise masks that hide one region's partial even from a coordinator and client together.

A region's answer is encrypted under the asking client's BFV key, and the coordinator only adds ciphertexts.
That protects a partial from the coordinator alone, but not from a coordinator that colludes with the client:
the client can decrypt any single region's ciphertext the coordinator hands it. So before encrypting, every
participant adds to its slot vector (modulo the plain modulus t) a mask that is uniform on its own but cancels
in the sum over the participant set:

    mask_i = sum over participants j != i of  +PRG(seed_ij) if i < j  else  -PRG(seed_ij)      (mod t)

where ``seed_ij`` is shared by regions i and j only:

    seed_ij = HKDF-SHA256(X25519(i's agreement key, j's agreement key),
                          salt="hpf-secagg-mask/v1", info=run id || min(i, j) || max(i, j))

Each pair's term is added by one side and subtracted by the other, so the masks sum to zero and the client
decrypts exactly the sum of the partials. One ciphertext alone decrypts to the partial plus a mask that is
uniform modulo t to anyone missing a seed it holds with an honest peer: coordinator and client learn nothing
about a region's partial unless every other participant colludes with them (and then the sum minus their
own partials gives it away anyway). With a single participant the mask is zero: its answer *is* the sum.

The run id binds the masks to one query and one participant set (:func:`run_id`). If a region fails after the
others masked against it, the sum does not cancel; the query is re-run with the survivors, a different set and
so a different run id, never by reusing the masks. The agreement keys are the static X25519 keys regions already
publish in the pinned catalog (:class:`federation.crypto.sealing.AgreementKey`), so masking needs no extra round trip.

A mask must cover one answer once: a run's mask is a fixed vector, so two vectors masked with the same run and
length would differ by exactly their plaintexts' difference. An answer split over several ciphertexts is
masked as a whole (``n`` = all its slots) and then split.

The PRG (:func:`prg_residues`) is specified bit for bit, because the two regions of a pair must derive the same
stream on any platform: ChaCha20 (RFC 8439 block function, key = the seed, nonce and initial block counter
zero) keystream, read as little-endian 64-bit words; each word's low 40 bits are kept and accepted if below t
(t is just below 2**40, so about one word in 7.5 million is rejected); the residues are the first ``n``
accepted words, in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hpf.federation.crypto.he import HALF_PLAIN, PLAIN_MODULUS
from hpf.federation.errors import CryptoError, PlanError

SEED_BYTES = 32
_RUN_DOMAIN = b"hpf-secagg-run/v1\x00"
_MASK_SALT = b"hpf-secagg-mask/v1"
_CHACHA_NONCE = b"\x00" * 16  # cryptography's form: 4-byte little-endian block counter, then a 12-byte nonce
_WORD = np.dtype("<u8")  # explicit byte order: the same words on every platform


def _check_participants(participants: Sequence[str]) -> None:
    if not participants:
        raise PlanError("secure aggregation needs at least one participant", code="SECAGG_PARTICIPANTS_INVALID")
    if len(set(participants)) != len(participants):
        raise PlanError("a participant is named twice", code="SECAGG_PARTICIPANTS_INVALID")
    for node in participants:
        # "\n" and NUL separate ids in what is hashed: refusing them keeps every encoding unambiguous
        if not node or "\n" in node or "\x00" in node:
            raise PlanError("a participant id is empty or holds a separator", code="SECAGG_PARTICIPANTS_INVALID")


def run_id(query_id: str, participants: Sequence[str], terms: bytes = b"") -> str:
    """The id of one masking run (hex SHA-256): the query id, the participant set (in any order) and the
    privacy terms every participant answers under (canonical bytes; empty for none).

    Every participant must derive the same id, so the set is sorted first. A re-run with the survivors of a
    failed run has a different set and hence a different id, so no pair ever reuses a mask. A participant
    answering under other terms (exact where the others add noise, or a different epsilon) derives another id,
    so its masks do not cancel and the sum is noise: no region's data is summed with less noise than its own
    policy asks for.
    """
    _check_participants(participants)
    if "\x00" in query_id:
        raise PlanError("the query id holds a separator", code="SECAGG_PARTICIPANTS_INVALID")
    data = _RUN_DOMAIN + query_id.encode("utf-8") + b"\x00" + "\n".join(sorted(participants)).encode("utf-8")
    if terms:
        data += b"\x00" + hashlib.sha256(terms).digest()
    return hashlib.sha256(data).hexdigest()


def pair_seed(shared: bytes, run: str, a: str, b: str) -> bytes:
    """The 32-byte PRG seed of the pair (a, b) in one run; the same for (b, a).

    HKDF-SHA256 over their X25519 secret, with the run id and both ids (sorted) as info, so a pair's seed is
    fresh for every run while the agreement keys stay static.
    """
    lo, hi = sorted((a, b))
    info = run.encode("ascii") + b"\x00" + lo.encode("utf-8") + b"\x00" + hi.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=_MASK_SALT, info=info).derive(shared)


def _draw(seed: bytes, n: int, modulus: int) -> np.ndarray:
    """The first ``n`` keystream words whose low ``modulus.bit_length()`` bits are below ``modulus``.

    Separate from :func:`prg_residues` only so tests can drive the rejection path with a small modulus.
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if len(seed) != SEED_BYTES:
        raise CryptoError("a mask seed must be 32 bytes", code="SECAGG_SEED_INVALID")
    limit = 1 << modulus.bit_length()
    low_bits = np.uint64(limit - 1)
    stream = Cipher(algorithms.ChaCha20(seed, _CHACHA_NONCE), mode=None).encryptor()
    parts: list[np.ndarray] = []
    have = 0
    while have < n:
        need = n - have
        words = need + need * (limit - modulus) // modulus + 16  # the expected rejections, and a little more
        raw = np.frombuffer(stream.update(bytes(8 * words)), dtype=_WORD) & low_bits
        accepted = raw[raw < np.uint64(modulus)]
        parts.append(accepted)
        have += accepted.size
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts)[:n].astype(np.int64)


def prg_residues(seed: bytes, n: int) -> np.ndarray:
    """``n`` residues uniform in [0, t) (int64), a pure function of the 32-byte ``seed`` (see the module doc).

    The stream is continued, never restarted, when rejections leave too few, so the result is the first ``n``
    accepted words: ``prg_residues(seed, n)[:m] == prg_residues(seed, m)`` for every m <= n.
    """
    return _draw(seed, n, PLAIN_MODULUS)


def mask(node_id: str, peers: Mapping[str, bytes], exchange: Callable[[bytes], bytes], run: str, n: int) -> np.ndarray:
    """This region's total mask for one run: ``n`` int64 residues in [0, t), cancelling with the others'.

    ``peers`` maps every participant's id (this region's too, which is skipped) to its raw 32-byte agreement
    public key from the pinned catalog; ``exchange`` is this region's :meth:`AgreementKey.exchange`; ``run`` is
    :func:`run_id` of the query and exactly these participants. Mask a whole answer in one call (see the
    module doc): the same run and length always give the same mask.
    """
    if node_id not in peers:
        raise PlanError("this region is not among the run's participants", code="SECAGG_PARTICIPANTS_INVALID")
    _check_participants(list(peers))
    total = np.zeros(n, dtype=np.int64)
    for peer in sorted(peers):
        if peer == node_id:
            continue
        stream = prg_residues(pair_seed(exchange(peers[peer]), run, node_id, peer), n)
        # both terms stay below 2t < 2**41: no int64 overflow, and one reduction brings the sum back to [0, t)
        total += stream if node_id < peer else PLAIN_MODULUS - stream
        np.remainder(total, PLAIN_MODULUS, out=total)
    return total


def apply(slots: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``slots + mask`` modulo t, centred in [-(t-1)/2, (t-1)/2] (int64), the form the BFV encoder takes.

    ``slots`` must already be in that range (they are what the region would have encrypted unmasked); a value
    outside it would wrap silently, so it is refused here as it is by :func:`federation.crypto.he.encrypt_slots`.
    """
    if slots.dtype != np.int64 or mask.dtype != np.int64:
        raise CryptoError("slots and masks must be 64-bit integers", code="SLOT_TYPE")
    if slots.shape != mask.shape:
        raise CryptoError(
            f"a mask of shape {mask.shape} cannot cover slots of shape {slots.shape}", code="SECAGG_MASK_INVALID"
        )
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= PLAIN_MODULUS):
        raise CryptoError("a mask value is not a residue modulo the plain modulus", code="SECAGG_MASK_INVALID")
    if slots.size and (int(slots.max()) > HALF_PLAIN or int(slots.min()) < -HALF_PLAIN):
        raise CryptoError("a slot value is outside the plain modulus range", code="SLOT_RANGE")
    out = np.remainder(slots + mask, PLAIN_MODULUS)  # |slots| < t and mask < t: no int64 overflow
    out[out > HALF_PLAIN] -= PLAIN_MODULUS
    return out
