"""Codes of identity: signed questions, certificates, TLS, revocation lists and the federation's CA."""

from __future__ import annotations

from hpf.federation.error_codes.model import Area, Code, Effect, Scope
from hpf.federation.errors import AuthError, ConfigError

_auth = Area("Identity and signatures", AuthError, Scope.REQUEST, Effect.FAILS_QUESTION)
_tls = Area("TLS and certificates", AuthError, Scope.REQUEST, Effect.REGION_MISSING)
_tls_config = Area("TLS and certificates", ConfigError, Scope.LOCAL, Effect.REGION_MISSING)
_revocation = Area("TLS and certificates", AuthError, Scope.LOCAL, Effect.REGION_MISSING)
_pki = Area("Certificate authority (hpf pki)", ConfigError, Scope.LOCAL, Effect.REGION_MISSING)

CODES: tuple[Code, ...] = (
    _auth.code("AUTH_FAILED", "an identity or certificate is missing, invalid, expired or from the wrong CA"),
    _auth.code("AUTH_UNSIGNED", "the question is not signed"),
    _auth.code("AUTH_SIGNATURE_INVALID", "the question's signature does not verify: forged or altered"),
    _auth.code("AUTH_SIGNER_INVALID", "the signing certificate or key cannot be read, or do not belong together"),
    _auth.code("AUTH_SIGNER_MISMATCH", "the question is signed by someone other than the caller"),
    _auth.code("AUTH_NOT_A_PERSON", "only a person's certificate signs questions"),
    _auth.code("AUTH_CERT_INVALID", "the signer's certificate is not a valid certificate"),
    _auth.code("AUTH_CERT_NOT_YET_VALID", "the signer's certificate is not valid yet"),
    _auth.code("AUTH_CERT_EXPIRED", "the signer's certificate has expired"),
    _auth.code("AUTH_CERT_REVOKED", "the certificate has been revoked"),
    _auth.code("AUTH_WRONG_CA", "the signer's certificate was not issued by the federation's CA"),
    _auth.code("AUTH_CRL_INVALID", "the revocation list is not signed by the federation's CA"),
    _auth.code("AUTH_ENVELOPE_MALFORMED", "the signed question cannot be read, is too large or of another version"),
    _auth.code("AUTH_ENVELOPE_OPERATION", "the question was signed for another operation"),
    _auth.code("AUTH_ENVELOPE_FEDERATION", "the question was signed for another federation"),
    _auth.code("AUTH_ENVELOPE_STALE", "the question was signed too long ago, or in the future"),
    _auth.code("AUTH_REPLAY", "the signed question was already received: a replay"),
    _auth.code(
        "AUTH_SIGNED_BEFORE_RESTORE",
        "the question was signed before the region was restored from a backup, or within a window after it",
    ),
    _auth.code("AUTH_CONTEXT_MISMATCH", "the public context sent is not the one the question was signed for"),
    _auth.code(
        "AUTH_NO_IDENTITY", "the profile names no certificate to sign questions with", ConfigError, scope=Scope.LOCAL
    ),
    _tls.code("TLS_PEM_INVALID", "a certificate or key is not valid PEM"),
    _tls.code("TLS_KEY_MISMATCH", "the key does not belong to the certificate"),
    _tls.code("TLS_WRONG_CA", "the certificate is not from the federation's CA, or the CA file is no CA"),
    _tls.code("TLS_WRONG_PURPOSE", "the certificate is of another kind of party than it is used for"),
    _tls.code("TLS_CERT_EXPIRED", "the certificate has expired"),
    _tls.code("TLS_CERT_NOT_YET_VALID", "the certificate is not valid yet"),
    _tls.code(
        "TLS_CERT_OTHER_NODE", "the node's certificate is not a node certificate for this node id", scope=Scope.LOCAL
    ),
    _tls.code("TLS_SERVER_MISNAMED", "the server's certificate carries another server's name"),
    _tls.code("TLS_SERVER_UNNAMED", "the server's certificate lacks the name clients dial"),
    _tls_config.code("TLS_REQUIRED", "no TLS certificates are given, and insecure mode is not asked for"),
    _tls_config.code("TLS_OPTIONS_CONFLICT", "certificates and insecure mode are both given"),
    _tls_config.code("TLS_OPTIONS_INCOMPLETE", "the certificate options are incomplete"),
    _tls_config.code("TLS_FILE_MISSING", "a certificate or key file cannot be found"),
    _tls_config.code("TLS_FILE_UNREADABLE", "a certificate or key file cannot be read"),
    _tls_config.code("TLS_CERT_EXPIRING", "the certificate expires within 30 days (a warning of hpf node doctor)"),
    _tls.code("IDENTITY_INVALID", "a certificate's federation identity is malformed"),
    _tls.code("IDENTITY_MISSING", "a certificate carries no federation identity"),
    _tls.code("IDENTITY_INCONSISTENT", "a certificate's subject disagrees with its federation identity"),
    _revocation.code("REVOCATION_NUMBER_MISSING", "the revocation list carries no number"),
    _revocation.code("REVOCATION_ROLLBACK", "the revocation list is older than the one this party accepted"),
    _revocation.code("REVOCATION_CONFLICT", "another revocation list under the number this party accepted"),
    _revocation.code("REVOCATION_SHRUNK", "the revocation list leaves out certificates an earlier one revoked"),
    _revocation.code("REVOCATION_STATE_INVALID", "this party's record of revocation lists is malformed", ConfigError),
    _revocation.code("CRL_UNREADABLE", "the revocation list file cannot be read", ConfigError),
    _pki.code("PKI_BAD_NAME", "a name given to the CA is not valid"),
    _pki.code("PKI_BAD_FEDERATION", "the federation name is not valid"),
    _pki.code("PKI_BAD_NODE_ID", "the node id is not valid"),
    _pki.code("PKI_BAD_HOST", "a host name is not valid"),
    _pki.code("PKI_BAD_KIND", "the kind of certificate is not one the CA issues"),
    _pki.code("PKI_BAD_ROLE", "a person's certificate needs a known role"),
    _pki.code("PKI_BAD_REGION", "the home region is not a node id"),
    _pki.code("PKI_BAD_VALIDITY", "the validity in days is not positive"),
    _pki.code("PKI_BAD_CERTIFICATE", "the file is not a PEM certificate"),
    _pki.code("PKI_RESERVED_NAME", "the certificate name is reserved for the federation's servers"),
    _pki.code("PKI_CA_EXISTS", "a CA already exists in the folder"),
    _pki.code("PKI_CA_NOT_FOUND", "no CA in the folder"),
    _pki.code("PKI_CA_INCOMPLETE", "the CA's files are incomplete"),
    _pki.code("PKI_CA_NO_FEDERATION", "the CA names no federation, so its servers have no names to check"),
    _pki.code("PKI_CA_RECORD_INVALID", "the CA's record of what it issued and revoked cannot be used"),
    _pki.code("PKI_CRL_INVALID", "the revocation list is not one this CA signed"),
    _pki.code("PKI_WRONG_CA", "the certificate was not issued by this CA"),
    _pki.code("PKI_FEDERATION_MISMATCH", "the CA belongs to another federation"),
    _pki.code("PKI_FEDERATION_REQUIRED", "a new federation CA needs the federation's name"),
)
