from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GrantRequest(_message.Message):
    __slots__ = ("person_ids", "grantee", "purpose", "facts", "days")
    PERSON_IDS_FIELD_NUMBER: _ClassVar[int]
    GRANTEE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    person_ids: _containers.RepeatedScalarFieldContainer[str]
    grantee: bytes
    purpose: str
    facts: _containers.RepeatedScalarFieldContainer[str]
    days: int
    def __init__(self, person_ids: _Optional[_Iterable[str]] = ..., grantee: _Optional[bytes] = ..., purpose: _Optional[str] = ..., facts: _Optional[_Iterable[str]] = ..., days: _Optional[int] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("issuer", "tokens", "grant_ids", "not_after")
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    GRANT_IDS_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    issuer: str
    tokens: _containers.RepeatedScalarFieldContainer[str]
    grant_ids: _containers.RepeatedScalarFieldContainer[bytes]
    not_after: int
    def __init__(self, issuer: _Optional[str] = ..., tokens: _Optional[_Iterable[str]] = ..., grant_ids: _Optional[_Iterable[bytes]] = ..., not_after: _Optional[int] = ...) -> None: ...
