"""Parsed and validated queries, kept by the query text, bounded in bytes.

Clients poll the same few queries over and over, so each distinct query text
is parsed and validated once. The bound is on the text (a proxy: the parsed
document of a query takes about 90 times its text in memory), never on the
number of entries, so a few large distinct queries cannot take the memory
hundreds of small ones would; a query above `max_entry_bytes` is never kept.
Worker threads share the cache, so every access holds a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["DocumentCache"]

T = TypeVar("T")


class DocumentCache(Generic[T]):
    """A least-recently-used map from query text to what was prepared from it."""

    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self._entries: OrderedDict[str, T] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """The text of every kept query, in characters."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> T | None:
        with self._lock:
            entry = self._entries.get(query)
            if entry is not None:
                self._entries.move_to_end(query)
            return entry

    def put(self, query: str, entry: T) -> None:
        """Keep `entry` unless the query is above the entry limit; evict the oldest to fit."""
        size = len(query)
        if size > self.max_entry_bytes:
            return
        with self._lock:
            if query in self._entries:
                self._entries.move_to_end(query)
                return
            while self._entries and self._bytes + size > self.max_bytes:
                evicted, _ = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
            self._entries[query] = entry
            self._bytes += size
