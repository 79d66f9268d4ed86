"""Every DuckDB connection any party opens: locked down, with limits of its own.

Extensions are neither installed nor loaded automatically (an unknown function name must never reach the
network); external access is off, except, for a node, reading its own data files; and the configuration is
locked, so no statement can undo any of it. Each connection has a memory limit and a thread count of its own.

A statement runs under a time limit of its own too (:func:`interrupting`): a timer interrupts the cursor running
it, and so may whoever abandons the work (a cancelled gRPC call). What an engine's error may say to another party
or to the asker is :func:`public_engine_message` (its values masked) or :func:`runtime_failure` (its kind only).

>>> con = locked_connection(memory_limit="64MB")
>>> con.execute("SELECT 1 + 1").fetchone()
(2,)
>>> try:
...     con.execute("SET enable_external_access = true")
... except Exception as err:
...     print(type(err).__name__)
InvalidInputException
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

DEFAULT_MEMORY = "512MB"
Abandon = Callable[[Callable[[], None]], None]  # registers what to call when the work is abandoned


def locked_connection(
    *,
    readable: Collection[str | Path] = (),
    memory_limit: str = DEFAULT_MEMORY,
    threads: int | None = 1,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that reads only the files under ``readable`` (directories or files) and nothing else."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": memory_limit,
    }
    if threads:
        config["threads"] = int(threads)
    con = duckdb.connect(":memory:", config=config)
    dirs, files = [], []
    for item in readable:
        path = Path(item).resolve()
        if path.is_dir():
            dirs.append(str(path) + "/")
        else:
            files.append(str(path))
    if dirs:
        con.execute("SET allowed_directories = ?", [dirs])
    if files:
        con.execute("SET allowed_paths = ?", [files])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@contextmanager
def interrupting(
    cursor: duckdb.DuckDBPyConnection, seconds: float | None, on_abandon: Abandon | None = None
) -> Iterator[Callable[[], bool]]:
    """Run a statement on ``cursor`` that is interrupted after ``seconds`` (and when ``on_abandon`` calls back).

    Yields a function that says whether the timer fired, so the caller can tell its own limit from another
    failure.
    """
    fired = threading.Event()
    active = threading.Event()
    active.set()

    def interrupt() -> None:
        if active.is_set():
            fired.set()
            with suppress(duckdb.Error):
                cursor.interrupt()

    def abandoned() -> None:
        if active.is_set():
            with suppress(duckdb.Error):
                cursor.interrupt()

    timer = threading.Timer(seconds, interrupt) if seconds else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    if on_abandon is not None:
        on_abandon(abandoned)
    try:
        yield fired.is_set
    finally:
        active.clear()
        if timer is not None:
            timer.cancel()


_DIGITS = re.compile(r"\d[\d.,:_-]*")


def public_engine_message(err: Exception) -> str:
    """The first line of a DuckDB error with every quoted part and every number masked: the user's values never
    travel back. Quotes inside a value need not pair up (``'O'Brien'``), and a value may run past the first line,
    so everything from the first quote to the last one on the line (or to its end) is masked.

    >>> public_engine_message(Exception("Conversion Error: Could not convert string 'O'Brien Jane' to INT64"))
    "Could not convert string '…' to INT…"
    >>> public_engine_message(Exception("Conversion Error: Could not convert string 'ab\\nSECRET' to BOOL"))
    "Could not convert string '…"
    """
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.replace("\\n", "\n").splitlines()[0] if text else text
    text = re.sub(r"^[A-Za-z ]*Error: ", "", text)
    quotes = [i for i, ch in enumerate(text) if ch in "'\""]
    if len(quotes) >= 2:
        text = text[: quotes[0] + 1] + "…" + text[quotes[-1] :]
    elif quotes:
        text = text[: quotes[0] + 1] + "…"
    return _DIGITS.sub("…", text)[:300]


def runtime_failure(err: Exception) -> str:
    """What kind of failure a query hit on real rows, from the exception type alone.

    Engine messages about real rows can quote the rows' values, so none of their text is kept.
    """
    kinds = (
        (duckdb.ConversionException, "a value could not be converted to the type the query needs"),
        (duckdb.OutOfRangeException, "a value or an intermediate result is out of range (overflow)"),
        (duckdb.InvalidInputException, "a function received invalid input"),
        (duckdb.IOException, "the engine could not read or write a file"),
        (duckdb.OutOfMemoryException, "the node ran out of memory"),
    )
    for cls, text in kinds:
        if isinstance(err, cls):
            return text
    return f"the engine raised {type(err).__name__}"
