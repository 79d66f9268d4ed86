"""A region's check of each looked-up person's consent token, for the roles whose policy takes tokens.

A role's ``lookups`` with ``consent: token`` answers a lookup only when every identifier sealed to this region
comes with a token (sealed with it: :mod:`federation.sealing`) that a ``consent_issuers`` issuer of the catalog
signed for the asker (the grantee: the SHA-256 of the public key of the certificate that signed the question), for
the lookup's purpose and for every fact a lookup answers, unexpired, unrevoked, and whose commitment opens to
that identifier (:class:`federation.consent.ConsentVerifier`).

One refused applicant refuses the request, with the code of the check it failed and its place in the request:
every region checks the same tokens (the signed commitment covers them), so no region answers about a person
another region refuses, and an asker that checks its tokens first (their signatures and terms are public) asks
again without the ones refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from federation import consent, pki
from federation.catalog import Catalog
from federation.consent_revocations import RevocationState, RevocationWatch
from federation.errors import AuthError, ConfigError, FederationError, PolicyViolation, error_for_code
from federation.lru import Lru
from policies.model import LookupPolicy

LOOKUP_FACTS = consent.FACTS  # a lookup's answer holds every fact: a token must grant them all


class ConsentGate:
    """Per-applicant consent checks, with one verifier (and its cache of proven batches) per set of issuers."""

    def __init__(self, revocations: Mapping[str, consent.Revocations] | None = None) -> None:
        self._revocations = dict(revocations or {})
        self._verifiers = Lru[tuple[tuple[str, bytes], ...], consent.ConsentVerifier](16)
        self._grantees = Lru[bytes, bytes](1024)

    def _verifier(self, catalog: Catalog, issuers: Sequence[str]) -> consent.ConsentVerifier:
        keys = catalog.issuer_keys(issuers)
        key = tuple(sorted(keys.items()))
        verifier = self._verifiers.get(key)
        if verifier is None:
            verifier = consent.ConsentVerifier(keys, self._revocations)
            self._verifiers.put(key, verifier)
        return verifier

    def _grantee(self, signer_der: bytes) -> bytes:
        grantee = self._grantees.get(signer_der)
        if grantee is None:
            try:
                grantee = consent.grantee_of(pki.load_certificate(signer_der, der=True))
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
    ) -> None:
        """Nothing when the role takes no tokens or every applicant's token holds; else the refusal of the first
        applicant refused (its place, never its identifier)."""
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
        for place, (pid, token) in enumerate(zip(ids, tokens, strict=True), start=1):
            code = verifier.check(token, pid, grantee=grantee, purpose=purpose, facts=LOOKUP_FACTS)
            if code is not None:
                message, hint = consent.REFUSALS[code]
                raise error_for_code(code, f"applicant {place} of {len(ids)}: {message}", hint, rule)


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
