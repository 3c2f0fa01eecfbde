"""The Redis broker, one module per interface of ``brokers/base.py``.

- ``broker.py``: :class:`RedisBroker`, which builds the others and runs their tasks;
- ``link.py``: the connection pool and degraded mode (the only place that handles an outage);
- ``cluster.py``: the keys and bus of a cluster, shared with the publish-only client;
- ``scripts.py``: the Lua state scripts (``brokers/lua/``) and their arguments;
- ``mirror.py``: this node's own sockets, served while degraded and written back after;
- ``pubsub.py``, ``subscriptions.py``, ``presence.py``, ``cache.py``, ``claims.py``,
  ``control_bus.py``, ``rates.py``: the interfaces;
- ``listener.py``: the pub/sub connection; ``liveness.py``: heartbeats, reaping, resync.
"""

from tidings.brokers.redis.broker import RedisBroker
from tidings.brokers.redis.cluster import COMMAND_TIMEOUT, FAILURES, ClusterRedis, check_prefix
from tidings.brokers.redis.liveness import RECOVERY_SETTLE

__all__ = [
    "COMMAND_TIMEOUT",
    "FAILURES",
    "RECOVERY_SETTLE",
    "ClusterRedis",
    "RedisBroker",
    "check_prefix",
]
