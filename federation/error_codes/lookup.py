"""Codes of person lookups: the sealed identifiers, the regions' keys, the layout of the answer."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import ConfigError, CryptoError, PlanError, UnavailableError

_lookup = Area("Person lookups", PlanError, Scope.REQUEST, Effect.FAILS_QUESTION)
_client = Area("Person lookups", ConfigError, Scope.LOCAL, Effect.FAILS_QUESTION)

CODES: tuple[Code, ...] = (
    _lookup.code("LOOKUP_MALFORMED", "the lookup names nobody, a region twice, or one not in the federation"),
    _lookup.code("LOOKUP_UNSUPPORTED", "the region does not answer person lookups"),
    _lookup.code("LOOKUP_FACTS_UNKNOWN", "the lookup asks for a fact there is none of"),
    _lookup.code("LOOKUP_SEAL_INVALID", "the sealed identifiers cannot be opened by the region", CryptoError),
    _lookup.code("LOOKUP_KEY_INVALID", "a region's agreement key is not usable", CryptoError),
    _lookup.code("LOOKUP_TOO_LARGE", "a lookup of this size cannot be laid out", CryptoError),
    _lookup.code("LOOKUP_LAYOUT", "the lookup's facts do not match the layout", CryptoError),
    _lookup.code(
        "LOOKUP_TOO_FEW_REGIONS",
        "too few regions answered a lookup without a per-city breakdown",
        UnavailableError,
        scope=Scope.REGION,
    ),
    _lookup.code(
        "LOOKUP_REGION_MISSING",
        "regions are missing, and the others refuse a lookup without them",
        UnavailableError,
        scope=Scope.REGION,
    ),
    _client.code("LOOKUP_KEYS_UNPINNED", "the profile pins no catalog to take the regions' keys from"),
    _client.code("LOOKUP_KEY_MISSING", "the pinned catalog has no agreement key for a region"),
    _client.code("LOOKUP_NO_HOME", "leaving out the home region needs a certificate naming one"),
    _client.code("SCREEN_INPUT_INVALID", "the file of people to screen is not valid", effect=Effect.REGION_MISSING),
    _client.code(
        "SCREEN_INPUT_UNREADABLE", "the file of people to screen cannot be read", effect=Effect.REGION_MISSING
    ),
)
