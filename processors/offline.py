"""Where a keyed record lands, for the runs that assign partitions themselves (file replay,
its shards, the bench).

`partition_for` is where a Kafka producer keyed by customer id puts a key: murmur2 of
the key, sign bit cleared, modulo the partition count (the Java client's default
partitioner and librdkafka's `murmur2_random` for non-empty keys), so an offline run
keeps one watermark per partition exactly as the worker does. Imports nothing of
ours; never talks to Kafka.
"""

from __future__ import annotations

from typing import Final

_M: Final = 0x5BD1E995
_MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as a signed 32-bit int, like Utils.murmur2 in Java."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    tail = length & ~3
    for i in range(0, tail, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """The partition a Kafka producer puts this key on: positive(murmur2(key)) % partitions."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
