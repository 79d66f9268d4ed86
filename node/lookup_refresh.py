"""The lookup facts computed again on the operator's schedule and on demand (``hpf node refresh``).

A node on files computes its facts again when a file changes (:class:`node.lookup_index.LookupIndex`). A
database tells nobody when its rows change, so a node on PostgreSQL computes them every
``lookup_facts.refresh_s`` seconds, and lookups read the facts of the last computation meanwhile: a lookup may
miss a change younger than that.

The operator asks for a computation now with ``hpf node refresh``, which drops a request file into the node's
state directory (``lookup-facts/request-<nonce>``, readable by the node's owner only); the running node takes it
within half a second (renames it ``taken-<nonce>``), computes the facts, and writes ``result-<nonce>``: how many
people the facts are about and how long it took, or the failure's code. Only who may write the node's state
directory can ask, and a request carries nothing but its nonce.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpf.federation.errors import FederationError, UnavailableError
from hpf.federation.private_files import PRIVATE, read_regular, write_file
from hpf.node.lookup_index import LookupIndex

log = logging.getLogger("hpf.node.lookup")

REFRESH_DIR = "lookup-facts"  # under the node's state directory
POLL_S = 0.5  # how often the node looks for a request
TAKE_WAIT_S = 5.0  # a request no node takes within this (and none computing): no node serves that state directory
COMPUTING = "computing"  # there while the node computes its facts


@dataclass(frozen=True)
class Refreshed:
    """The outcome of one computation of the facts: ``people`` they are about, or the failure's ``code``."""

    ok: bool
    people: int = 0
    ms: float = 0.0
    code: str | None = None


class FactsRefresher:
    """A node's thread that computes its lookup facts again every ``every_s`` seconds (None: only on request) and
    whenever ``hpf node refresh`` asks."""

    def __init__(self, index: LookupIndex, directory: Path, every_s: float | None) -> None:
        self._index, self._directory, self._every = index, directory, every_s
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hpf-node-lookup-facts", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        due = time.monotonic() + (self._every or 0.0)
        while not self._stop.wait(POLL_S):
            asked = self._take_requests()
            scheduled = self._every is not None and time.monotonic() >= due
            if not asked and not scheduled:
                continue
            if scheduled and self._index.supported:
                log.info("computing the lookup facts again, as scheduled every %.0f s", self._every)
            outcome = self.refresh()
            due = time.monotonic() + (self._every or 0.0)
            for nonce in asked:
                self._answer(nonce, outcome)

    def refresh(self) -> Refreshed:
        """Compute the facts now; a failure is logged by its code and leaves the facts in force as they were.
        Meanwhile ``computing`` tells ``hpf node refresh`` that the node is up, its request waiting its turn."""
        began = time.perf_counter()
        computing = self._directory / COMPUTING
        try:
            write_file(computing, b"", PRIVATE)
        except OSError:
            pass  # an asker then waits less patiently: never a reason not to compute
        try:
            people = self._index.refresh(force=True)
        except FederationError as err:
            if self._index.supported:
                log.warning("the lookup facts could not be computed again (%s): the earlier ones stay", err.code)
            return Refreshed(ok=False, code=err.code)
        finally:
            computing.unlink(missing_ok=True)
        return Refreshed(ok=True, people=people, ms=(time.perf_counter() - began) * 1e3)

    def _take_requests(self) -> list[str]:
        """The nonces of the requests waiting, each renamed ``taken-`` so its asker knows it was seen."""
        nonces = []
        for path in self._directory.glob("request-*"):
            nonce = path.name.removeprefix("request-")
            if not _is_nonce(nonce):
                continue
            try:
                path.rename(self._directory / f"taken-{nonce}")
            except OSError:
                continue  # taken by a concurrent look, or removed by its asker
            nonces.append(nonce)
        return nonces

    def _answer(self, nonce: str, outcome: Refreshed) -> None:
        try:
            write_file(self._directory / f"result-{nonce}", json.dumps(outcome.__dict__).encode(), PRIVATE)
            (self._directory / f"taken-{nonce}").unlink(missing_ok=True)
        except OSError as err:
            log.warning("the answer to a lookup facts request could not be written (%s)", type(err).__name__)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _is_nonce(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def ask_refresh(state_dir: Path, wait_s: float, say: Callable[[str], None]) -> Refreshed:
    """Ask the node serving ``state_dir`` to compute its lookup facts now, and wait up to ``wait_s`` seconds for
    the outcome (``NODE_NOT_RUNNING`` when no node takes the request, ``NODE_REFRESH_TIMEOUT`` past the wait)."""
    directory = state_dir / REFRESH_DIR
    if not directory.is_dir():
        raise UnavailableError(
            f"{state_dir} holds no node's lookup facts: no node has served this state directory",
            code="NODE_NOT_RUNNING",
            hint="start the node (hpf node serve) with this configuration, then ask again",
        )
    nonce = secrets.token_hex(16)
    request, taken, result = (directory / f"{kind}-{nonce}" for kind in ("request", "taken", "result"))
    write_file(request, b"", PRIVATE)
    try:
        took = _wait_for(lambda: not request.exists(), min(TAKE_WAIT_S, wait_s))
        if not took and (directory / COMPUTING).exists():
            say("the node is computing its lookup facts; the request waits for its turn")
            took = _wait_for(lambda: not request.exists(), wait_s)
        if not took:
            raise UnavailableError(
                f"no node took the request within {TAKE_WAIT_S:.0f} s: no node is serving {state_dir}",
                code="NODE_NOT_RUNNING",
                hint="start the node (hpf node serve) with this configuration, then ask again",
            )
        say("the node took the request; computing its lookup facts")
        if not _wait_for(result.exists, wait_s):
            raise UnavailableError(
                f"the node did not finish computing its lookup facts within {wait_s:.0f} s",
                code="NODE_REFRESH_TIMEOUT",
                hint="it goes on computing them; see its log, or wait longer with --timeout",
            )
        return _read_result(result)
    finally:
        for path in (request, taken, result):
            path.unlink(missing_ok=True)


def _read_result(path: Path) -> Refreshed:
    """The node's answer, or ``NODE_REFRESH_UNREADABLE`` when it is not one (another writer's file)."""
    try:
        outcome = Refreshed(**json.loads(read_regular(path, 4096)))
        if not isinstance(outcome.ok, bool) or not isinstance(outcome.people, int):
            raise TypeError("not an answer")
        return outcome
    except (OSError, ValueError, TypeError):
        raise UnavailableError(
            "the node's answer to the request could not be read",
            code="NODE_REFRESH_UNREADABLE",
            hint="see the node's log; only the node may write its state directory",
        ) from None


def _wait_for(done: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
    return True


def refresher_for(index: LookupIndex, state_dir: Path, every_s: float | None) -> FactsRefresher:
    """The node's refresher, over ``state_dir``'s request folder (its own, mode 0700)."""
    directory = state_dir / REFRESH_DIR
    refresher = FactsRefresher(index, directory, every_s)
    os.chmod(directory, 0o700)
    return refresher
