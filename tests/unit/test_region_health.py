"""A region is unwell only when it missed a question's wait and fails its health probes; a passing probe ends it."""

from __future__ import annotations

import socket

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordinator.region_health import NODE_HEALTH_SERVICE, RegionHealth
from federation.tls import new_server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_missed_and_failing_is_unwell_until_a_probe_passes() -> None:
    server = new_server(max_workers=2)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            grpc.insecure_channel(f"127.0.0.1:{port}") as up,
            grpc.insecure_channel(f"127.0.0.1:{_closed_port()}") as gone,
        ):
            regions = RegionHealth(lambda: {"up": up, "gone": gone}, timeout_s=0.5)
            regions.probe_once()
            assert regions.unwell() == frozenset()  # failing its probes alone: not unwell
            regions.note_missed("gone")
            regions.note_missed("up")
            assert regions.unwell() == {"gone"}  # missed alone: not unwell either
            regions.probe_once()
            assert regions.unwell() == {"gone"}

            servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
            regions.probe_once()  # "up" passed its last probe after it missed: that miss is forgotten
            assert regions.unwell() == {"gone"}
            regions.note_missed("up")
            assert regions.unwell() == {"gone", "up"}
            servicer.set(NODE_HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            regions.probe_once()
            assert regions.unwell() == {"gone"}

            regions.start()  # the background prober stops when asked
            regions.stop()
    finally:
        server.stop(0).wait()
