"""The BFV homomorphic-encryption wrapper every party uses (TenSEAL).

Parameters: polynomial degree 4096 with SEAL's default coefficient modulus for it (109 bits), which the
HE security standard rates at 128-bit classical security; a 40-bit prime plain modulus congruent to 1 mod
16384 (so batching works for degrees up to 8192). Slots hold limbs of at most 30 bits (see ``limb_codec``),
so a sum over 256 regions stays below half the plain modulus and never wraps.

Who holds what:

- the client makes a :class:`ClientKeys` (secret key inside), sends :meth:`ClientKeys.public_context` only;
- nodes call :func:`load_public_context` then :func:`encrypt_slots`;
- the coordinator calls :func:`load_public_context` then :func:`check_ciphertexts` on each region's answer, and
  relays it;
- only the client calls :meth:`ClientKeys.decrypt_sum`: it adds the regions' ciphertexts itself, so what it
  decrypts is exactly the sum of what the regions signed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from hpf.federation.errors import CryptoError, printable
from hpf.federation.lru import Lru

POLY_MODULUS_DEGREE = 4096
PLAIN_MODULUS = 1099511480321  # prime, == 1 mod 16384, 40 bits
COEFF_MODULUS_BITS = 109  # SEAL's BFVDefault(4096): 128-bit security
SLOTS = POLY_MODULUS_DEGREE
HALF_PLAIN = PLAIN_MODULUS // 2

MAX_CONTEXT_BYTES = 4 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 1024 * 1024


def installed_format() -> str:
    """The wire format of contexts and ciphertexts this process writes and reads: the TenSEAL release (its
    context and vector serialization), the SEAL serialization version it links (the version a SEAL header
    carries: an older SEAL refuses a newer one as an incompatible version) and the scheme and degree.

    >>> installed_format().startswith("tenseal-") and installed_format().endswith("/bfv-4096")
    True
    """
    header = sealapi.Serialization.SEALHeader()  # a new header carries the linked SEAL's version
    return f"tenseal-{ts.__version__}/seal-{header.version_major}.{header.version_minor}/bfv-{POLY_MODULUS_DEGREE}"


# The wire format this release is built and tested for (pyproject.toml pins its TenSEAL exactly), and the one
# the installed library writes. Every party states its HE_FORMAT: a catalog may name one (every party refuses to
# start if its own differs), and every context a client sends carries it (a party refuses another before
# parsing the context). Both refusals are HE_FORMAT_MISMATCH, naming both formats.
EXPECTED_HE_FORMAT = "tenseal-0.3.18/seal-4.3/bfv-4096"
HE_FORMAT = installed_format()


def check_catalog_format(stated: str | None, party: str, *, ours: str = HE_FORMAT) -> None:
    """At start: refuse to run a party (``party``, e.g. "node hangzhou") whose HE wire format is not the one the
    catalog states (``he_format``; nothing to check when it states none). HE_FORMAT_MISMATCH names both.

    >>> check_catalog_format(None, "node hangzhou"), check_catalog_format(HE_FORMAT, "node hangzhou")
    (None, None)
    """
    if stated is not None and stated != ours:
        raise CryptoError(
            f"the catalog's he_format is {stated}, but {party} runs HE wire format {ours}",
            code="HE_FORMAT_MISMATCH",
            hint="install the TenSEAL version the catalog names on every party (or correct the catalog's he_format)",
        )


def check_he_format(theirs: str, whose: str, *, ours: str = HE_FORMAT) -> None:
    """Refuse ``theirs`` (the format ``whose`` states) unless it is ``ours`` (HE_FORMAT_MISMATCH, naming both).

    >>> check_he_format(HE_FORMAT, "the request")
    >>> try:
    ...     check_he_format("tenseal-0.3.14/seal-4.1/bfv-4096", "the request", ours=EXPECTED_HE_FORMAT)
    ... except CryptoError as err:
    ...     print(err.code, err.message)
    HE_FORMAT_MISMATCH the request is in HE wire format tenseal-0.3.14/seal-4.1/bfv-4096, this party's is \
tenseal-0.3.18/seal-4.3/bfv-4096
    """
    if theirs != ours:
        raise CryptoError(
            f"{whose} is in HE wire format {printable(theirs, limit=80) or '(none stated)'}, this party's is {ours}",
            code="HE_FORMAT_MISMATCH",
            hint="every party must install the TenSEAL version the federation pins (see the catalog's he_format)",
        )


def context_digest(public_context: bytes) -> str:
    """A short stable name for a client's public context (hex SHA-256)."""
    return hashlib.sha256(public_context).hexdigest()


class ClientKeys:
    """A client's BFV key pair. The secret key never leaves this object or its key file."""

    def __init__(self, context: ts.Context) -> None:
        if not context.is_private():
            raise CryptoError("client keys need a context holding a secret key", code="KEY_NOT_PRIVATE")
        self._context = context
        self._public = context.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
        )

    @classmethod
    def generate(cls) -> ClientKeys:
        ctx = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE, plain_modulus=PLAIN_MODULUS)
        return cls(ctx)

    @classmethod
    def load_or_generate(cls, key_file: Path) -> ClientKeys:
        """Reuse the key pair stored at ``key_file`` (mode 0600), or make and store a new one."""
        if key_file.exists():
            try:
                ctx = ts.context_from(key_file.read_bytes())
            except OSError as exc:
                raise CryptoError(f"{key_file}: cannot read ({exc.strerror})", code="KEY_FILE_UNREADABLE") from None
            except (ValueError, RuntimeError):
                raise CryptoError(
                    f"{key_file}: not a valid key file",
                    code="KEY_FILE_INVALID",
                    hint="delete it to make a new key pair",
                ) from None
            return cls(ctx)
        keys = cls.generate()
        try:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(
                    keys._context.serialize(
                        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
                    )
                )
        except OSError as exc:
            raise CryptoError(f"{key_file}: cannot write ({exc.strerror})", code="KEY_FILE_UNWRITABLE") from None
        return keys

    def public_context(self) -> bytes:
        """The public context: parameters and public key; no secret, relinearisation or Galois keys."""
        return self._public

    def decrypt(self, ciphertext: bytes, expected_size: int) -> np.ndarray:
        """Decrypt one ciphertext into signed slot values."""
        vec = _load_vector(self._context, ciphertext, expected_size)
        return np.asarray(vec.decrypt(), dtype=np.int64)

    def decrypt_sum(self, answers: Sequence[Sequence[bytes]], chunk_sizes: Sequence[int]) -> list[np.ndarray]:
        """Add several parties' answers (each one ciphertext per chunk of ``chunk_sizes``) and decrypt the sum,
        chunk by chunk, into signed slot values."""
        total = CiphertextSum(self._context, chunk_sizes)
        for blobs in answers:
            total.add(blobs)
        return [np.asarray(v.decrypt(), dtype=np.int64) for v in total.vectors()]

    def __repr__(self) -> str:  # never show key material
        return f"ClientKeys(public_digest={context_digest(self._public)[:12]})"

    def __getstate__(self) -> object:
        raise TypeError("ClientKeys cannot be pickled: the secret key stays in the client")


# deserialising a context costs tens of milliseconds; clients reuse their keys, so keep the last few
_CACHE: Lru[str, ts.Context] = Lru(32)


def cached_public_context(digest: str) -> ts.Context:
    """A public context this process has already validated, by digest; CONTEXT_UNKNOWN if it has not."""
    ctx = _CACHE.get(digest)
    if ctx is None:
        raise CryptoError("this party does not hold that public context; send it", code="CONTEXT_UNKNOWN")
    return ctx


def load_public_context(data: bytes, digest: str | None = None) -> ts.Context:
    """Validate and load a client's public context; refuse secrets, foreign parameters and garbage.

    ``digest`` is :func:`context_digest` of ``data`` when the caller has already computed it.
    """
    if len(data) > MAX_CONTEXT_BYTES:
        raise CryptoError("the public context is too large", code="CONTEXT_TOO_LARGE")
    digest = digest or context_digest(data)
    cached = _CACHE.get(digest)
    if cached is not None:
        return cached
    try:
        ctx = ts.context_from(data)
    except (ValueError, RuntimeError, TypeError):
        raise CryptoError("the public context cannot be parsed", code="CONTEXT_INVALID") from None
    if ctx.has_secret_key() or ctx.is_private():
        raise CryptoError(
            "the context carries a secret key; send only the public context",
            code="CONTEXT_HAS_SECRET",
            hint="serialize with save_secret_key=False",
        )
    if ctx.has_galois_keys() or ctx.has_relin_keys():
        raise CryptoError(
            "the context carries relinearisation or Galois keys; send only the public key",
            code="CONTEXT_HAS_EVAL_KEYS",
        )
    if not ctx.has_public_key():
        raise CryptoError("the context has no public key", code="CONTEXT_NO_PUBLIC_KEY")
    _check_parameters(ctx)
    _CACHE.put(digest, ctx)
    return ctx


def _check_parameters(ctx: ts.Context) -> None:
    try:
        data = ctx.seal_context().data
        key_data = data.key_context_data()
        parms = key_data.parms()
        scheme_ok = parms.scheme().name == "BFV"
        degree = parms.poly_modulus_degree()
        plain = 2 * key_data.plain_upper_half_threshold() - 1
        q_bits = key_data.total_coeff_modulus_bit_count()
    except (AttributeError, RuntimeError, ValueError):
        raise CryptoError("the context's parameters cannot be read", code="CONTEXT_INVALID") from None
    if not scheme_ok or degree != POLY_MODULUS_DEGREE or plain != PLAIN_MODULUS or q_bits != COEFF_MODULUS_BITS:
        raise CryptoError(
            "the context's encryption parameters are not the federation's "
            f"(BFV, degree {POLY_MODULUS_DEGREE}, {COEFF_MODULUS_BITS}-bit coefficient modulus, "
            "the federation plain modulus)",
            code="CONTEXT_PARAMETERS",
            hint="generate keys with the hpf client library",
        )


def encrypt_slots(ctx: ts.Context, slots: np.ndarray) -> bytes:
    """Encrypt one chunk of at most SLOTS values under the client's public key, after a range check."""
    if slots.ndim != 1 or not 0 < slots.shape[0] <= SLOTS:
        raise CryptoError(f"a ciphertext holds 1 to {SLOTS} slots", code="SLOT_COUNT")
    if slots.dtype != np.int64:
        raise CryptoError("slots must be 64-bit integers", code="SLOT_TYPE")
    if slots.size and (int(slots.max()) > HALF_PLAIN or int(slots.min()) < -HALF_PLAIN):
        # An out-of-range value silently corrupts every slot of the vector: never encode one. The plain modulus
        # is odd, so each residue has one representative in [-HALF_PLAIN, HALF_PLAIN] (the centred form masked
        # slots take), and both ends round-trip exactly.
        raise CryptoError("a slot value is outside the plain modulus range", code="SLOT_RANGE")
    vec = ts.bfv_vector(ctx, slots.tolist())
    return bytes(vec.serialize())


def _load_vector(ctx: ts.Context, blob: bytes, expected_size: int) -> ts.BFVVector:
    if len(blob) > MAX_CIPHERTEXT_BYTES:
        raise CryptoError("a ciphertext is too large", code="CIPHERTEXT_TOO_LARGE")
    try:
        vec = ts.bfv_vector_from(ctx, blob)
    except (ValueError, RuntimeError, TypeError):
        raise CryptoError(
            "a ciphertext cannot be parsed or does not match the client's context", code="CIPHERTEXT_INVALID"
        ) from None
    if vec.size() != expected_size:
        raise CryptoError(
            f"a ciphertext holds {vec.size()} slots where the plan lays out {expected_size}",
            code="CIPHERTEXT_SHAPE",
        )
    return vec


def check_ciphertexts(ctx: ts.Context, blobs: Sequence[bytes], chunk_sizes: Sequence[int]) -> None:
    """Refuse an answer whose ciphertexts are not one per chunk, each parsing under ``ctx`` with its chunk's
    slot count (CIPHERTEXT_SHAPE, CIPHERTEXT_INVALID, CIPHERTEXT_TOO_LARGE)."""
    _shape(blobs, chunk_sizes)
    for blob, n in zip(blobs, chunk_sizes, strict=True):
        _load_vector(ctx, blob, n)


def _shape(blobs: Sequence[bytes], chunk_sizes: Sequence[int]) -> None:
    if len(blobs) != len(chunk_sizes):
        raise CryptoError(
            f"an answer holds {len(blobs)} ciphertexts where the plan lays out {len(chunk_sizes)}",
            code="CIPHERTEXT_SHAPE",
        )


class CiphertextSum:
    """Running homomorphic sum of several parties' answers, chunk by chunk.

    :meth:`add` first checks every ciphertext of one party, so a malformed answer is refused whole and
    never half-added.
    """

    def __init__(self, ctx: ts.Context, chunk_sizes: Sequence[int]) -> None:
        self._ctx = ctx
        self._sizes = tuple(chunk_sizes)
        self._acc: list[ts.BFVVector] | None = None
        self.parties = 0

    def add(self, blobs: Sequence[bytes]) -> None:
        _shape(blobs, self._sizes)
        vectors = [_load_vector(self._ctx, b, n) for b, n in zip(blobs, self._sizes, strict=True)]
        if self._acc is None:
            self._acc = vectors
        else:
            for acc, vec in zip(self._acc, vectors, strict=True):
                acc += vec
        self.parties += 1

    def vectors(self) -> list[ts.BFVVector]:
        if self._acc is None:
            raise CryptoError("nothing to add", code="CIPHERTEXT_MISSING")
        return self._acc

    def result(self) -> list[bytes]:
        return [bytes(v.serialize()) for v in self.vectors()]
