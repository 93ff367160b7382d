"""The appender for partitioned streams, Redis Cluster, and replica acknowledgements.

Used instead of the plain `Appender` when VIDPULSE_PARTITIONS > 1, when REDIS_URL
names a cluster (`redis+cluster://`), or when VIDPULSE_REPLICA_ACKS > 0. Group commit
is the same (the base class gathers concurrent requests into rounds); a round is split
by partition, and the partitions by the Redis server that holds them (a cluster's
master of their slot), each server getting one pipeline on a connection of the
appender's own, all of them in flight at once:

    per event: XADD {stream}:{pN.K} (or the milestone script on it and its dedupe key)
    then:      XLEN of each partition the round touched (the backlog mark)
    then:      WAIT replicas timeout (VIDPULSE_REPLICA_ACKS > 0)

WAIT on the connection that wrote answers how many replicas hold everything that
connection wrote; fewer than asked and the round's events on that server are not
known safe, so their requests get a 503 (and their clients retry: event ids make a
retry harmless downstream). A server that cannot be reached, or that answers that it
no longer holds a slot (MOVED, CLUSTERDOWN: a failover under way), fails its share of
the round the same way, and the cluster's map is read afresh before the next round:
the ingest recovers by itself once the cluster has.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ingest.appender import _MILESTONE_LUA, Appender, Backpressure, Batch, _pack, exchange
from vidpulse.keys import Keys, partition_of_bytes
from vidpulse.redisclient import cluster_of

log = structlog.get_logger("vidpulse.ingest")


class ReplicasBehind(RedisError):
    """Fewer replicas than VIDPULSE_REPLICA_ACKS confirmed the events in time."""


@dataclass
class _Link:
    """The appender's own connection to one server, and whether it knows the script."""

    conn: AbstractConnection
    release: Any
    loaded: bool = False


@dataclass
class _Plan:
    """What one round sends to one server: commands, and whose result each reply is."""

    packed: list[bytes] = field(default_factory=list)
    owners: list[tuple[int, int]] = field(default_factory=list)  # (batch, event) per XADD
    partitions: list[int] = field(default_factory=list)  # XLEN'd, in order


class PartitionedAppender(Appender):
    """Appends each event to its partition's stream, on whichever server holds it."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        keys: Keys,
        max_backlog: int,
        dedupe_ttl_seconds: int,
        replica_acks: int = 0,
        replica_timeout_ms: int = 1000,
    ) -> None:
        super().__init__(
            redis,
            stream=keys.stream,
            max_backlog=max_backlog,
            dedupe_ttl_seconds=dedupe_ttl_seconds,
        )
        self._keys = keys
        self._names = keys.partition_streams
        self._streams = [s.encode() for s in self._names]
        self._cluster = cluster_of(redis)
        self._links: dict[str, _Link] = {}
        self._lengths: dict[int, int] = {}
        self._replica_acks = replica_acks
        self._replica_timeout_ms = replica_timeout_ms
        self._topology_stale = True
        self._initialized = False

    # -- one round --------------------------------------------------------------------

    async def _call(self, batches: list[Batch]) -> list[list[bool] | Exception]:
        try:
            return await self._round(batches)
        except RedisClusterException as exc:  # no node for a slot, none reachable: a 503
            self._topology_stale = True
            raise RedisConnectionError(f"the Redis Cluster is not usable now: {exc}") from None

    async def _round(self, batches: list[Batch]) -> list[list[bool] | Exception]:
        await self._refresh_topology()
        if len(self._lengths) < len(self._streams) or self._backlog() >= self._max_backlog:
            await self._probe_lengths()
            if self._backlog() >= self._max_backlog:
                raise Backpressure(self._stream)
        plans: dict[str, _Plan] = defaultdict(_Plan)
        servers = [self._server(stream) for stream in self._streams]  # for this round
        ttl = str(self._ttl).encode()
        for b, batch in enumerate(batches):
            fields: tuple[bytes, ...] = (b"received_at", str(batch.received_at_ms).encode())
            if batch.user_agent:
                fields += (b"user_agent", batch.user_agent)
            if batch.referer:
                fields += (b"referer", batch.referer)
            # As in the plain appender: a plain XADD is a head per (batch, stream), the
            # event's JSON, then the batch's fields, so only the JSON is encoded per event.
            tail = b"".join(b"\r\n$%d\r\n%s" % (len(f), f) for f in fields) + b"\r\n"
            heads: dict[int, bytes] = {}
            for e, (dedupe, event_json) in enumerate(batch.events):
                partition = self._partition(event_json)
                stream = self._streams[partition]
                plan = plans[servers[partition]]
                if dedupe:
                    script = (self._sha, b"2", stream, dedupe, ttl, b"event", event_json)
                    plan.packed.append(_pack((b"EVALSHA", *script, *fields)))
                else:
                    head = heads.get(partition)
                    if head is None:
                        head = heads[partition] = (
                            b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$5\r\nevent\r\n"
                            % (5 + len(fields), len(stream), stream)
                        )
                    plan.packed.append(b"%s$%d\r\n%s%s" % (head, len(event_json), event_json, tail))
                plan.owners.append((b, e))
                if partition not in plan.partitions:
                    plan.partitions.append(partition)
        names = list(plans)
        outcomes = await asyncio.gather(
            *(self._send(name, plans[name]) for name in names), return_exceptions=True
        )
        per_event: list[list[int | Exception]] = [[False] * len(b.events) for b in batches]
        for name, outcome in zip(names, outcomes, strict=True):
            plan = plans[name]
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if isinstance(outcome, RedisClusterException):
                    outcome = RedisConnectionError(f"the Redis Cluster is not usable: {outcome}")
                self._topology_stale = self._topology_stale or self._cluster is not None
                log.warning("append_failed", server=name, error=str(outcome))
                for b, e in plan.owners:
                    per_event[b][e] = outcome
                continue
            for (b, e), reply in zip(plan.owners, outcome, strict=True):
                per_event[b][e] = reply
        results: list[list[bool] | Exception] = []
        for replies in per_event:
            error = next((r for r in replies if isinstance(r, Exception)), None)
            results.append(error if error is not None else [bool(r) for r in replies])
        return results

    def _partition(self, event_json: bytes) -> int:
        if len(self._streams) == 1:
            return 0
        # The stream JSON is the model's compact form, and ids hold no quote or escape
        # (vidpulse.events.Ident): the two ids are read straight out of it.
        video = event_json.find(b'"video_id":"')
        viewer = event_json.find(b'"viewer_id":"')
        if video < 0 or viewer < 0:
            event = orjson.loads(event_json)
            return self._keys.partition_of(str(event["video_id"]), str(event["viewer_id"]))
        video += 12
        viewer += 13
        return partition_of_bytes(
            event_json[video : event_json.index(b'"', video)],
            event_json[viewer : event_json.index(b'"', viewer)],
            len(self._streams),
        )

    def _backlog(self) -> int:
        return sum(self._lengths.values())

    async def _probe_lengths(self) -> None:
        """XLEN every partition, each on its server."""
        by_server: dict[str, list[int]] = defaultdict(list)
        for partition, stream in enumerate(self._streams):
            by_server[self._server(stream)].append(partition)
        for name, partitions in by_server.items():
            packed = b"".join(_pack((b"XLEN", self._streams[p])) for p in partitions)
            try:
                replies = await self._roundtrip_on(name, packed, len(partitions))
            except Exception:
                self._topology_stale = self._cluster is not None
                raise
            for partition, reply in zip(partitions, replies, strict=True):
                if isinstance(reply, Exception):
                    self._topology_stale = self._cluster is not None
                    raise reply
                self._lengths[partition] = int(reply)

    async def _send(self, name: str, plan: _Plan) -> list[int | Exception]:
        """One server's share of the round; per XADD, its reply (1/0 or id) or error."""
        link = await self._link(name)
        load = not link.loaded
        head = [_pack(("SCRIPT", "LOAD", _MILESTONE_LUA))] if load else []
        tail = [_pack((b"XLEN", self._streams[p])) for p in plan.partitions]
        if self._replica_acks:
            tail.append(_pack((b"WAIT", str(self._replica_acks), str(self._replica_timeout_ms))))
        count = len(head) + len(plan.owners) + len(tail)
        replies = await self._roundtrip_on(name, b"".join([*head, *plan.packed, *tail]), count)
        if load:
            link.loaded = not isinstance(replies[0], Exception)
        appended = replies[len(head) : len(head) + len(plan.owners)]
        lengths = replies[len(head) + len(plan.owners) :]
        if self._replica_acks:
            acked = lengths.pop()
            if isinstance(acked, Exception) or int(acked) < self._replica_acks:
                raise ReplicasBehind(
                    f"{acked} of {self._replica_acks} replicas confirmed the events in time"
                )
        for partition, length in zip(plan.partitions, lengths, strict=True):
            if isinstance(length, int):
                self._lengths[partition] = length
        out: list[int | Exception] = []
        for reply in appended:
            if isinstance(reply, Exception):
                if "NOSCRIPT" in str(reply):
                    link.loaded = False
                if reply.args and str(reply).split(" ", 1)[0] in ("MOVED", "ASK", "CLUSTERDOWN"):
                    self._topology_stale = True
                out.append(ResponseError(str(reply)))
            else:
                out.append(0 if reply == 0 else 1)
        return out

    # -- servers and connections ---------------------------------------------------------

    def _server(self, stream: bytes) -> str:
        if self._cluster is None:
            return ""
        node = self._cluster.get_node_from_key(stream.decode())
        if node is None:
            raise RedisConnectionError(f"no node of the cluster holds {stream.decode()}")
        return str(node.name)

    async def _refresh_topology(self) -> None:
        if self._cluster is None or not self._topology_stale:
            return
        for name in list(self._links):
            await self._drop(name)
        if self._initialized:
            await self._cluster.nodes_manager.initialize()
        else:
            await self._cluster.initialize()
            self._initialized = True
        self._topology_stale = False

    async def _link(self, name: str) -> _Link:
        link = self._links.get(name)
        if link is not None:
            return link
        if self._cluster is None:
            pool = self._redis.connection_pool
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            link = _Link(conn, pool.release)
        else:
            node = self._cluster.get_node(node_name=name)
            if node is None:
                self._topology_stale = True
                raise RedisConnectionError(f"{name} is no longer a node of the cluster")
            conn = node.acquire_connection()
            link = _Link(conn, node.release)
        self._links[name] = link
        return link

    async def _drop(self, name: str) -> None:
        link = self._links.pop(name, None)
        if link is not None:
            await link.conn.disconnect()
            result = link.release(link.conn)
            if asyncio.iscoroutine(result):
                await result

    async def _roundtrip_on(self, name: str, packed: bytes, count: int) -> list[Any]:
        """Send `packed` to server `name`, read `count` replies (errors in place)."""
        link = await self._link(name)
        conn = link.conn
        try:
            return await exchange(conn, packed, count)
        except BaseException:
            await self._drop(name)  # a reply may still be on its way: done with
            raise

    async def close(self) -> None:
        for name in list(self._links):
            await self._drop(name)
        await super().close()
