"""Which regions are known unwell, so a question is admitted without them instead of waiting out its deadline.

A region is unwell when it missed a question's deadline (or could not be reached) and its health checks fail
since: a stalled or dead region, not merely a slow query. Each region is probed with the standard gRPC health
service every node serves, each probe bounded by a short timeout; the first probe that passes makes the region
well again, and the next question is sent to it. A region is named unwell only for what was known when a
question was admitted: a question already waiting on it waits out its own deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("hpf.coordinator")

NODE_HEALTH_SERVICE = "hpf.v1.Node"
PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.5
UNWELL_MESSAGE = "the region cannot answer now: it missed a deadline and fails its health checks"


@dataclass
class _State:
    failing: bool = False  # its last health probe failed
    missed: bool = False  # it missed a question's deadline since its last passing probe


class RegionHealth:
    """The regions' health as the coordinator knows it; :meth:`start` probes them on one background thread."""

    def __init__(
        self,
        channels: Callable[[], Mapping[str, grpc.Channel]],
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._channels = channels
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def unwell(self) -> frozenset[str]:
        """The regions to admit a question without, now."""
        with self._lock:
            return frozenset(n for n, s in self._states.items() if s.failing and s.missed)

    def note_missed(self, node_id: str) -> None:
        """``node_id`` did not answer a question before its deadline, or could not be reached."""
        with self._lock:
            self._states.setdefault(node_id, _State()).missed = True

    def probe_once(self) -> None:
        """Check every region once, all at once; each check is bounded by the probe timeout."""
        calls = {}
        for node_id, channel in self._channels().items():
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=NODE_HEALTH_SERVICE)
            calls[node_id] = stub.Check.future(request, timeout=self._timeout_s)
        for node_id, call in calls.items():
            try:
                serving = call.result().status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                serving = False
            with self._lock:
                state = self._states.setdefault(node_id, _State())
                was_unwell = state.failing and state.missed
                state.failing = not serving
                if serving:
                    state.missed = False
                if was_unwell != (state.failing and state.missed):
                    log.warning("region %s is %s", node_id, "well again" if serving else "unwell")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hpf-region-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s + self._timeout_s + 1.0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.probe_once()
            except Exception:  # a probe must never end the prober (e.g. a channel closed as the catalog moved)
                log.exception("region health probe failed")
            self._stop.wait(max(0.0, self._interval_s - (time.monotonic() - started)))
