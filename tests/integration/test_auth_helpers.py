"""The auth helpers: ``@authorize`` / ``@presence`` / ``@user`` rules, served by the Flask,
FastAPI and Django integrations, checked against the pusher SDK's signatures and with real
pusher-js using its own authorizer (no customHandler) against a real ``tidings serve``."""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pusher
import pytest
from framework_apps import (
    APP_KEY,
    APP_SECRET,
    fastapi_app,
    flask_app,
    make_rt,
    serve_asgi,
    serve_wsgi,
)
from pusher_helpers import TIMEOUT, channel_auth, user_auth

from tidings import Realtime
from tidings.authorization import Authorizer, AuthRefused, ChannelPattern
from tidings.core.apps import App

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from scenario import Scenario  # noqa: E402

pytestmark = pytest.mark.timeout(12 * TIMEOUT)

SOCKET_ID = "123.456"
FORM = "application/x-www-form-urlencoded"


def sdk_authenticate(channel: str, **options: Any) -> dict[str, Any]:
    """What the pusher SDK's ``authenticate`` answers for ``channel`` and SOCKET_ID."""
    client = pusher.Pusher(app_id="12345", key=APP_KEY, secret=APP_SECRET, **options)
    try:
        answer: dict[str, Any] = client.authenticate(channel, SOCKET_ID)
        return answer
    finally:  # its HTTP sessions are opened with it; never used here
        client._pusher_client.http.session.close()
        client._authentication_client.http.session.close()


Post = Callable[..., tuple[int, Any]]


# -- patterns ------------------------------------------------------------------------------


def test_a_placeholder_takes_one_dot_separated_part_with_any_other_name_character() -> None:
    pattern = ChannelPattern.compile("private-orders.{order_id}")
    assert pattern.match("private-orders.42") == {"order_id": "42"}
    assert pattern.match("private-orders.a-b_c=d@e,f;g") == {"order_id": "a-b_c=d@e,f;g"}
    assert pattern.match("private-orders.4.2") is None
    assert pattern.match("private-orders.") is None
    assert pattern.match("private-orders.42x.y") is None
    assert pattern.match("private-cache-orders.42") is None


def test_star_matches_any_run_and_several_placeholders_fill_in_order() -> None:
    assert ChannelPattern.compile("private-*").match("private-a.b.c") == {}
    two = ChannelPattern.compile("presence-team.{team}.room.{room}")
    assert two.match("presence-team.red.room.7") == {"team": "red", "room": "7"}
    with pytest.raises(ValueError, match="twice"):
        ChannelPattern.compile("private-{a}.{a}")
    with pytest.raises(ValueError, match="only"):
        ChannelPattern.compile("private-orders/{id}")


def rules() -> Authorizer:
    return make_rt().authorizer


def test_no_matching_rule_refuses_and_the_first_matching_rule_decides() -> None:
    authorizer = rules()
    with pytest.raises(AuthRefused, match="no rule") as refused:
        authorizer.authenticate_channel("alice", SOCKET_ID, "private-invoices.1")
    assert refused.value.status == 403

    @authorizer.authorize("private-*")
    def anything(user: str) -> bool:
        return True

    # private-orders.{order_id} came first: it still refuses order 43.
    with pytest.raises(AuthRefused):
        authorizer.authenticate_channel("alice", SOCKET_ID, "private-orders.43")
    assert authorizer.authenticate_channel("alice", SOCKET_ID, "private-invoices.1")


@pytest.mark.parametrize(
    ("socket_id", "channel", "status"),
    [
        ("123", "private-orders.42", 400),
        ("1.2;x", "private-orders.42", 400),
        (None, "private-orders.42", 400),
        (SOCKET_ID, "private-orders/42", 400),
        (SOCKET_ID, "orders", 400),
        (SOCKET_ID, "#server-to-user-alice", 400),
        (SOCKET_ID, "private-" + "x" * 300, 400),
    ],
)
def test_malformed_requests_are_400(socket_id: Any, channel: str, status: int) -> None:
    with pytest.raises(AuthRefused) as refused:
        rules().authenticate_channel("alice", socket_id, channel)
    assert refused.value.status == status


def test_answers_are_the_pusher_sdks() -> None:
    authorizer = rules()
    private = authorizer.authenticate_channel("alice", SOCKET_ID, "private-orders.42")
    assert private == sdk_authenticate("private-orders.42")
    presence = authorizer.authenticate_channel("bob", SOCKET_ID, "presence-room.lobby")
    member = {"user_id": "bob", "user_info": {"name": "Bob", "room": "lobby"}}
    assert json.loads(presence["channel_data"]) == member
    # The SDK writes JSON with spaces, Tidings without: each signs the string it sends.
    assert presence["auth"] == channel_auth(
        SOCKET_ID, "presence-room.lobby", presence["channel_data"]
    )


def test_a_presence_rule_may_return_a_bare_user_id_and_none_refuses() -> None:
    authorizer = Authorizer(App("1", APP_KEY, APP_SECRET))

    @authorizer.presence("presence-{who}")
    def member(user: str, who: str) -> int | None:
        return 7 if who == "seven" else None

    answer = authorizer.authenticate_channel("u", SOCKET_ID, "presence-seven")
    assert json.loads(answer["channel_data"]) == {"user_id": "7"}
    with pytest.raises(AuthRefused):
        authorizer.authenticate_channel("u", SOCKET_ID, "presence-eight")


def test_encrypted_channels_get_the_sdks_shared_secret_and_need_a_master_key() -> None:
    master = os.urandom(32)
    authorizer = Authorizer(App("1", APP_KEY, APP_SECRET), encryption_master_key=master)

    @authorizer.authorize("private-encrypted-inbox.{owner}")
    def own(user: str, owner: str) -> bool:
        return owner == user

    answer = authorizer.authenticate_channel("ann", SOCKET_ID, "private-encrypted-inbox.ann")
    expected = sdk_authenticate(
        "private-encrypted-inbox.ann",
        encryption_master_key_base64=base64.b64encode(master).decode(),
    )
    assert answer["auth"] == expected["auth"]
    assert answer["shared_secret"] == expected["shared_secret"].decode()
    with pytest.raises(ValueError, match="encryption master key"):
        rules().authorize("private-encrypted-inbox.{owner}")
    with pytest.raises(ValueError, match="hide the user"):
        rules().authorize("private-inbox.{user}")


def test_user_sign_in_is_signed_as_the_server_checks_it() -> None:
    answer = rules().authenticate_user("alice", SOCKET_ID)
    assert json.loads(answer["user_data"]) == {"id": "alice", "user_info": {"name": "Alice"}}
    assert answer["auth"] == user_auth(SOCKET_ID, answer["user_data"])
    with pytest.raises(AuthRefused, match="not signed in"):
        rules().authenticate_user(None, SOCKET_ID)


# -- the integrations, over HTTP -------------------------------------------------------------


@pytest.fixture(scope="module")
def flask_url() -> Iterator[str]:
    with serve_wsgi(flask_app(make_rt())) as running:
        yield running.url


@pytest.fixture(scope="module")
def fastapi_url() -> Iterator[str]:
    with serve_asgi(fastapi_app(make_rt())) as running:
        yield running.url


def http_poster(base: str) -> Post:
    def post(
        path: str, user: str | None, *, form: Any = None, json_body: Any = None
    ) -> tuple[int, Any]:
        headers = {"X-User": user} if user else {}
        response = httpx.post(
            base + path, headers=headers, data=form, json=json_body, timeout=TIMEOUT
        )
        assert response.headers["content-type"].startswith("application/json")
        return response.status_code, response.json()

    return post


@pytest.fixture
def django_client() -> Any:
    import django_site
    from django.test import Client

    django_site.configure(make_rt())
    return Client(enforce_csrf_checks=True)


def django_poster(client: Any) -> Post:
    token = client.get("/csrf").json()["token"]

    def post(
        path: str, user: str | None, *, form: Any = None, json_body: Any = None
    ) -> tuple[int, Any]:
        headers = {"X-CSRFToken": token, **({"X-User": user} if user else {})}
        if json_body is not None:
            response = client.post(path, json.dumps(json_body), "application/json", headers=headers)
        else:
            # pusher-js's encoding (the test client's default is multipart)
            encoded = urlencode(form)
            response = client.post(path, encoded, FORM, headers=headers)
        assert response["Content-Type"].startswith("application/json")
        return response.status_code, response.json()

    return post


@pytest.fixture(params=["flask", "fastapi", "django"])
def post(request: pytest.FixtureRequest) -> Post:
    if request.param == "django":
        return django_poster(request.getfixturevalue("django_client"))
    return http_poster(request.getfixturevalue(f"{request.param}_url"))


@pytest.mark.parametrize("body", ["form", "json"])
def test_channel_auth_over_http(post: Post, body: str) -> None:
    def ask(user: str | None, channel: str, socket_id: str = SOCKET_ID) -> tuple[int, Any]:
        fields = {"socket_id": socket_id, "channel_name": channel}
        return post(
            "/pusher/auth", user, **({"form": fields} if body == "form" else {"json_body": fields})
        )

    assert ask("alice", "private-orders.42") == (
        200,
        sdk_authenticate("private-orders.42"),
    )
    status, refusal = ask("alice", "private-orders.43")
    assert (status, sorted(refusal)) == (403, ["error"])
    assert ask(None, "private-orders.42")[0] == 403
    assert ask("alice", "private-orders.42", socket_id="nope")[0] == 400
    status, answer = ask("bob", "presence-room.lobby")
    assert status == 200
    assert json.loads(answer["channel_data"])["user_info"] == {"name": "Bob", "room": "lobby"}
    assert answer["auth"] == channel_auth(SOCKET_ID, "presence-room.lobby", answer["channel_data"])


@pytest.mark.parametrize("body", ["form", "json"])
def test_user_auth_over_http(post: Post, body: str) -> None:
    fields = {"socket_id": SOCKET_ID}
    kwargs = {"form": fields} if body == "form" else {"json_body": fields}
    status, answer = post("/pusher/user-auth", "alice", **kwargs)
    assert status == 200
    assert answer["auth"] == user_auth(SOCKET_ID, answer["user_data"])
    assert json.loads(answer["user_data"])["id"] == "alice"
    assert post("/pusher/user-auth", None, **kwargs)[0] == 403


def test_django_keeps_csrf_protection_on(django_client: Any) -> None:
    fields = {"socket_id": SOCKET_ID, "channel_name": "private-orders.42"}
    refused = django_client.post(
        "/pusher/auth", urlencode(fields), FORM, headers={"X-User": "alice"}
    )
    assert refused.status_code == 403
    token = django_client.get("/csrf").json()["token"]
    allowed = django_client.post(
        "/pusher/auth", urlencode(fields), FORM, headers={"X-User": "alice", "X-CSRFToken": token}
    )
    assert allowed.status_code == 200
    assert allowed.json() == sdk_authenticate("private-orders.42")


# -- pusher-js ---------------------------------------------------------------------------------


@pytest.mark.node
@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_pusher_js_authorizes_through_the_endpoints(
    server: Any, request: pytest.FixtureRequest, framework: str
) -> None:
    base = request.getfixturevalue(f"{framework}_url")
    room = f"presence-room.{framework}{os.getpid()}"
    scenario = Scenario(
        "auth_endpoint",
        server.port,
        {
            "AUTH_URL": base,
            "PRIVATE_OK": "private-orders.42",
            "PRIVATE_REFUSED": "private-orders.43",
            "PRESENCE": room,
        },
    )
    try:
        result = scenario.result()
    finally:
        scenario.close()
    assert result["private_ok"] is True
    assert result["private_refused"] == {"type": "AuthError", "status": 403}
    assert result["presence_ok"] is True
    name = room.removeprefix("presence-room.")
    assert result["members"] == [
        {"id": "alice", "info": {"name": "Alice", "room": name}},
        {"id": "bob", "info": {"name": "Bob", "room": name}},
    ]
    assert result["me"] == {"id": "alice", "info": {"name": "Alice", "room": name}}
    assert result["user_data"] == {"id": "alice", "user_info": {"name": "Alice"}}


def test_a_publish_only_realtime_signs_with_its_urls_key_and_secret() -> None:
    rt = Realtime.client("http://app-key:app-secret@127.0.0.1:9/apps/12345")

    @rt.authorize("private-orders.{order_id}")
    def anyone(user: object, order_id: str) -> bool:
        return True

    answer = rt.authenticate_channel("alice", SOCKET_ID, "private-orders.42")
    assert answer == sdk_authenticate("private-orders.42")
    with pytest.raises(RuntimeError, match="embedded"):
        rt.before("client-*")
    redis_client = Realtime.client("redis://127.0.0.1:9/0", app_id="12345")
    with pytest.raises(AttributeError, match="key and secret"):
        redis_client.authorize("private-x")


async def test_an_async_rule_asks_for_the_async_form_on_a_running_loop() -> None:
    authorizer = rules()  # its presence rule is async
    with pytest.raises(RuntimeError, match="aauthenticate_channel"):
        authorizer.authenticate_channel("bob", SOCKET_ID, "presence-room.lobby")
    answer = await authorizer.aauthenticate_channel("bob", SOCKET_ID, "presence-room.lobby")
    assert json.loads(answer["channel_data"])["user_id"] == "bob"
