"""Which regions are known unwell, so a question is admitted without them instead of waiting out its deadline.

A region is unwell when it missed a question's deadline (or could not be reached), or answered that its own
files cannot be served, and its health checks fail since: a stalled, dead or broken region, not merely a slow
query. Each region is probed with the standard gRPC health
service every node serves, each probe bounded by a short timeout; the first probe that passes makes the region
well again, and the next question is sent to it. A region is named unwell only for what was known when a
question was admitted: a question already waiting on it waits out its own deadline.

The probes run as a task on the coordinator's event loop, over the channels its questions use.
"""

from __future__ import annotations

import asyncio
import contextlib
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
UNWELL_MESSAGE = "the region cannot answer now: it missed a deadline or said it is unwell, and fails its health checks"


@dataclass
class _State:
    failing: bool = False  # its last health probe failed
    missed: bool = False  # it missed a question's deadline since its last passing probe


class RegionHealth:
    """The regions' health as the coordinator knows it; :meth:`start` probes them from a task on the event loop."""

    def __init__(
        self,
        channels: Callable[[], Mapping[str, grpc.aio.Channel]],
        interval_s: float = PROBE_INTERVAL_S,
        timeout_s: float = PROBE_TIMEOUT_S,
    ) -> None:
        self._channels = channels
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None

    def unwell(self) -> frozenset[str]:
        """The regions to admit a question without, now."""
        with self._lock:
            return frozenset(n for n, s in self._states.items() if s.failing and s.missed)

    def note_missed(self, node_id: str) -> None:
        """``node_id`` did not answer a question before its deadline, or could not be reached."""
        with self._lock:
            self._states.setdefault(node_id, _State()).missed = True

    async def probe_once(self) -> None:
        """Check every region once, all at once; each check is bounded by the probe timeout."""
        regions = self._channels()
        results = await asyncio.gather(*(self._serving(channel) for channel in regions.values()))
        for node_id, serving in zip(regions, results, strict=True):
            with self._lock:
                state = self._states.setdefault(node_id, _State())
                was_unwell = state.failing and state.missed
                state.failing = not serving
                if serving:
                    state.missed = False
                if was_unwell != (state.failing and state.missed):
                    log.warning("region %s is %s", node_id, "well again" if serving else "unwell")

    async def _serving(self, channel: grpc.aio.Channel) -> bool:
        request = health_pb2.HealthCheckRequest(service=NODE_HEALTH_SERVICE)
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=self._timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def start(self) -> None:
        """Probe every ``interval_s`` from now on; called on the event loop."""
        self._task = asyncio.get_running_loop().create_task(self._probing(), name="hpf-region-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probing(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:  # a probe must never end the prober (e.g. a channel closed as the catalog moved)
                log.exception("region health probe failed")
            await asyncio.sleep(max(0.0, self._interval_s - (time.monotonic() - started)))
