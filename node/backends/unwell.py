"""The refusal every question gets while a region's data cannot be served: the region is reported missing."""

from __future__ import annotations

from hpf.federation.errors import DataError, UnavailableError


def unwell(refused: DataError, what: str, why: str, hint: str) -> UnavailableError:
    """``NODE_UNWELL``: the node cannot run queries, because its ``what`` (its files, its database) ``why``.

    >>> print(unwell(DataError("x", code="NODE_TABLE_UNREADABLE"), "files", "cannot be read", "restore them"))
    [NODE_UNWELL] the node cannot run queries: its files cannot be read (NODE_TABLE_UNREADABLE) (hint: restore them)
    """
    return UnavailableError(
        f"the node cannot run queries: its {what} {why} ({refused.code})", code="NODE_UNWELL", hint=hint
    )
