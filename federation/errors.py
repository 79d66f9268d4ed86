"""One root exception with a stable code, and its one mapping to gRPC.

Every error the federation raises on purpose is a :class:`FederationError`. It carries

- ``code``: a stable, documented string (``PLAN_NOT_ADDITIVE``, ``CONFIG_INVALID``...), what scripts match on;
- ``message``: a clear public sentence, safe to send across the wire (never a row value, an identifier,
  a plaintext partial or a raw SQL engine message);
- ``hint``: how to ask instead, where there is one;
- ``rule``: for a policy refusal, the rule that refused (``hangzhou: roles.analyst.tables.loans.purposes``).

Detail for operators goes to the log of the party that raised it, never into the message.

Each code is declared once, with its class, in :mod:`federation.error_codes`, which :func:`error_for_code` reads
to rebuild a relayed error. Each class names its gRPC status code, and gRPC is imported only when one is needed (to
abort a call or to read a failed one): a command that only prints its help, or a client that only plans, never
loads gRPC for its errors.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

CODE_KEY = "hpf-error-code"
HINT_KEY = "hpf-error-hint"
RULE_KEY = "hpf-error-rule"
# a region's signed refusal of some applicants for their consent (federation.consent.refusals), binary metadata
CONSENT_REFUSAL_KEY = "hpf-consent-refusal-bin"
MAX_CONSENT_REFUSAL_BYTES = 2048  # a refusal names at most 31 applicants: far under this


class FederationError(Exception):
    """Root of every deliberate error; ``code`` is stable, ``message`` is public."""

    default_code = "INTERNAL"
    grpc_status = "INTERNAL"  # the name of the gRPC status code it maps to (see :attr:`status`)
    # a region's signed refusal of applicants for their consent, carried as it came (see federation.consent.refusals)
    consent_refusal: bytes = b""

    def __init__(
        self, message: str, *, code: str | None = None, hint: str | None = None, rule: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.hint = hint
        self.rule = rule

    @property
    def status(self) -> grpc.StatusCode:
        """The gRPC status code this error maps to."""
        import grpc

        return grpc.StatusCode[self.grpc_status]

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.rule:
            text += f" (rule: {self.rule})"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class ConfigError(FederationError):
    """A configuration file (catalog, node, coordinator, profile) is wrong."""

    default_code = "CONFIG_INVALID"
    grpc_status = "FAILED_PRECONDITION"


class PlanError(FederationError):
    """The SQL cannot be answered by the federation as written."""

    default_code = "PLAN_INVALID"
    grpc_status = "INVALID_ARGUMENT"


class PolicyViolation(FederationError):
    """A node's policy refuses the request."""

    default_code = "POLICY_DENIED"
    grpc_status = "PERMISSION_DENIED"


class CryptoError(FederationError):
    """A key, context or ciphertext is malformed, mismatched or out of range."""

    default_code = "CRYPTO_INVALID"
    grpc_status = "INVALID_ARGUMENT"


class AuthError(FederationError):
    """An identity or certificate is missing, invalid, expired or from the wrong CA."""

    default_code = "AUTH_FAILED"
    grpc_status = "UNAUTHENTICATED"


class DataError(FederationError):
    """A node's own data cannot be read or does not fit the catalog."""

    default_code = "DATA_INVALID"
    grpc_status = "FAILED_PRECONDITION"


class UnavailableError(FederationError):
    """No region (or not enough regions) answered in time."""

    default_code = "REGIONS_UNAVAILABLE"
    grpc_status = "UNAVAILABLE"


class RequestTooLarge(FederationError):
    """A message exceeds the configured size limits."""

    default_code = "REQUEST_TOO_LARGE"
    grpc_status = "RESOURCE_EXHAUSTED"


class AuditError(FederationError):
    """A node's audit log is missing, damaged, rewritten, or does not match a checkpoint or receipt."""

    default_code = "AUDIT_INVALID"
    grpc_status = "DATA_LOSS"


_BY_STATUS: dict[str, type[FederationError]] = {
    cls.grpc_status: cls
    for cls in (
        PlanError,
        PolicyViolation,
        AuthError,
        UnavailableError,
        RequestTooLarge,
        ConfigError,
    )
}


def class_for_status(status: str) -> type[FederationError]:
    """The class a failed call that names no code of its own is rebuilt as, by its gRPC status's name.

    >>> class_for_status("PERMISSION_DENIED").__name__, class_for_status("ABORTED").__name__
    ('PolicyViolation', 'FederationError')
    """
    return _BY_STATUS.get(status, FederationError)


def trailing_metadata(error: FederationError) -> tuple[tuple[str, str | bytes], ...]:
    """What a refusal carries besides its status and message: its stable code, and its hint and rule if any."""
    metadata: list[tuple[str, str | bytes]] = [(CODE_KEY, error.code)]
    if error.hint:
        metadata.append((HINT_KEY, error.hint))
    if error.rule:
        metadata.append((RULE_KEY, error.rule))
    if error.consent_refusal:
        metadata.append((CONSENT_REFUSAL_KEY, error.consent_refusal))
    return tuple(metadata)


def abort(context: grpc.ServicerContext, error: FederationError) -> None:
    """Abort an RPC with the error's status, public message and stable code in trailing metadata."""
    context.set_trailing_metadata(trailing_metadata(error))
    context.abort(error.status, error.message)


_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,63}")
# control characters (terminal escapes), format characters (bidi overrides), unassigned, private and surrogates,
# and line or paragraph separators: none of them belongs in a one-line message from another party
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_REMOTE_TEXT = 500


def is_code(code: str) -> bool:
    """Whether ``code`` has the form of a stable error code (upper-case letters, digits, underscores).

    >>> is_code("NODE_TIMEOUT"), is_code("NODE_TIMEOUT\\x1b[2A"), is_code("")
    (True, False, False)
    """
    return _CODE.fullmatch(code) is not None


def printable(text: str, limit: int = MAX_REMOTE_TEXT) -> str:
    """Text another party sent, made safe to print on one line: every control or format character (a terminal
    escape sequence, a bidi override, a newline) replaced by ``?``, and at most ``limit`` characters.

    >>> printable("region n3 \\x1b[2Adown\\n")
    'region n3 ?[2Adown?'
    """
    cleaned = "".join("?" if unicodedata.category(c) in _UNPRINTABLE else c for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


MAX_QUOTED = 64


def quoted(text: str, limit: int = MAX_QUOTED) -> str:
    """An identifier or word a caller gave, as a message may quote it: a short printable prefix, in quotes
    (a caller can send a megabyte of terminal escapes as a region name; the message says which, briefly).

    >>> quoted("n3"), quoted("\\x1b[2J" + "n" * 100, limit=8)
    ("'n3'", "'?[2Jnnn…'")
    """
    return repr(printable(text, limit))


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def from_rpc_error(err: grpc.RpcError) -> FederationError:
    """Turn a failed call back into a FederationError with the remote's code, message and hint."""
    import grpc  # already loaded: the call that failed was made with it

    status = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    # everything here comes from another party, and may be printed: codes of the stable form only, text without
    # control or format characters
    code = _metadata_value(trailing, CODE_KEY)
    if code is not None and not is_code(code):
        code = "REMOTE_CODE_INVALID"
    hint = _metadata_value(trailing, HINT_KEY)
    hint = None if hint is None else printable(hint)
    rule = _metadata_value(trailing, RULE_KEY)
    rule = None if rule is None else printable(rule)
    details = err.details() if hasattr(err, "details") else None
    details = None if details is None else printable(details)
    cls = class_for_status(status.name if status is not None else "")
    if code is not None:
        from hpf.federation.error_codes import APPLICANT_CODES

        rebuilt = error_for_code(code, details or "remote error", hint, rule)
        refusal = next((v for k, v in trailing or () if k == CONSENT_REFUSAL_KEY), b"")
        if code in APPLICANT_CODES and isinstance(refusal, bytes) and len(refusal) <= MAX_CONSENT_REFUSAL_BYTES:
            rebuilt.consent_refusal = refusal  # read only by the client's check of a region's signature
        if type(rebuilt) is not FederationError:
            return rebuilt
    if code is None:
        if status == grpc.StatusCode.UNAVAILABLE:
            return UnavailableError(
                f"cannot reach the server: {details or 'connection failed'}",
                code="SERVER_UNREACHABLE",
                hint="check the address, that the server runs, and the TLS certificates",
            )
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UnavailableError("the server did not answer in time", code="DEADLINE_EXCEEDED")
        if status == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return too_large(details or "")
        code = f"GRPC_{status.name}" if status is not None else "GRPC_UNKNOWN"
    return cls(details or "remote error", code=code, hint=hint, rule=rule)


_SIZES = re.compile(r"larger than max(?: \((\d+) vs\. (\d+)\))?")


def too_large(details: str) -> FederationError:
    """What gRPC's own refusal of a message above a size limit means (no party can attach a code to it): the
    request above the server's limit, or the answer above this client's (gRPC says ``CLIENT:``).

    >>> too_large("SERVER: Received message larger than max (5000 vs. 4000)").code
    'REQUEST_TOO_LARGE'
    >>> print(too_large("Stream removed (CLIENT: Received message larger than max (5000 vs. 4000))").message)
    the answer (5000 bytes) is larger than this client accepts in one message (4000 bytes)
    """
    sizes = _SIZES.search(details)
    if sizes is None:  # the other RESOURCE_EXHAUSTED: a server out of room for calls, not a size
        return UnavailableError(
            f"the server has no room for this request now: {details or 'resource exhausted'}",
            code="SERVER_RESOURCE_EXHAUSTED",
            hint="try again later",
        )
    size, limit = (f" ({n} bytes)" if n else "" for n in sizes.groups())
    if "CLIENT:" in details and "Sent message" not in details:
        return RequestTooLarge(
            f"the answer{size} is larger than this client accepts in one message{limit}",
            code="ANSWER_TOO_LARGE",
            hint="ask for fewer groups or columns at once, or update this client if the federation's is newer",
        )
    where = "this client sends" if "Sent message" in details else "the server accepts"
    return RequestTooLarge(
        f"the request{size} is larger than {where}{limit}",
        code="REQUEST_TOO_LARGE",
        hint="ask with a shorter question or fewer people at once, or update this client if the federation's is newer",
    )


def error_for_code(code: str, message: str, hint: str | None = None, rule: str | None = None) -> FederationError:
    """Rebuild an error of the class ``code`` is declared with (:mod:`federation.error_codes`), and so its gRPC
    status; a code no declaration names gets the generic class.

    >>> type(error_for_code("PLAN_SYNTAX", "m")).__name__, type(error_for_code("SOMETHING_ELSE", "m")).__name__
    ('PlanError', 'FederationError')
    """
    from hpf.federation.error_codes import class_for  # declared with these classes: imported when first needed

    return class_for(code)(message, code=code, hint=hint, rule=rule)
