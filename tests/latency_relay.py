"""A TCP relay that delays every byte by a fixed time in each direction: latency where the kernel has no netem.

Run in a host's network namespace, in front of a server on loopback there::

    python tests/latency_relay.py --listen 10.42.0.11:7001 --to 127.0.0.1:7001 --delay-ms 15

Each connection accepted is relayed to ``--to``; each chunk read is written ``--delay-ms`` after it was read, in
order, on each side, so a round trip through the relay takes at least twice the delay. It prints ``ready`` once
listening, and a line per connection opened and closed (no payload: it never looks at the bytes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

CHUNK = 1 << 16


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk written ``delay_s`` after it was read (a queue keeps the order)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while chunk := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + delay_s, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((time.monotonic() + delay_s, b""))  # the end, delayed like the bytes before it

    async def write() -> None:
        while True:
            due, chunk = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not chunk:
                with contextlib.suppress(ConnectionError, OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    reading = asyncio.create_task(read())
    try:
        await write()
    finally:
        reading.cancel()


async def _relay(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, target: tuple[str, int], delay_s: float
) -> None:
    peer = client_writer.get_extra_info("peername")
    try:
        server_reader, server_writer = await asyncio.wait_for(asyncio.open_connection(*target), timeout=5.0)
    except (OSError, TimeoutError):
        print(f"refused {peer}: target unreachable", flush=True)
        client_writer.close()
        return
    print(f"open {peer}", flush=True)
    pipes = [
        asyncio.create_task(_pipe(client_reader, server_writer, delay_s)),
        asyncio.create_task(_pipe(server_reader, client_writer, delay_s)),
    ]
    try:
        # either side ending ends the relay of this connection once its last bytes are through
        await asyncio.wait(pipes, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in pipes:
            task.cancel()
        for writer in (server_writer, client_writer):
            writer.close()
        print(f"closed {peer}", flush=True)


async def main(listen: str, to: str, delay_ms: float) -> None:
    target, delay_s = _split(to), delay_ms / 1000
    host, port = _split(listen)
    server = await asyncio.start_server(lambda r, w: _relay(r, w, target, delay_s), host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to accept connections on")
    parser.add_argument("--to", required=True, help="HOST:PORT to relay them to")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay in each direction")
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.to, args.delay_ms))
    sys.exit(0)
