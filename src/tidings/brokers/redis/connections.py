"""Connections per app across the cluster (``{prefix}:{app}:conns``: each node's count
with a deadline), for the app's ``max_connections``.

Every node reports its counts every ``interval`` seconds and reads the others' in the same
script (``lua/connections.lua``); a report holds three intervals, so a dead node's
connections stop counting within that. Between reports a node admits against the others'
last counts: that is the slack (docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources

from tidings.brokers.redis.link import RedisLink

REPORT_LIFETIME = 3  # intervals a report holds without being renewed


class RedisConnectionCounts:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._lua = resources.files("tidings.brokers").joinpath("lua/connections.lua").read_text()

    async def report(self, counts: Mapping[str, int], interval: float) -> dict[str, int]:
        lifetime = str(max(1, int(REPORT_LIFETIME * interval * 1000)))
        node_id, cluster = self._link.node_id, self._link.cluster
        apps = list(counts)

        async def exchange() -> dict[str, int]:
            # One script per app (each app's hash is in its slot), all in one pipeline. EVAL,
            # not EVALSHA: a Redis that restarted or failed over cannot answer NOSCRIPT.
            async with self._link.redis.pipeline(transaction=False) as pipe:
                for app_id in apps:
                    key = cluster.app_key(app_id, "conns")
                    pipe.eval(self._lua, 1, key, node_id, str(counts[app_id]), lifetime)
                others = await pipe.execute()
            return {app_id: int(n) for app_id, n in zip(apps, others, strict=True)}

        # Alone while degraded: the other nodes' connections are not known, none counted.
        return await self._link.call(exchange, lambda: {})
