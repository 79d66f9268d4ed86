"""Codes of the encryption: public contexts, ciphertexts and their slots, partial sums, masks and key files."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import CryptoError, DataError, PlanError, RequestTooLarge

_context = Area("Encryption", CryptoError, Scope.REQUEST, Effect.FAILS_QUESTION)
_answer = Area("Encryption", CryptoError, Scope.REGION, Effect.REGION_MISSING)
_partial = Area("Encryption", CryptoError, Scope.REGION, Effect.MASKED_FAILURE)
_secagg = Area("Encryption", CryptoError, Scope.REQUEST, Effect.FAILS_QUESTION)
_keys = Area("Encryption", CryptoError, Scope.LOCAL, Effect.REGION_MISSING)

CODES: tuple[Code, ...] = (
    _answer.code("CRYPTO_INVALID", "a key, context or ciphertext is malformed, mismatched or out of range"),
    _context.code("CONTEXT_INVALID", "the public context cannot be parsed"),
    _context.code("CONTEXT_TOO_LARGE", "the public context is too large"),
    _context.code("CONTEXT_HAS_SECRET", "the context carries a secret key; only the public context is sent"),
    _context.code("CONTEXT_HAS_EVAL_KEYS", "the context carries relinearisation or Galois keys"),
    _context.code("CONTEXT_NO_PUBLIC_KEY", "the context has no public key"),
    _context.code("CONTEXT_PARAMETERS", "the context's encryption parameters are not the federation's"),
    _context.code("CONTEXT_UNKNOWN", "the party does not hold that public context; it is sent again"),
    _context.code("HE_FORMAT_MISMATCH", "the HE wire format is not this party's", effect=Effect.REGION_MISSING),
    _answer.code("CIPHERTEXT_INVALID", "a ciphertext cannot be parsed or does not match the context"),
    _answer.code("CIPHERTEXT_MISSING", "there is no ciphertext to add"),
    _answer.code("CIPHERTEXT_SHAPE", "the ciphertexts do not match the question's layout"),
    _answer.code("CIPHERTEXT_TOO_LARGE", "a ciphertext is too large"),
    _answer.code("SLOT_COUNT", "a ciphertext holds too few or too many slots"),
    _answer.code("SLOT_TYPE", "slots must be 64-bit integers"),
    _answer.code("SLOT_RANGE", "a slot value is outside the plain modulus range"),
    _answer.code("ANSWER_CORRUPT", "the answer cannot be used: altered, truncated or for another question"),
    _answer.code("ANSWER_CIPHERTEXT_MISMATCH", "a region's ciphertexts are not the ones it signed"),
    _answer.code("ANSWER_INCONSISTENT", "the answer's figures contradict each other"),
    _answer.code("ANSWER_STATEMENT_INVALID", "a region's signed statement is not valid for this answer"),
    _answer.code("ANSWER_STATEMENT_UNVERIFIABLE", "the pinned catalog has no usable audit key for the region"),
    _answer.code("ANSWER_TOO_LARGE", "the answer is larger than this client accepts in one message", RequestTooLarge),
    _partial.code("PARTIAL_OUT_OF_RANGE", "a region's partial result does not fit the encoding"),
    _partial.code("PARTIAL_SCALE", "a region's partial sum has more decimals than its declared scale", DataError),
    _partial.code("PARTIAL_TYPE", "a region's partial result has an unexpected type", DataError),
    _secagg.code("SECAGG_PARTICIPANTS_INVALID", "the run's participants are not a valid set", PlanError),
    _secagg.code("SECAGG_PEER_KEY_MISSING", "the catalog publishes no agreement key for a participant"),
    _secagg.code("SECAGG_PEER_KEY_INVALID", "a participant's agreement key is not usable"),
    _secagg.code("SECAGG_SEED_INVALID", "a mask seed is not 32 bytes"),
    _secagg.code("SECAGG_MASK_INVALID", "a mask does not cover the slots it masks"),
    _secagg.code("SECAGG_UNSUPPORTED", "the region cannot mask its answers (it has no agreement key)"),
    _keys.code("KEY_FILE_INVALID", "a key file is not a valid key"),
    _keys.code("KEY_FILE_UNREADABLE", "a key file cannot be read"),
    _keys.code("KEY_FILE_UNWRITABLE", "a key file cannot be written"),
    _keys.code("KEY_NOT_PRIVATE", "client keys need a context holding a secret key"),
)
