"""The node's health follows its data files: a file that breaks under the running node makes it unwell.

A thread looks at the files' version every ``interval`` seconds (a stat per file) and has the backend check
them once when they changed (:meth:`DuckDBBackend.check_sources`: types and a read of every value). A question
that fails in the engine has them checked at once too, and that check's result is reported here as soon as it
is known: a file broken between two looks is first seen by a question. While a
file cannot be served, the node's service ``hpf.v1.Node`` reports NOT_SERVING on the standard gRPC health
service (the server itself stays SERVING: it is up) and every question gets ``NODE_UNWELL``, the region reported
missing; once the files are good again it reports SERVING and answers as before.

A node restored from a backup reports NOT_SERVING too until it takes questions again (``serving_from``, one
envelope window after its restore: :func:`node.restore.questions_from_ms`): it refuses every question signed
earlier, so the coordinator names it missing meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from grpc_health.v1 import health, health_pb2

from hpf.federation.errors import DataError

log = logging.getLogger("hpf.node")

SOURCE_CHECK_SECONDS = 1.0


class CheckedSources(Protocol):
    def check_sources(self) -> DataError | None: ...

    def on_checked(self, listener: Callable[[DataError | None], None]) -> None: ...


class SourceWatch:
    def __init__(
        self,
        sources: CheckedSources,
        servicer: health.HealthServicer,
        service: str,
        interval: float,
        serving_from: float = 0.0,
    ) -> None:
        self._sources = sources
        self._serving_from = serving_from  # Unix seconds: before it, NOT_SERVING (a restore's window)
        self._held = time.time() < serving_from
        self._servicer = servicer
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._reporting = threading.Lock()
        self.refusal: DataError | None = None
        sources.on_checked(self._report)
        self.check()
        self._thread = threading.Thread(target=self._watch, name="hpf-node-sources", daemon=True)
        self._thread.start()

    def check(self) -> DataError | None:
        """Check the files now and report the result as the node's health."""
        refusal = self._sources.check_sources()
        self._report(refusal)
        return refusal

    def _report(self, refusal: DataError | None) -> None:
        """The result of a check of the files (by this watch or by a failed question) as the node's health."""
        with self._reporting:
            if (refusal is None) != (self.refusal is None):
                if refusal is None:
                    log.warning("node healthy again: its data files can be served")
                else:
                    log.error("node unwell: its data files cannot be served (%s) until they are restored", refusal.code)
            self.refusal = refusal
            if self._held and time.time() >= self._serving_from:
                self._held = False
                log.warning("node restored from a backup: its envelope window after the restore has passed, it serves")
            serving = refusal is None and not self._held
            status = health_pb2.HealthCheckResponse
            self._servicer.set(self._service, status.SERVING if serving else status.NOT_SERVING)

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch keeps watching; questions check the files themselves
                log.exception("checking the node's data files failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
