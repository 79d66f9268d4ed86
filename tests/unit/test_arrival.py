"""A request's arrival is stamped when it reaches the server, not when one of the server's workers takes it up."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from coordinator.arrival import ArrivalStamp, arrived_at
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
