"""A region is unwell only when it missed a question's wait and fails its health probes; a passing probe ends it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hpf.coordinator.region_health import NODE_HEALTH_SERVICE, RegionHealth
from hpf.federation.trust.servers import new_aio_server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _probing() -> None:
    server = new_aio_server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as up,
            grpc.aio.insecure_channel(f"127.0.0.1:{_closed_port()}") as gone,
        ):
            regions = RegionHealth(lambda: {"up": up, "gone": gone}, timeout_s=0.5)
            await regions.probe_once()
            assert regions.unwell() == frozenset()  # failing its probes alone: not unwell
            regions.note_missed("gone")
            regions.note_missed("up")
            assert regions.unwell() == {"gone"}  # missed alone: not unwell either
            await regions.probe_once()
            assert regions.unwell() == {"gone"}

            await servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            await regions.probe_once()  # "up" passed its last probe after it missed: that miss is forgotten
            assert regions.unwell() == {"gone"}
            regions.note_missed("up")
            assert regions.unwell() == {"gone", "up"}
            await servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            await regions.probe_once()
            assert regions.unwell() == {"gone"}

            regions = RegionHealth(lambda: {"up": up}, interval_s=0.05, timeout_s=0.5)
            regions.note_missed("up")
            await servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            regions.start()  # the background prober finds it failing, then well again, and stops when asked
            await _until(lambda: regions.unwell() == {"up"})
            await servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            await _until(lambda: regions.unwell() == frozenset())
            await regions.stop()
    finally:
        await server.stop(0)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout_s)


def test_missed_and_failing_is_unwell_until_a_probe_passes() -> None:
    asyncio.run(_probing())
