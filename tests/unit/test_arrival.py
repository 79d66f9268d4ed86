"""A request's arrival is stamped when it reaches the server, not when one of the server's workers takes it up."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc

from coordinator.arrival import ArrivalStamp, arrived_at
from coordinator.fanout import FanOut
from federation.tls import new_server

STAMPS = struct.Struct("!dd")  # when the request arrived, when its handler ran (time.monotonic())


def _same(b: bytes) -> bytes:
    return b


def test_a_queued_request_keeps_the_time_it_arrived() -> None:
    started, release = threading.Event(), threading.Event()

    def block(request: bytes, context: Any) -> bytes:
        started.set()
        release.wait(10)
        return b""

    def stamp(request: bytes, context: Any) -> bytes:
        return STAMPS.pack(arrived_at(), time.monotonic())

    def stamps(request: bytes, context: Any) -> Iterator[bytes]:
        yield STAMPS.pack(arrived_at(), time.monotonic())
        yield STAMPS.pack(arrived_at(), time.monotonic())

    handlers = {
        "Block": grpc.unary_unary_rpc_method_handler(block, _same, _same),
        "Stamp": grpc.unary_unary_rpc_method_handler(stamp, _same, _same),
        "Stamps": grpc.unary_stream_rpc_method_handler(stamps, _same, _same),
    }
    server = new_server(max_workers=1, interceptors=[ArrivalStamp()])  # one worker: a second request queues
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            blocking = channel.unary_unary("/t.T/Block").future(b"", timeout=10)
            assert started.wait(10)
            sent = time.monotonic()
            one = channel.unary_unary("/t.T/Stamp").future(b"", timeout=10)
            streamed = channel.unary_stream("/t.T/Stamps")(b"", timeout=10)
            time.sleep(0.3)  # both reach the server and wait for its one worker
            released = time.monotonic()
            release.set()
            blocking.result()
            arrived, ran = STAMPS.unpack(one.result())
            assert sent <= arrived < released <= ran  # stamped on arrival, run after the worker was free
            for part in streamed:
                arrived, ran = STAMPS.unpack(part)
                assert sent <= arrived < released <= ran
        assert arrived_at() >= released  # outside a stamped call: now
    finally:
        release.set()
        server.stop(0).wait()


def test_the_wait_runs_from_the_arrival_but_gives_every_region_at_least_the_floor() -> None:
    fanout = FanOut(cast(Any, None), {}, deadline_ms=10_000, min_deadline_ms=5_000)
    before = time.monotonic()
    fresh = fanout._deadline(0)
    assert before + 10.0 <= fresh <= time.monotonic() + 10.0
    queued = fanout._deadline(0, since=before - 3.0)  # arrived 3 s ago: 7 s are left of its 10
    assert before + 7.0 <= queued <= time.monotonic() + 7.0
    late = fanout._deadline(0, since=before - 8.0)  # 2 s are left, less than the floor: the floor, from now
    assert before + 5.0 <= late <= time.monotonic() + 5.0
    longer = fanout._deadline(20_000, since=before - 8.0)  # an asker may lengthen the wait, from the arrival
    assert before + 12.0 <= longer <= time.monotonic() + 12.0
