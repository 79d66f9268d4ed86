"""A region's check of each looked-up person's consent token, for the roles whose policy takes tokens.

A role's ``lookups`` with ``consent: token`` answers a lookup only when every identifier sealed to this region
comes with a token (sealed with it: :mod:`federation.crypto.sealing`) that a ``consent_issuers`` issuer of the catalog
signed for the asker (the grantee: the SHA-256 of the public key of the certificate that signed the question), for
the lookup's purpose and for every fact the signed lookup asks for (``LookupSpec.facts``), unexpired, unrevoked,
and whose commitment opens to that identifier (:class:`federation.consent.verifier.ConsentVerifier`).

One refused applicant refuses the request, with the code of the check it failed and its place in the request
(never its identifier), and the places and codes of the next ones refused (up to :data:`MAX_NAMED`): every region
checks the same tokens (the signed commitment covers them), and a refused request has no answer from any region
(the coordinator fails the question on a ``CONSENT_`` refusal, never re-runs it without the refusing region), so
no region's answer about a person one region refuses reaches the asker. The refusal carries the same places and
codes signed by this region (:mod:`federation.consent.refusals`), and the asker's client asks again without exactly
the applicants a region signed for (``FederationClient.screen``), as a new signed request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from hpf.federation.catalog import Catalog
from hpf.federation.consent import refusals as consent_refusals
from hpf.federation.consent import tokens as consent
from hpf.federation.consent.revocations import RevocationState, RevocationWatch
from hpf.federation.consent.verifier import ConsentVerifier, Revocations
from hpf.federation.errors import AuthError, ConfigError, FederationError, PolicyViolation, error_for_code
from hpf.federation.lru import Lru
from hpf.federation.trust import certificates
from hpf.policies.model import LookupPolicy, Policy

MAX_NAMED = consent_refusals.MAX_PLACES - 1  # applicants named in one refusal beyond the first


def refusal_text(refused: Sequence[tuple[int, str]], people: int) -> str:
    """The public message refusing a request of ``people`` for the applicants ``refused`` (place from 1, code):
    the first one's place and message, then the others' places by code, closed by ``)`` so that a reader can tell
    a complete list from a cut one.

    >>> refusal_text([(2, "CONSENT_REVOKED"), (5, "CONSENT_REVOKED"), (9, "CONSENT_ISSUER_UNKNOWN")], 10)
    'applicant 2 of 10: the consent has been revoked (also refused: CONSENT_REVOKED 5; CONSENT_ISSUER_UNKNOWN 9)'
    """
    place, code = refused[0]
    text = f"applicant {place} of {people}: {consent.REFUSALS[code][0]}"
    more: dict[str, list[str]] = {}
    for p, c in refused[1 : 1 + MAX_NAMED]:
        more.setdefault(c, []).append(str(p))
    if more:
        text += " (also refused: " + "; ".join(f"{c} {' '.join(places)}" for c, places in more.items()) + ")"
    return text


class ConsentGate:
    """Per-applicant consent checks, with one verifier (and its cache of proven batches) per set of issuers."""

    def __init__(self, revocations: Mapping[str, Revocations] | None = None) -> None:
        self._revocations = dict(revocations or {})
        self._verifiers = Lru[tuple[tuple[str, bytes], ...], ConsentVerifier](16)
        self._grantees = Lru[bytes, bytes](1024)

    def _verifier(self, catalog: Catalog, issuers: Sequence[str]) -> ConsentVerifier:
        keys = catalog.issuer_keys(issuers)
        key = tuple(sorted(keys.items()))
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = ConsentVerifier(keys, self._revocations, lists_required=True)
            self._verifiers.put(key, verifier)
        return verifier

    def _grantee(self, signer_der: bytes) -> bytes:
        grantee = self._grantees.get(signer_der)
        if grantee is None:
            try:
                grantee = consent.grantee_of(certificates.load_certificate(signer_der, der=True))
            except (ValueError, FederationError):  # the envelope's verifier has read it already
                raise AuthError("the signer's certificate cannot be read", code="AUTH_CERT_INVALID") from None
            self._grantees.put(signer_der, grantee)
        return grantee

    def check(
        self,
        catalog: Catalog,
        lookups: LookupPolicy,
        rule: str,
        signer_der: bytes,
        purpose: str,
        ids: Sequence[str],
        tokens: Sequence[consent.Token | None] | None,
        facts: Sequence[str] = consent.FACTS,
        sign_refusal: Callable[[Sequence[tuple[int, str]], int], bytes] | None = None,
        at: float | None = None,
    ) -> None:
        """Nothing when the role takes no tokens or every applicant's token holds; else the refusal of the first
        applicant refused, naming the next ones too (their places, never their identifiers), with the same
        places and codes signed by ``sign_refusal`` (of those places and the number of applicants) for the
        client (:mod:`federation.consent.refusals`). Expiry is judged at ``at`` (the signed request's time;
        default now). An issuer with no revocation list here has none of its consents accepted."""
        if lookups.consent != "token":
            return
        if tokens is None:
            raise PolicyViolation(
                "a person lookup by this role needs each person's consent token",
                code="POLICY_CONSENT_REQUIRED",
                rule=rule,
                hint="give each person's token from the consent service (hpf lookup --consent-token, or a "
                "consent_token column for hpf screen)",
            )
        verifier = self._verifier(catalog, lookups.consent_issuers)
        grantee = self._grantee(signer_der)
        refused: list[tuple[int, str]] = []
        for place, (pid, token) in enumerate(zip(ids, tokens, strict=True), start=1):
            code = verifier.check(token, pid, grantee=grantee, purpose=purpose, facts=facts, at=at)
            if code is not None:
                refused.append((place, code))
                if len(refused) > MAX_NAMED:
                    break
        if refused:
            code = refused[0][1]
            error = error_for_code(code, refusal_text(refused, len(ids)), consent.REFUSALS[code][1], rule)
            if sign_refusal is not None:  # the first and at most MAX_NAMED more, as the text names them
                error.consent_refusal = sign_refusal(refused, len(ids))
            raise error


def consent_gate_for(revocation_lists: Mapping[str, Path], catalog: Catalog, state: Path | None = None) -> ConsentGate:
    """A node's gate, with the revocation list it is given for each issuer (``consent_revocations:`` in its
    config), each re-read when it changes; an issuer the catalog does not publish is a configuration error. With
    ``state`` (a file in the node's state directory) the number of each issuer's list outlives a restart, so an
    older list put back while the node was stopped is refused when it starts."""
    published = {i.id for i in catalog.issuers}
    unknown = sorted(set(revocation_lists) - published)
    if unknown:
        raise ConfigError(
            f"consent_revocations names issuer(s) the catalog does not publish: {', '.join(unknown)}",
            code="CONFIG_INVALID",
            hint="publish the issuer under issuers: in the catalog (hpf consent keys prints the entry)",
        )
    keys = catalog.issuer_keys(revocation_lists)
    remembered = RevocationState(state) if state is not None and revocation_lists else None
    return ConsentGate({i: RevocationWatch(path, i, keys[i], state=remembered) for i, path in revocation_lists.items()})


def unlisted_issuers(policy: Policy, revocation_lists: Mapping[str, Path]) -> list[str]:
    """The consent issuers some role of ``policy`` accepts that no revocation list is given for: a region takes
    none of their consents (a revoked grant must not pass where the list is missing)."""
    accepted = {
        issuer
        for role in policy.roles.values()
        if role.lookups is not None and role.lookups.consent == "token"
        for issuer in role.lookups.consent_issuers
    }
    return sorted(accepted - set(revocation_lists))
