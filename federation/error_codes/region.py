"""Codes of regions and servers: down, late, broken or out of room, and a failed call's own status."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import DataError, FederationError, RequestTooLarge, UnavailableError, class_for_status

_transport = Area("Regions and servers", UnavailableError, Scope.REGION, Effect.TRANSPORT)
_region = Area("Regions and servers", UnavailableError, Scope.REGION, Effect.REGION_MISSING)
_data = Area("A region's data", DataError, Scope.REGION, Effect.REGION_MISSING)

# the coordinator's own word for a region it got nothing usable from (federation.trust.verdicts quotes these lines)
TRANSPORT: tuple[Code, ...] = (
    _transport.code("NODE_TIMEOUT", "the region did not answer before the deadline"),
    _transport.code("NODE_UNREACHABLE", "the region cannot be reached"),
    _transport.code("NODE_BAD_ANSWER", "the region's answer could not be used"),
    _transport.code("NODE_UNWELL", "the region cannot answer now"),
    _transport.code("NODE_STATE_UNWRITABLE", "the region cannot write its audit log now"),
)

# gRPC status names a failed call that carries no code is named by (``GRPC_<status>``); OK never is, nor the
# statuses that have codes of their own (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
GRPC_STATUSES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)

CODES: tuple[Code, ...] = (
    *TRANSPORT,
    _region.code("REGIONS_UNAVAILABLE", "no region, or not enough regions, answered in time"),
    _region.code("REGIONS_MISSING", "regions are missing, and the others refuse a question without them"),
    _region.code("SERVER_UNREACHABLE", "the server cannot be reached"),
    _region.code("SERVER_RESOURCE_EXHAUSTED", "the server has no room for the request now"),
    _region.code("DEADLINE_EXCEEDED", "the server did not answer in time"),
    _region.code(
        "REQUEST_TOO_LARGE", "a message is larger than the configured limits", RequestTooLarge, scope=Scope.REQUEST
    ),
    _data.code("DATA_INVALID", "a region's own data cannot be read or does not fit the catalog"),
    _data.code("DATA_TYPE_MISMATCH", "a column's type in the region's files is not the catalog's"),
    _data.code("NODE_TABLE_MISSING", "a catalog table has no source in the node's configuration"),
    _data.code("NODE_TABLE_SCHEMA", "a table's files lack columns the catalog declares"),
    _data.code("NODE_TABLE_UNREADABLE", "a table's files cannot be read"),
    _data.code("NODE_DATABASE_UNREACHABLE", "the region's database is down or refuses the node's credentials"),
    _data.code("NODE_DATABASE_ENCODING", "the region's database does not store text as UTF-8"),
    _data.code(
        "NODE_EXECUTION_FAILED",
        "a region could not compute the question over its own rows",
        effect=Effect.MASKED_FAILURE,
    ),
    _region.code("INTERNAL", "the party failed unexpectedly", FederationError),
    _region.code("NODE_INTERNAL", "the node failed unexpectedly", FederationError),
    _region.code("COORDINATOR_INTERNAL", "the coordinator failed unexpectedly", FederationError),
    _region.code("HEALTH_SERVICE_UNKNOWN", "the server reports no health for that service", FederationError),
    _region.code(
        "REMOTE_CODE_INVALID",
        "the other party sent a code not of the stable form (its class is by status)",
        FederationError,
    ),
    *(
        _region.code(f"GRPC_{status}", f"a call failed with gRPC status {status} and no code", class_for_status(status))
        for status in GRPC_STATUSES
    ),
)
