"""What every backend refuses alike: a catalog table the node config gives no source, and, while a region's data
cannot be served, every question (the region is reported missing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from hpf.federation.errors import DataError, UnavailableError


def unwell(refused: DataError, what: str, why: str, hint: str) -> UnavailableError:
    """``NODE_UNWELL``: the node cannot run queries, because its ``what`` (its files, its database) ``why``.

    >>> print(unwell(DataError("x", code="NODE_TABLE_UNREADABLE"), "files", "cannot be read", "restore them"))
    [NODE_UNWELL] the node cannot run queries: its files cannot be read (NODE_TABLE_UNREADABLE) (hint: restore them)
    """
    return UnavailableError(
        f"the node cannot run queries: its {what} {why} ({refused.code})", code="NODE_UNWELL", hint=hint
    )


def require_sources(tables: Iterable[str], sources: Mapping[str, object], form: Callable[[str], str]) -> None:
    """``NODE_TABLE_MISSING`` for the first catalog table of ``tables`` that ``sources`` does not name; ``form``
    writes the config entry its hint shows.

    >>> try:
    ...     require_sources(["t"], {}, lambda name: f"{name}: path/to/{name}.parquet")
    ... except DataError as err:
    ...     print(err.code, err.hint)
    NODE_TABLE_MISSING add 'tables: {t: path/to/t.parquet}' to the node config
    """
    for name in tables:
        if name not in sources:
            raise DataError(
                f"table {name!r} of the catalog has no source in the node configuration",
                code="NODE_TABLE_MISSING",
                hint=f"add 'tables: {{{form(name)}}}' to the node config",
            )
