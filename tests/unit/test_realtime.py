"""``Realtime``'s bridge between callers and the loop its backend runs on.

A recording :class:`tidings.backends.Backend` stands for a publish-only client (its loop is
the Realtime's private thread); an embedded Realtime stands for itself (its loop is the
test's). What is checked: sync calls from many threads, awaits from another loop and from
the home loop (no hop), the refusals (a sync call on the home loop, an embedded Realtime
not started), the fork of a process that already used its client, data encoding and
argument checks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from tidings import Event, PublishError, Realtime
from tidings.config import ConfigError

TIMEOUT = 5.0 * float(os.environ.get("TIDINGS_TEST_TIMEOUT_SCALE", "1"))


class Recorder:
    """A Backend that records each call with the loop, thread and task it ran on."""

    def __init__(self, fail_starts: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.loops: set[asyncio.AbstractEventLoop] = set()
        self.threads: set[int] = set()
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.starts = 0
        self.closes = 0
        self.fail_starts = fail_starts
        self.hang = asyncio.Event()  # never set: trigger(Event(name="hang")) never answers

    def _record(self, name: str, argument: Any) -> None:
        self.calls.append((name, argument))
        self.loops.add(asyncio.get_running_loop())
        self.threads.add(threading.get_ident())
        self.tasks.append(asyncio.current_task())

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_starts:
            raise ConnectionError("cluster unreachable")

    async def close(self) -> None:
        self.closes += 1

    async def trigger(self, event: Event) -> dict[str, Any]:
        self._record("trigger", event)
        if event.name == "hang":
            await self.hang.wait()
        if event.name == "refuse":
            raise PublishError(429, "too many")
        return {"channels": {c: {} for c in event.channels}} if event.info else {}

    async def trigger_batch(self, events: Sequence[Event]) -> dict[str, Any]:
        self._record("trigger_batch", list(events))
        return {}

    async def send_to_user(self, user_id: str, name: str, data: str) -> None:
        self._record("send_to_user", (user_id, name, data))

    async def terminate_user(self, user_id: str) -> None:
        self._record("terminate_user", user_id)

    async def channels(self, prefix: str, info: Sequence[str]) -> dict[str, dict[str, Any]]:
        self._record("channels", (prefix, tuple(info)))
        return {"presence-a": {"user_count": 1}}

    async def channel(self, name: str, info: Sequence[str]) -> dict[str, Any]:
        self._record("channel", (name, tuple(info)))
        return {"occupied": True}

    async def users(self, channel: str) -> list[str]:
        self._record("users", channel)
        return ["u1"]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[Realtime]:
    rt = Realtime.from_backend(lambda: recorder)
    yield rt
    rt.close()


def test_sync_calls_from_many_threads_run_on_one_private_loop(
    client: Realtime, recorder: Recorder
) -> None:
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        try:
            for i in range(10):
                assert client.trigger(f"ch-{n}", "e", {"i": i}) == {}
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors, errors
    assert len(recorder.calls) == 80
    assert len(recorder.loops) == 1 and len(recorder.threads) == 1
    assert recorder.threads.isdisjoint({t.ident for t in threads} | {threading.get_ident()})
    assert recorder.starts == 1  # started once, on first use
    assert client.running and client.loop in recorder.loops


def test_close_stops_the_backend_and_the_thread(recorder: Recorder) -> None:
    rt = Realtime.from_backend(lambda: recorder)
    assert not rt.running and rt.loop is None  # nothing started before the first call
    rt.terminate_user("u1")
    loop = rt.loop
    assert loop is not None and loop.is_running()
    rt.close()
    assert recorder.closes == 1
    assert not rt.running and loop.is_closed()
    rt.close()  # a second close has nothing left to do
    assert recorder.closes == 1


async def test_await_from_another_loop_runs_on_the_home_loop(
    client: Realtime, recorder: Recorder
) -> None:
    answer = await client.atrigger(["a", "b"], "e", "x", info=["subscription_count"])
    assert answer == {"channels": {"a": {}, "b": {}}}
    assert recorder.loops == {client.loop}
    assert asyncio.get_running_loop() not in recorder.loops


async def test_await_on_the_home_loop_does_not_hop(client: Realtime, recorder: Recorder) -> None:
    await client.start()
    home = client.loop
    assert home is not None

    async def on_home() -> asyncio.Task[Any] | None:
        await client.aterminate_user("u1")
        return asyncio.current_task()

    task = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_home(), home))
    assert recorder.tasks == [task]  # awaited in the caller's own task


async def test_sync_call_on_the_home_loop_refuses(client: Realtime, recorder: Recorder) -> None:
    await client.start()
    home = client.loop
    assert home is not None

    async def on_home() -> None:
        client.trigger("a", "e", "x")

    with pytest.raises(RuntimeError, match=r"await rt\.atrigger"):
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_home(), home))
    assert recorder.calls == []


async def test_embedded_sync_call_on_its_loop_refuses_and_await_works() -> None:
    async with Realtime(app_id="1", key="k", secret="s", shutdown_ready_delay=0) as rt:
        assert rt.running and rt.loop is asyncio.get_running_loop()
        with pytest.raises(RuntimeError, match=r"await rt\.atrigger"):
            rt.trigger("a", "e", "x")
        assert await rt.atrigger("a", "e", "x") == {}
        # From a worker thread, the same sync call is fine.
        assert await asyncio.to_thread(rt.trigger, "a", "e", {"n": 1}) == {}
    assert not rt.running


async def test_embedded_checks_every_call_with_its_own_app_limits() -> None:
    """The channel names an embedded backend remembers as valid never let a bad call
    through: each refusal is the REST one, every time, under this app's limits."""
    async with Realtime(
        app_id="1", key="k", secret="s", shutdown_ready_delay=0, max_event_payload_bytes=100
    ) as rt:
        for _ in range(2):
            assert await rt.atrigger("room-12345678", "e", "x") == {}
            with pytest.raises(PublishError) as bad_name:
                await rt.atrigger("bad name", "e", "x")
            assert (bad_name.value.status, bad_name.value.message) == (
                400,
                "invalid channel 'bad name': channel name may contain only "
                "A-Z a-z 0-9 _ - = @ , . ;",
            )
            with pytest.raises(PublishError) as too_big:
                await rt.atrigger("room-12345678", "e", "x" * 101)
            assert (too_big.value.status, too_big.value.message) == (
                413,
                "data larger than 100 bytes",
            )
    async with Realtime(
        app_id="2", key="k2", secret="s2", shutdown_ready_delay=0, max_channel_name_length=8
    ) as strict:
        with pytest.raises(PublishError, match="longer than 8 characters"):
            await strict.atrigger("room-12345678", "e", "x")


async def test_embedded_triggers_to_history_channels_are_kept_in_order() -> None:
    rules = [{"pattern": "chat-*", "size": 2, "ttl": 60}]
    async with Realtime(
        app_id="1", key="k", secret="s", shutdown_ready_delay=0, history=rules
    ) as rt:
        for n in range(3):
            await rt.atrigger(["chat-1", "news"], "said", {"n": n})
        page = await rt.node.history(rt.app, "chat-1", 0, 10)
        assert page.position.offset == 3 and not page.complete  # size 2: offset 1 is gone
        assert [(e.offset, json.loads(e.message)["data"]) for e in page.events] == [
            (2, '{"n":1}'),
            (3, '{"n":2}'),
        ]
        assert (await rt.node.history(rt.app, "news", 0, 10)).position.offset == 0


async def test_embedded_not_started_or_stopped_says_how_to_start() -> None:
    rt = Realtime(app_id="1", key="k", secret="s", shutdown_ready_delay=0)
    with pytest.raises(RuntimeError, match=r"await rt\.start\(\)"):
        rt.trigger("a", "e", "x")
    with pytest.raises(RuntimeError, match=r"tidings serve"):
        await rt.achannels()
    await rt.start()
    with pytest.raises(RuntimeError, match="starts once"):
        await rt.start()
    await rt.stop()
    with pytest.raises(RuntimeError, match=r"not running"):
        await asyncio.to_thread(rt.users, "presence-x")


def test_a_failed_start_is_tried_again() -> None:
    recorder = Recorder(fail_starts=1)
    rt = Realtime.from_backend(lambda: recorder)
    try:
        with pytest.raises(ConnectionError):
            rt.trigger("a", "e", "x")
        assert rt.trigger("a", "e", "x") == {}
        assert recorder.starts == 2
    finally:
        rt.close()


def test_a_call_that_never_answers_times_out(client: Realtime, recorder: Recorder) -> None:
    client.timeout = 0.2
    with pytest.raises(TimeoutError, match="no answer within 0.2 s"):
        client.trigger("a", "hang", "x")
    client.timeout = TIMEOUT
    assert client.trigger("a", "e", "x") == {}  # the loop is still serving


def test_refusals_reach_the_caller_unchanged(client: Realtime) -> None:
    with pytest.raises(PublishError) as caught:
        client.trigger("a", "refuse", "x")
    assert caught.value.status == 429 and caught.value.message == "too many"


def test_data_str_as_is_anything_else_json_once(client: Realtime, recorder: Recorder) -> None:
    client.trigger("a", "e", '{"already": "json"}')
    client.trigger("a", "e", {"id": 42, "tags": ["x"], "ok": True, "none": None})
    client.trigger("a", "e", [1, 2])
    client.send_to_user("u1", "notice", {"text": "héllo"})
    sent = [call[1].data for call in recorder.calls if call[0] == "trigger"]
    assert sent == ['{"already": "json"}', '{"id":42,"tags":["x"],"ok":true,"none":null}', "[1,2]"]
    assert recorder.calls[-1] == ("send_to_user", ("u1", "notice", '{"text":"héllo"}'))
    assert orjson.loads(recorder.calls[-1][1][2]) == {"text": "héllo"}
    with pytest.raises(TypeError, match="JSON-serialisable"):
        client.trigger("a", "e", object())
    assert len(recorder.calls) == 4  # nothing sent for the refused one


def test_arguments_become_one_event(client: Realtime, recorder: Recorder) -> None:
    client.trigger("solo", "e", "x", "123.456", info="user_count, subscription_count")
    client.trigger(("a", "b"), "e", "x", info=["subscription_count"])
    assert [call[1] for call in recorder.calls] == [
        Event(("solo",), "e", "x", "123.456", ("user_count", "subscription_count")),
        Event(("a", "b"), "e", "x", None, ("subscription_count",)),
    ]
    assert client.channels(prefix="presence-", info=["user_count"]) == {
        "presence-a": {"user_count": 1}
    }
    assert client.channel("x", info="subscription_count") == {"occupied": True}
    assert client.users("presence-x") == ["u1"]
    assert recorder.calls[2:] == [
        ("channels", ("presence-", ("user_count",))),
        ("channel", ("x", ("subscription_count",))),
        ("users", "presence-x"),
    ]


def test_wrong_argument_types_fail_before_sending(client: Realtime, recorder: Recorder) -> None:
    with pytest.raises(TypeError, match="event must be a str"):
        client.trigger("a", 42, "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="each name must be a str"):
        client.trigger(["a", 1], "e", "x")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="socket_id must be a str"):
        client.trigger("a", "e", "x", 123)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="user_id must be a str"):
        client.terminate_user(7)  # type: ignore[arg-type]
    assert recorder.calls == []


def test_batch_entries(client: Realtime, recorder: Recorder) -> None:
    client.trigger_batch(
        [
            {"channel": "a", "name": "e", "data": {"n": 1}},
            {"channel": "b", "name": "f", "data": "s", "socket_id": "1.2", "info": ["user_count"]},
        ]
    )
    assert recorder.calls == [
        (
            "trigger_batch",
            [
                Event(("a",), "e", '{"n":1}'),
                Event(("b",), "f", "s", "1.2", ("user_count",)),
            ],
        )
    ]
    with pytest.raises(ValueError, match=r"batch entry 1 lacks \['data'\]"):
        client.trigger_batch(
            [{"channel": "a", "name": "e", "data": 1}, {"channel": "a", "name": "e"}]
        )
    with pytest.raises(ValueError, match=r"batch entry 0 has unknown \['channels'\]"):
        client.trigger_batch([{"channels": ["a"], "channel": "a", "name": "e", "data": 1}])
    with pytest.raises(TypeError, match="batch entry 0 must be a dict"):
        client.trigger_batch(["a"])  # type: ignore[list-item]
    assert len(recorder.calls) == 1


def test_on_commit_needs_configured_django() -> None:
    """In a fresh interpreter: other tests of this session configure Django in-process."""
    script = textwrap.dedent(
        """
        from tidings import Realtime
        rt = Realtime.client("http://key:secret@127.0.0.1:9/apps/1")
        try:
            rt.trigger("a", "e", "x", on_commit=True)
        except RuntimeError as exc:
            print(exc)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "on_commit=True needs Django's settings: set DJANGO_SETTINGS_MODULE" in done.stdout


def test_fork_gives_the_child_its_own_loop_and_backend(tmp_path: Path) -> None:
    """gunicorn --preload: the parent used the client, then forked workers."""
    script = textwrap.dedent(
        """
        import os, sys
        sys.path.insert(0, sys.argv[1])
        from test_realtime import Recorder
        from tidings import Realtime

        made = []
        def open_backend():
            made.append(Recorder())
            return made[-1]

        rt = Realtime.from_backend(open_backend)
        rt.trigger("a", "parent", "x")
        parent_loop = rt.loop
        pid = os.fork()
        if pid == 0:
            try:
                rt.trigger("a", "child", "x")
                ok = (len(made) == 2 and made[1].starts == 1 and rt.loop is not parent_loop
                      and [c[1].name for c in made[1].calls] == ["child"])
                rt.close()
                os._exit(0 if ok and made[1].closes == 1 and made[0].closes == 0 else 3)
            except BaseException:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        rt.trigger("a", "parent-again", "x")
        rt.close()
        assert [c[1].name for c in made[0].calls] == ["parent", "parent-again"], made[0].calls
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    path = tmp_path / "fork_check.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=6 * TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child 0", done.stdout


def test_embedded_settings_from_keywords(tmp_path: Path) -> None:
    rt = Realtime(
        app_id="7",
        key="k7",
        secret="s7",
        broker="redis://127.0.0.1:1/0",
        activity_timeout=60,
        max_event_payload_bytes=20480,
    )
    assert rt.settings.redis == "redis://127.0.0.1:1/0"
    assert rt.settings.activity_timeout == 60
    assert rt.app.id == "7" and rt.app.max_event_payload_bytes == 20480
    assert rt.node.apps.by_id("7") == rt.app
    # A setting of both the server and the app limits both (one app per Realtime).
    crowd = Realtime(app_id="8", key="k8", secret="s8", max_connections=50_000)
    assert crowd.settings.max_connections == 50_000 and crowd.app.max_connections == 50_000
    with pytest.raises(ConfigError, match=r"setting activity_timeout: .*\(got -1\)"):
        Realtime(app_id="1", key="k", secret="s", activity_timeout=-1)
    with pytest.raises(ConfigError, match=r"setting redis:"):
        Realtime(app_id="1", key="k", secret="s", broker="nats://x")
    with pytest.raises(ConfigError, match=r"apps\[b ad\]\.id"):
        Realtime(app_id="b ad", key="k", secret="s")
    with pytest.raises(TypeError, match="one app"):
        Realtime(app_id="1", key="k", secret="s", apps=[])


def test_from_config_and_env_pick_an_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(
        'port = 7001\n[[apps]]\nid = "1"\nkey = "k1"\nsecret = "s1"\n'
        '[[apps]]\nid = "2"\nkey = "k2"\nsecret = "s2"\n'
    )
    monkeypatch.delenv("TIDINGS_CONFIG", raising=False)
    monkeypatch.delenv("TIDINGS_APPS", raising=False)
    assert Realtime.from_config(config).app.id == "1"
    assert Realtime.from_config(str(config), app_id="2").app.key == "k2"
    with pytest.raises(ConfigError, match=r"no app with id '3' in the configuration \(1, 2\)"):
        Realtime.from_config(config, app_id="3")
    monkeypatch.setenv("TIDINGS_PORT", "7002")  # variables over the file, as for `serve`
    assert Realtime.from_config(config).settings.port == 7002
    monkeypatch.setenv("TIDINGS_APPS", "9:k9:s9")
    rt = Realtime.from_env()
    assert rt.app.id == "9" and rt.settings.port == 7002
