"""The coordinator's event loop, on a thread of its own: its server, its channels to the regions and its health
probes all run on it, so a question waiting for the regions holds no thread.

Work that takes the processor (parsing SQL, reading the asker's public key, checking the regions' ciphertexts) goes
to the loop's pool of ``workers`` threads (``asyncio.to_thread``), and the loop stays free to take new requests,
answer other methods and see the regions' answers as they come.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """An asyncio loop running on a daemon thread until :meth:`close`; :meth:`run` runs a coroutine on it."""

    def __init__(self, workers: int, name: str = "hpf-coordinator") -> None:
        self.loop = asyncio.new_event_loop()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-worker")
        self.loop.set_default_executor(self._pool)
        self._thread = threading.Thread(target=self._serve, name=f"{name}-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` on the loop from another thread, and wait for its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("EventLoopThread.run called on the loop's own thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def close(self) -> None:
        """Stop the loop and its workers (what still runs on it is cancelled)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
