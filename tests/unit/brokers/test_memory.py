"""brokers/memory.py: the single-process broker."""

from __future__ import annotations

from tidings.brokers.base import CachedEvent, PresenceJoin
from tidings.brokers.control import ControlMessage, Terminate, UserOffline, UserOnline
from tidings.brokers.memory import MemoryBroker
from tidings.protocol.session import Member

APP = "12345"


async def test_publish_before_start_and_after_close_is_dropped() -> None:
    broker = MemoryBroker()
    await broker.pubsub.publish(APP, "c", b"x", None)  # no error, nowhere to go
    await broker.control.send(APP, Terminate("u1"))
    delivered: list[tuple[str, str, bytes, str | None]] = []
    await broker.start(lambda *args: delivered.append(args), lambda app, msg: None)
    await broker.close()
    await broker.pubsub.publish(APP, "c", b"x", None)
    assert delivered == []


async def test_publish_delivers_synchronously_in_order() -> None:
    broker = MemoryBroker()
    delivered: list[tuple[str, str, bytes, str | None, object]] = []
    await broker.start(lambda *args: delivered.append(args), lambda app, msg: None)
    await broker.pubsub.publish(APP, "c", b"one", None)
    await broker.pubsub.publish(APP, "c", b"two", "1.1")
    assert delivered == [(APP, "c", b"one", None, None), (APP, "c", b"two", "1.1", None)]


async def test_control_sync_and_async_handlers() -> None:
    seen: list[tuple[str, ControlMessage]] = []

    async def async_control(app_id: str, message: ControlMessage) -> None:
        seen.append((app_id, message))

    broker = MemoryBroker()
    await broker.start(lambda *args: None, async_control)
    await broker.control.send(APP, UserOnline("u1"))
    broker2 = MemoryBroker()
    await broker2.start(lambda *args: None, lambda app_id, m: seen.append((app_id, m)))
    await broker2.control.send(APP, UserOffline("u1"))
    assert seen == [(APP, UserOnline("u1")), (APP, UserOffline("u1"))]


async def test_subscription_counts() -> None:
    broker = MemoryBroker()
    assert await broker.subscriptions.subscribe(APP, "c", "1.1") == 1
    assert await broker.subscriptions.subscribe(APP, "c", "1.1") == 1
    assert await broker.subscriptions.subscribe(APP, "c", "2.2") == 2
    assert await broker.subscriptions.subscribe("other-app", "c", "3.3") == 1
    assert await broker.subscriptions.count(APP, "c") == 2
    assert await broker.subscriptions.channels(APP) == {"c": 2}
    assert await broker.subscriptions.unsubscribe(APP, "c", "1.1") == 1
    assert await broker.subscriptions.unsubscribe(APP, "c", "9.9") == 1
    assert await broker.subscriptions.unsubscribe(APP, "c", "2.2") == 0
    assert await broker.subscriptions.unsubscribe(APP, "never", "2.2") == 0
    assert await broker.subscriptions.count(APP, "c") == 0
    assert await broker.subscriptions.channels(APP) == {}
    assert await broker.subscriptions.channels("other-app") == {"c": 1}


async def test_presence_join_leave() -> None:
    broker = MemoryBroker()
    ann, bob = Member("ann", {"n": 1}), Member("bob")
    assert await broker.presence.join(APP, "p", "1.1", ann, 2) == PresenceJoin(True, True, [ann])
    assert await broker.presence.join(APP, "p", "1.2", ann, 2) == PresenceJoin(True, False, [ann])
    assert await broker.presence.join(APP, "p", "2.1", bob, 2) == PresenceJoin(
        True, True, [ann, bob]
    )
    assert await broker.presence.members(APP, "p") == [ann, bob]
    assert await broker.presence.leave(APP, "p", "1.1", "ann") is False
    assert await broker.presence.leave(APP, "p", "1.2", "ann") is True
    assert await broker.presence.leave(APP, "p", "1.2", "ann") is False
    assert await broker.presence.leave(APP, "p", "2.1", "bob") is True
    assert await broker.presence.members(APP, "p") == []
    assert await broker.presence.leave(APP, "p", "2.1", "bob") is False


async def test_presence_full_channel_refuses_new_users_only() -> None:
    broker = MemoryBroker()
    ann, bob = Member("ann"), Member("bob")
    await broker.presence.join(APP, "p", "1.1", ann, 1)
    assert await broker.presence.join(APP, "p", "2.1", bob, 1) == PresenceJoin(False, False, [ann])
    # Another socket of a user already in the channel is accepted.
    assert await broker.presence.join(APP, "p", "1.2", ann, 1) == PresenceJoin(True, False, [ann])


async def test_presence_refused_join_leaves_no_empty_roster() -> None:
    broker = MemoryBroker()
    result = await broker.presence.join(APP, "p", "1.1", Member("ann"), 0)
    assert result == PresenceJoin(False, False, [])
    assert await broker.presence.members(APP, "p") == []
    assert broker.presence._rosters == {}


async def test_users_online_offline() -> None:
    broker = MemoryBroker()
    assert await broker.presence.user_online(APP, "u1", "1.1") is True
    assert await broker.presence.user_online(APP, "u1", "1.2") is False
    assert await broker.presence.users_online(APP, ["u1", "u2"]) == ["u1"]
    assert await broker.presence.users_online("other-app", ["u1"]) == []
    assert await broker.presence.user_offline(APP, "u1", "1.1") is False
    assert await broker.presence.user_offline(APP, "u1", "9.9") is False
    assert await broker.presence.user_offline(APP, "u1", "1.2") is True
    assert await broker.presence.user_offline(APP, "u1", "1.2") is False
    assert await broker.presence.users_online(APP, ["u1"]) == []


async def test_cache_expires() -> None:
    broker = MemoryBroker()
    assert await broker.cache.get(APP, "cache-c", 0.0) is None
    event = CachedEvent(b'{"event":"e"}', expires_at=100.0)
    await broker.cache.set(APP, "cache-c", event, 0.0)
    assert await broker.cache.get(APP, "cache-c", 99.9) == event
    assert await broker.cache.get("other-app", "cache-c", 0.0) is None
    assert await broker.cache.get(APP, "cache-c", 100.0) is None
    assert await broker.cache.get(APP, "cache-c", 0.0) is None  # expired entries are dropped
    newer = CachedEvent(b'{"event":"f"}', expires_at=300.0)
    await broker.cache.set(APP, "cache-c", event, 0.0)
    await broker.cache.set(APP, "cache-c", newer, 200.0)
    assert await broker.cache.get(APP, "cache-c", 200.0) == newer
