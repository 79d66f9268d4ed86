from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QueryRequest(_message.Message):
    __slots__ = ("sql", "public_context", "deadline_ms")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    public_context: bytes
    deadline_ms: int
    def __init__(self, sql: _Optional[str] = ..., public_context: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class RegionStatus(_message.Message):
    __slots__ = ("node_id", "code", "message")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    code: str
    message: str
    def __init__(self, node_id: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("plan_ms", "fanout_ms", "node_scan_ms", "node_encrypt_ms", "node_total_ms", "aggregate_ms")
    PLAN_MS_FIELD_NUMBER: _ClassVar[int]
    FANOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_SCAN_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_ENCRYPT_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_MS_FIELD_NUMBER: _ClassVar[int]
    plan_ms: float
    fanout_ms: float
    node_scan_ms: float
    node_encrypt_ms: float
    node_total_ms: float
    aggregate_ms: float
    def __init__(self, plan_ms: _Optional[float] = ..., fanout_ms: _Optional[float] = ..., node_scan_ms: _Optional[float] = ..., node_encrypt_ms: _Optional[float] = ..., node_total_ms: _Optional[float] = ..., aggregate_ms: _Optional[float] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("query_id", "plan_fingerprint", "ciphertexts", "answered", "missing", "timings")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    plan_fingerprint: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    answered: _containers.RepeatedScalarFieldContainer[str]
    missing: _containers.RepeatedCompositeFieldContainer[RegionStatus]
    timings: StageTimings
    def __init__(self, query_id: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., answered: _Optional[_Iterable[str]] = ..., missing: _Optional[_Iterable[_Union[RegionStatus, _Mapping]]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("query_id", "sql", "public_context", "plan_fingerprint", "context_digest")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    sql: str
    public_context: bytes
    plan_fingerprint: str
    context_digest: str
    def __init__(self, query_id: _Optional[str] = ..., sql: _Optional[str] = ..., public_context: _Optional[bytes] = ..., plan_fingerprint: _Optional[str] = ..., context_digest: _Optional[str] = ...) -> None: ...

class PartialResponse(_message.Message):
    __slots__ = ("node_id", "plan_fingerprint", "ciphertexts", "scan_ms", "encrypt_ms", "total_ms")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    SCAN_MS_FIELD_NUMBER: _ClassVar[int]
    ENCRYPT_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    plan_fingerprint: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    scan_ms: float
    encrypt_ms: float
    total_ms: float
    def __init__(self, node_id: _Optional[str] = ..., plan_fingerprint: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ..., scan_ms: _Optional[float] = ..., encrypt_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("node_id", "catalog_digest", "tables", "version")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CATALOG_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TABLES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    catalog_digest: str
    tables: _containers.RepeatedScalarFieldContainer[str]
    version: str
    def __init__(self, node_id: _Optional[str] = ..., catalog_digest: _Optional[str] = ..., tables: _Optional[_Iterable[str]] = ..., version: _Optional[str] = ...) -> None: ...
