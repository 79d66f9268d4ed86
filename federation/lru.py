"""A small thread-safe least-recently-used map, for what a party keeps about recent clients."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """Holds at most ``capacity`` entries; reading or writing one makes it the most recent.

    >>> seen = Lru[str, int](2)
    >>> seen.put("a", 1); seen.put("b", 2); seen.get("a"); seen.put("c", 3)
    1
    >>> seen.get("b") is None, seen.get("c")
    (True, 3)
    """

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
