from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryEnvelope(_message.Message):
    __slots__ = ("version", "operation", "sql", "purpose", "consent_ref", "issued_at_ms", "nonce", "context_digest", "federation", "lookup", "max_runs")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REF_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FEDERATION_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNS_FIELD_NUMBER: _ClassVar[int]
    version: int
    operation: str
    sql: str
    purpose: str
    consent_ref: str
    issued_at_ms: int
    nonce: bytes
    context_digest: str
    federation: str
    lookup: LookupSpec
    max_runs: int
    def __init__(self, version: _Optional[int] = ..., operation: _Optional[str] = ..., sql: _Optional[str] = ..., purpose: _Optional[str] = ..., consent_ref: _Optional[str] = ..., issued_at_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., context_digest: _Optional[str] = ..., federation: _Optional[str] = ..., lookup: _Optional[_Union[LookupSpec, _Mapping]] = ..., max_runs: _Optional[int] = ...) -> None: ...

class LookupSpec(_message.Message):
    __slots__ = ("subjects", "seal_public_key", "regions", "breakdown", "subjects_commitment", "facts")
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    SEAL_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    BREAKDOWN_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    subjects: int
    seal_public_key: bytes
    regions: _containers.RepeatedScalarFieldContainer[str]
    breakdown: bool
    subjects_commitment: bytes
    facts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, subjects: _Optional[int] = ..., seal_public_key: _Optional[bytes] = ..., regions: _Optional[_Iterable[str]] = ..., breakdown: _Optional[bool] = ..., subjects_commitment: _Optional[bytes] = ..., facts: _Optional[_Iterable[str]] = ...) -> None: ...

class SealedSubjects(_message.Message):
    __slots__ = ("node_id", "blob")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    blob: bytes
    def __init__(self, node_id: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class SignedEnvelope(_message.Message):
    __slots__ = ("envelope", "signature", "signer_certificate")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNER_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    envelope: bytes
    signature: bytes
    signer_certificate: bytes
    def __init__(self, envelope: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signer_certificate: _Optional[bytes] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("public_context", "deadline_ms", "envelope", "he_format")
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    HE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    public_context: bytes
    deadline_ms: int
    envelope: SignedEnvelope
    he_format: str
    def __init__(self, public_context: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ..., envelope: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., he_format: _Optional[str] = ...) -> None: ...

class RegionStatus(_message.Message):
    __slots__ = ("node_id", "code", "message", "rule", "hint")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    code: str
    message: str
    rule: str
    hint: str
    def __init__(self, node_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., rule: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("plan_ms", "fanout_ms", "runs")
    PLAN_MS_FIELD_NUMBER: _ClassVar[int]
    FANOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    plan_ms: float
    fanout_ms: float
    runs: int
    def __init__(self, plan_ms: _Optional[float] = ..., fanout_ms: _Optional[float] = ..., runs: _Optional[int] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("query_id", "plan_fingerprint", "answered", "missing", "timings", "receipts", "statements")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    plan_fingerprint: str
    answered: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedCompositeFieldContainer[RegionStatus]
    timings: StageTimings
    receipts: _containers.RepeatedCompositeFieldContainer[AuditReceipt]
    statements: _containers.RepeatedCompositeFieldContainer[AnswerStatement]
    def __init__(self, query_id: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., answered: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[_Union[RegionStatus, _Mapping]]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., receipts: _Optional[_Iterable[_Union[AuditReceipt, _Mapping]]] = ..., statements: _Optional[_Iterable[_Union[AnswerStatement, _Mapping]]] = ...) -> None: ...

class AnswerPart(_message.Message):
    __slots__ = ("head", "ciphertext")
    HEAD_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    head: QueryResponse
    ciphertext: RegionCiphertext
    def __init__(self, head: _Optional[_Union[QueryResponse, _Mapping]] = ..., ciphertext: _Optional[_Union[RegionCiphertext, _Mapping]] = ...) -> None: ...

class RegionCiphertext(_message.Message):
    __slots__ = ("node_id", "chunk", "ciphertext")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    chunk: int
    ciphertext: bytes
    def __init__(self, node_id: _Optional[str] = ..., chunk: _Optional[int] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class AnswerStatement(_message.Message):
    __slots__ = ("node_id", "statement", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    statement: bytes
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., statement: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AuditCheckpoint(_message.Message):
    __slots__ = ("node_id", "size", "root", "time", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    size: int
    root: bytes
    time: str
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., size: _Optional[int] = ..., root: _Optional[bytes] = ..., time: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...

class AuditReceipt(_message.Message):
    __slots__ = ("node_id", "index", "entry", "checkpoint", "inclusion")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    index: int
    entry: bytes
    checkpoint: AuditCheckpoint
    inclusion: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, node_id: _Optional[str] = ..., index: _Optional[int] = ..., entry: _Optional[bytes] = ..., checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ..., inclusion: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AuditProofRequest(_message.Message):
    __slots__ = ("node_id", "index", "old_size")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    index: int
    old_size: int
    def __init__(self, node_id: _Optional[str] = ..., index: _Optional[int] = ..., old_size: _Optional[int] = ...) -> None: ...

class AuditProofResponse(_message.Message):
    __slots__ = ("checkpoint", "inclusion", "consistency", "restores")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    RESTORES_FIELD_NUMBER: _ClassVar[int]
    checkpoint: AuditCheckpoint
    inclusion: _containers.RepeatedScalarFieldContainer[bytes]
    consistency: _containers.RepeatedScalarFieldContainer[bytes]
    restores: _containers.RepeatedCompositeFieldContainer[AuditRestore]
    def __init__(self, checkpoint: _Optional[_Union[AuditCheckpoint, _Mapping]] = ..., inclusion: _Optional[_Iterable[bytes]] = ..., consistency: _Optional[_Iterable[bytes]] = ..., restores: _Optional[_Iterable[_Union[AuditRestore, _Mapping]]] = ...) -> None: ...

class AuditRestore(_message.Message):
    __slots__ = ("index", "entry", "inclusion", "consistency")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    index: int
    entry: bytes
    inclusion: _containers.RepeatedScalarFieldContainer[bytes]
    consistency: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., entry: _Optional[bytes] = ..., inclusion: _Optional[_Iterable[bytes]] = ..., consistency: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("envelope", "deadline_ms")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    envelope: SignedEnvelope
    deadline_ms: int
    def __init__(self, envelope: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class NodeVerdict(_message.Message):
    __slots__ = ("node_id", "accepted", "code", "message", "rule", "hint", "min_group_size", "receipt", "privacy", "min_participants", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    MIN_GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_FIELD_NUMBER: _ClassVar[int]
    MIN_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    accepted: bool
    code: str
    message: str
    rule: str
    hint: str
    min_group_size: int
    receipt: AuditReceipt
    privacy: PrivacyVerdict
    min_participants: int
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., rule: _Optional[str] = ..., hint: _Optional[str] = ..., min_group_size: _Optional[int] = ..., receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., privacy: _Optional[_Union[PrivacyVerdict, _Mapping]] = ..., min_participants: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PrivacyVerdict(_message.Message):
    __slots__ = ("mode", "rule", "epsilon", "delta", "threshold", "noise_sd", "budget_epsilon", "budget_spent", "budget_period", "budget_renews")
    MODE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NOISE_SD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_EPSILON_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SPENT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PERIOD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_RENEWS_FIELD_NUMBER: _ClassVar[int]
    mode: str
    rule: str
    epsilon: float
    delta: float
    threshold: int
    noise_sd: _containers.RepeatedScalarFieldContainer[float]
    budget_epsilon: float
    budget_spent: float
    budget_period: str
    budget_renews: str
    def __init__(self, mode: _Optional[str] = ..., rule: _Optional[str] = ..., epsilon: _Optional[float] = ..., delta: _Optional[float] = ..., threshold: _Optional[int] = ..., noise_sd: _Optional[_Iterable[float]] = ..., budget_epsilon: _Optional[float] = ..., budget_spent: _Optional[float] = ..., budget_period: _Optional[str] = ..., budget_renews: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("query_id", "plan_fingerprint", "verdicts")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    plan_fingerprint: str
    verdicts: _containers.RepeatedCompositeFieldContainer[NodeVerdict]
    def __init__(self, query_id: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[NodeVerdict, _Mapping]]] = ...) -> None: ...

class CatalogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogResponse(_message.Message):
    __slots__ = ("catalog_yaml", "digest")
    CATALOG_YAML_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    catalog_yaml: str
    digest: str
    def __init__(self, catalog_yaml: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class PartialRequest(_message.Message):
    __slots__ = ("query_id", "public_context", "plan_fingerprint", "envelope", "participants", "he_format")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    HE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    public_context: bytes
    plan_fingerprint: str
    envelope: SignedEnvelope
    participants: _containers.RepeatedScalarFieldContainer[str]
    he_format: str
    def __init__(self, query_id: _Optional[str] = ..., public_context: _Optional[bytes] = ..., plan_fingerprint: _Optional[str] = ..., envelope: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., participants: _Optional[_Iterable[str]] = ..., he_format: _Optional[str] = ...) -> None: ...

class PartialResponse(_message.Message):
    __slots__ = ("node_id", "plan_fingerprint", "ciphertexts", "receipt", "statement")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    plan_fingerprint: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    receipt: AuditReceipt
    statement: AnswerStatement
    def __init__(self, node_id: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., receipt: _Optional[_Union[AuditReceipt, _Mapping]] = ..., statement: _Optional[_Union[AnswerStatement, _Mapping]] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("envelope", "public_context", "deadline_ms", "sealed", "he_format", "sealed_consent")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    HE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEALED_CONSENT_FIELD_NUMBER: _ClassVar[int]
    envelope: SignedEnvelope
    public_context: bytes
    deadline_ms: int
    sealed: _containers.RepeatedCompositeFieldContainer[SealedSubjects]
    he_format: str
    sealed_consent: bytes
    def __init__(self, envelope: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., public_context: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ..., sealed: _Optional[_Iterable[_Union[SealedSubjects, _Mapping]]] = ..., he_format: _Optional[str] = ..., sealed_consent: _Optional[bytes] = ...) -> None: ...

class ConsentRefusal(_message.Message):
    __slots__ = ("node_id", "query_id", "people", "places", "codes", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PEOPLE_FIELD_NUMBER: _ClassVar[int]
    PLACES_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    query_id: str
    people: int
    places: _containers.RepeatedScalarFieldContainer[int]
    codes: _containers.RepeatedScalarFieldContainer[str]
    signature: bytes
    def __init__(self, node_id: _Optional[str] = ..., query_id: _Optional[str] = ..., people: _Optional[int] = ..., places: _Optional[_Iterable[int]] = ..., codes: _Optional[_Iterable[str]] = ..., signature: _Optional[bytes] = ...) -> None: ...

class NodeLookupRequest(_message.Message):
    __slots__ = ("query_id", "public_context", "envelope", "sealed", "participants", "he_format", "sealed_consent")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    HE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SEALED_CONSENT_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    public_context: bytes
    envelope: SignedEnvelope
    sealed: bytes
    participants: _containers.RepeatedScalarFieldContainer[str]
    he_format: str
    sealed_consent: bytes
    def __init__(self, query_id: _Optional[str] = ..., public_context: _Optional[bytes] = ..., envelope: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., sealed: _Optional[bytes] = ..., participants: _Optional[_Iterable[str]] = ..., he_format: _Optional[str] = ..., sealed_consent: _Optional[bytes] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("node_id", "catalog_digest", "tables", "version", "audit_public_key", "agreement_public_key")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CATALOG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    catalog_digest: str
    tables: _containers.RepeatedScalarFieldContainer[str]
    version: str
    audit_public_key: bytes
    agreement_public_key: bytes
    def __init__(self, node_id: _Optional[str] = ..., catalog_digest: _Optional[str] = ..., tables: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ..., audit_public_key: _Optional[bytes] = ..., agreement_public_key: _Optional[bytes] = ...) -> None: ...
