"""Codes of a region's policy refusing a question, and of consent: the tokens a lookup carries and their issuers."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import ConfigError, FederationError, PlanError, PolicyViolation

_policy = Area("Policy refusals", PolicyViolation, Scope.QUESTION, Effect.FAILS_QUESTION)
_consent = Area("Consent", PolicyViolation, Scope.APPLICANT, Effect.FAILS_QUESTION)
_issuer = Area("Consent", ConfigError, Scope.LOCAL, Effect.FAILS_QUESTION)

CODES: tuple[Code, ...] = (
    _policy.code("POLICY_DENIED", "a region's policy refuses the request"),
    _policy.code("POLICY_ROLE_DENIED", "the asker's role may not query this region"),
    _policy.code("POLICY_ASKER_REGION", "the region admits askers from other home regions only"),
    _policy.code("POLICY_TABLE_DENIED", "the asker's role may not query this table here"),
    _policy.code("POLICY_PURPOSE_REQUIRED", "the question must state its purpose"),
    _policy.code("POLICY_PURPOSE_NOT_ALLOWED", "the stated purpose does not allow this question"),
    _policy.code("POLICY_PURPOSE_UNKNOWN", "the stated purpose is not one the region recognises"),
    _policy.code("POLICY_AGGREGATE_DENIED", "the aggregate is not allowed for the asker's role"),
    _policy.code("POLICY_AGGREGATE_PRODUCT", "the aggregate's argument is a product the minimum group size refuses"),
    _policy.code("POLICY_AGGREGATE_SHAPE", "the aggregate's argument computes a condition as a value"),
    _policy.code("POLICY_COLUMN_DENIED", "the policy does not allow this use of the column"),
    _policy.code(
        "POLICY_COLUMN_UNCLASSIFIED", "the column has no class in the region's catalog, so no policy allows it"
    ),
    _policy.code("POLICY_LOOKUP_DENIED", "the asker's role may not look people up at this region"),
    _policy.code("POLICY_LOOKUP_TOO_MANY", "the lookup names more people than the region answers at once"),
    _policy.code("POLICY_FACTS_NOT_ALLOWED", "the lookup asks for facts the asker's role may not have"),
    _policy.code("POLICY_CONSENT_REQUIRED", "the question needs each person's consent token"),
    _policy.code("POLICY_RATE_LIMITED", "the asker reached the rate limit of requests in a time window"),
    _policy.code("POLICY_PRIVACY_BUDGET", "the asker's privacy budget at the region is spent"),
    _policy.code(
        "POLICY_BREAKDOWN_DENIED",
        "the region shows no figures of its own for this purpose, only federation-wide totals",
        effect=Effect.NEEDS_THE_MISSING,
    ),
    _policy.code(
        "POLICY_TOO_FEW_PARTICIPANTS",
        "the run has fewer regions than this region adds its answer to",
        effect=Effect.NEEDS_THE_MISSING,
    ),
    _policy.code(
        "POLICY_EXACT_NEEDS_ALL_REGIONS",
        "an exact answer is summed over every region, and the run leaves some out",
        effect=Effect.NEEDS_THE_MISSING,
    ),
    _policy.code("POLICY_FILE_INVALID", "the region's policy file is wrong", ConfigError, scope=Scope.LOCAL),
    _policy.code(
        "PARTY_NOT_ALLOWED",
        "the server answers another kind of party",
        scope=Scope.REQUEST,
        effect=Effect.REGION_MISSING,
    ),
    # a region's consent refusals (federation.consent.tokens.REFUSALS), which it signs per applicant
    _consent.code("CONSENT_MALFORMED", "the consent token cannot be read"),
    _consent.code("CONSENT_ISSUER_UNKNOWN", "the consent token's issuer is not one the region accepts"),
    _consent.code("CONSENT_SIGNATURE_INVALID", "the consent token is not signed by its issuer"),
    _consent.code("CONSENT_GRANTEE_MISMATCH", "the consent was granted to another party than the asker"),
    _consent.code("CONSENT_PURPOSE_MISMATCH", "the consent was granted for another purpose"),
    _consent.code("CONSENT_FACTS_NOT_GRANTED", "the consent does not cover every fact asked for"),
    _consent.code("CONSENT_EXPIRED", "the consent has expired"),
    _consent.code("CONSENT_REVOKED", "the consent has been revoked"),
    _consent.code("CONSENT_PERSON_MISMATCH", "the consent is not the consent of this person"),
    _consent.code(
        "CONSENT_REVOCATIONS_INVALID",
        "the region cannot read the issuer's revocation list, and accepts none of its consents",
        ConfigError,
    ),
    # the consent service, an issuer's own files and the client's own checks
    _issuer.code("CONSENT_REVOCATIONS_STATE_INVALID", "the region's record of revocation lists cannot be read"),
    _issuer.code("CONSENT_REVOCATIONS_ROLLBACK", "the revocation list is older than the one the region holds"),
    _issuer.code("CONSENT_REVOCATIONS_CONFLICT", "another revocation list under the number the region holds"),
    _issuer.code("CONSENT_REVOCATIONS_SHRUNK", "the revocation list leaves out consents an earlier one revoked"),
    _issuer.code("CONSENT_KEY_INVALID", "the issuer's key files are missing or do not match"),
    _issuer.code("CONSENT_KEY_CONFLICT", "the key folder holds another issuer"),
    _issuer.code("CONSENT_GRANTEE_INVALID", "the grantee is neither a certificate file nor a certificate digest"),
    _issuer.code("CONSENT_INPUT_INVALID", "the file of people to grant consent for cannot be read"),
    _issuer.code("CONSENT_TERMS_INVALID", "the terms of a grant are out of range", PlanError, scope=Scope.REQUEST),
    _issuer.code(
        "CONSENT_TOKENS_MISMATCH", "a lookup gives another number of tokens than people", PlanError, scope=Scope.REQUEST
    ),
    _issuer.code(
        "CONSENT_SERVICE_FAILED", "the consent service failed unexpectedly", FederationError, scope=Scope.REGION
    ),
)
