"""Many connections dropping at once leave no ghost behind (issue #11, "mass disconnect").

A child process (``presence_crowd.py``) holds CROWD connections to a real ``tidings serve``,
each signed in as its own user, a member of one presence channel and a subscriber of one
public channel; an observer connection in this process joins both channels after them and
watches every crowd user. Then the child is SIGKILLed: every crowd socket closes in the same
instant, so the server detaches each one while the others' transports are already closed (and
a member event for one reaches the other crowd sockets before the observer's).

Every one of them must be forgotten: REST rosters and counts, ``/metrics`` gauges, one
``member_removed`` per user to the observer, watchlist ``offline`` events, held webhooks,
and ``channel_vacated`` once the observer leaves too. Runs on the memory and Redis brokers.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pusher_helpers import (
    APP_ID,
    TIMEOUT,
    PusherSocket,
    SocketOpener,
    eventually,
    rest_request,
    scrape,
    unique,
    value,
)
from webhook_helpers import (
    Event,
    Receiver,
    TidingsProcess,
    app_config,
    receiver_fixture,  # noqa: F401  (fixture "receiver")
    webhook_config,
)

CROWD = 30
CROWD_SCRIPT = Path(__file__).resolve().parent / "presence_crowd.py"
OBSERVER = "observer"


def crowd_user(i: int) -> str:
    return f"crowd-{i}"  # as presence_crowd.user_id names them


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver) -> Iterator[Any]:
    """A ``tidings serve`` process on either broker, posting webhooks to ``receiver``."""
    settings: dict[str, Any] = {}
    if request.param == "redis":
        settings["redis"] = request.getfixturevalue("redis_server").url
        settings["redis_prefix"] = request.getfixturevalue("redis_prefix")
    hooks = {"url": receiver.url(), "event_types": ["channel_vacated", "member_removed"]}
    config = webhook_config(tmp_path, [app_config(hooks, subscription_count=True)], **settings)
    srv = TidingsProcess(config, tmp_path / "server.log")
    srv.start()
    yield srv
    srv.stop()
    print(f"--- server log ---\n{srv.logs()[-8000:]}")  # shown when the test failed


@pytest.fixture
def crowd(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started crowd processes, killed after the test whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


async def start_crowd(
    crowd: list[subprocess.Popen[bytes]], ws_url: str, presence: str, public: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(CROWD_SCRIPT), ws_url, presence, public, str(CROWD)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    crowd.append(proc)
    assert proc.stdout is not None
    async with asyncio.timeout(8 * TIMEOUT):
        line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == b"ready", line
    return proc


async def watchlist_events(observer: PusherSocket) -> list[dict[str, Any]]:
    """The next ``pusher_internal:watchlist_events``: its events."""
    message = await observer.expect("pusher_internal:watchlist_events")
    events: list[dict[str, Any]] = json.loads(message["data"])["events"]
    return events


async def departures(observer: PusherSocket, channel: str) -> set[str]:
    """Read until the observer has one ``pusher_internal:member_removed`` per crowd user
    and a watchlist ``offline`` for each; the user ids of the member events."""
    members: list[str] = []
    watched: list[str] = []
    while len(members) < CROWD or len(watched) < CROWD:
        try:
            message = await observer.recv()
        except TimeoutError:
            raise AssertionError(
                f"the observer got {len(members)} member_removed and {len(watched)} offline"
                f" of {CROWD}: {sorted(members)}"
            ) from None
        data = json.loads(message["data"])
        if message["event"] == "pusher_internal:member_removed":
            assert message["channel"] == channel, message
            members.append(data["user_id"])
        elif message["event"] == "pusher_internal:watchlist_events":
            for event in data["events"]:
                assert event["name"] == "offline", message
                watched.extend(event["user_ids"])
        else:
            raise AssertionError(f"unexpected {message}")
    assert sorted(members) == sorted(set(members)), "a member event came twice"
    assert sorted(watched) == sorted(members), (watched, members)
    return set(members)


def users(srv: TidingsProcess, channel: str) -> list[str]:
    resp = rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels/{channel}/users")
    assert resp.status == 200, resp
    return sorted(u["id"] for u in resp.json()["users"])


def channels(srv: TidingsProcess) -> dict[str, Any]:
    resp = rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels")
    assert resp.status == 200, resp
    found: dict[str, Any] = resp.json()["channels"]
    return found


def channel_info(srv: TidingsProcess, channel: str) -> dict[str, Any]:
    params = {"info": "subscription_count"}
    resp = rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels/{channel}", params=params)
    assert resp.status == 200, resp
    info: dict[str, Any] = resp.json()
    return info


def presence_user_count(srv: TidingsProcess, channel: str) -> int:
    params = {"filter_by_prefix": "presence-", "info": "user_count"}
    resp = rest_request(srv.http_url, "GET", f"/apps/{APP_ID}/channels", params=params)
    assert resp.status == 200, resp
    entry = resp.json()["channels"].get(channel)
    return int(entry["user_count"]) if entry else 0


def gauges(srv: TidingsProcess) -> tuple[float, float]:
    """``tidings_connections`` and ``tidings_subscriptions`` of the test app."""
    _, found = scrape(srv.http_url)
    return (
        value(found, "tidings_connections", app=APP_ID),
        value(found, "tidings_subscriptions", app=APP_ID),
    )


async def test_a_killed_crowd_leaves_no_ghosts(
    server: TidingsProcess,
    receiver: Receiver,
    open_socket: SocketOpener,
    crowd: list[subprocess.Popen[bytes]],
) -> None:
    presence, public = unique("presence-crowd"), unique("crowd")
    everyone = {crowd_user(i) for i in range(CROWD)}
    child = await start_crowd(crowd, server.ws_url, presence, public)
    observer = await open_socket(server.ws_url)
    await observer.signin({"id": OBSERVER, "watchlist": sorted(everyone)})
    [online] = await watchlist_events(observer)
    assert online["name"] == "online" and set(online["user_ids"]) == everyone, online
    roster = await observer.subscribe_presence(presence, OBSERVER)
    assert set(roster["ids"]) == everyone | {OBSERVER}, roster
    await observer.subscribe(public)
    assert users(server, presence) == sorted(everyone | {OBSERVER})
    assert channel_info(server, public)["subscription_count"] == CROWD + 1
    assert gauges(server) == (CROWD + 1, 2 * (CROWD + 1))

    child.kill()  # SIGKILL: the kernel closes all of its sockets at once
    child.wait(timeout=TIMEOUT)

    # Every crowd member is announced gone, once, with its watchlist "offline".
    assert await departures(observer, presence) == everyone
    assert users(server, presence) == [OBSERVER]
    assert presence_user_count(server, presence) == 1

    async def only_the_observer_left() -> bool:
        counted = channel_info(server, public).get("subscription_count")
        return counted == 1 and gauges(server) == (1, 2)

    await eventually(only_the_observer_left, timeout=4 * TIMEOUT)
    await observer.ping()  # and the observer was never disturbed

    # Held member_removed webhooks are all sent; once the observer leaves, both channels
    # are vacated: gone from REST and announced by webhook.
    await observer.close()

    def all_gone(events: list[Event]) -> bool:
        removed = {e["user_id"] for e in events if e["name"] == "member_removed"}
        vacated = {e["channel"] for e in events if e["name"] == "channel_vacated"}
        return removed >= everyone | {OBSERVER} and vacated >= {presence, public}

    events = await receiver.await_until("member_removed and channel_vacated", all_gone)
    removed = [e["user_id"] for e in events if e["name"] == "member_removed"]
    assert len(removed) == CROWD + 1, removed  # each user once
    assert users(server, presence) == []
    assert presence not in channels(server) and public not in channels(server)
    info = channel_info(server, public)
    assert info["occupied"] is False and not info.get("subscription_count"), info

    async def nobody_left() -> bool:
        return gauges(server) == (0, 0)

    await eventually(nobody_left)
    # Writes to the vanished sockets were skipped, not failed (uvloop raised on them before).
    errors = [line for line in server.logs().splitlines() if '"level":"error"' in line]
    assert errors == [], errors
