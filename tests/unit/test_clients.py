"""``open_backend``: which client a URL gives, what it takes from the URL, and its refusals
(which never show the secret)."""

from __future__ import annotations

import pytest

from tidings.clients import HttpClient, RedisClient, open_backend
from tidings.clients.http import signed_query
from tidings.protocol.auth import rest_request_error

SECRET = "s3cret-value"


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@h:6380/1", "unix:///tmp/redis.sock"]
)
def test_redis_schemes_give_a_redis_client(url: str) -> None:
    backend = open_backend(url, app_id="1", key="k", secret=SECRET)
    assert isinstance(backend, RedisClient)
    assert "pw" not in repr(backend)


def test_redis_client_needs_an_app_id() -> None:
    with pytest.raises(ValueError, match="app_id is required"):
        open_backend("redis://127.0.0.1:6379/0")


def test_redis_options_reach_the_client_and_a_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="redis prefix"):
        open_backend("redis://127.0.0.1:6379/0", app_id="1", redis_prefix="a:b")
    with pytest.raises(TypeError):
        open_backend("redis://127.0.0.1:6379/0", app_id="1", no_such_option=1)


def _parts(backend: object) -> tuple[str, str, str, str]:
    assert isinstance(backend, HttpClient)
    return backend._origin, backend._app_path, backend._key, backend._secret


def test_http_url_carries_key_secret_and_app_id() -> None:
    backend = open_backend(f"http://app-key:{SECRET}@127.0.0.1:6001/apps/12345")
    assert _parts(backend) == ("http://127.0.0.1:6001", "/apps/12345", "app-key", SECRET)


def test_http_keywords_fill_in_and_a_mount_path_is_kept() -> None:
    backend = open_backend("https://example.com/rt/apps/7/", key="k", secret=SECRET)
    assert _parts(backend) == ("https://example.com", "/rt/apps/7", "k", SECRET)
    backend = open_backend("http://127.0.0.1:6001", app_id="9", key="k", secret=SECRET)
    assert _parts(backend) == ("http://127.0.0.1:6001", "/apps/9", "k", SECRET)


def test_percent_encoded_credentials_are_decoded() -> None:
    backend = open_backend("http://k%40x:p%2Fss@127.0.0.1/apps/1")
    assert _parts(backend)[2:] == ("k@x", "p/ss")


def test_http_keywords_must_agree_with_the_url() -> None:
    url = f"http://app-key:{SECRET}@127.0.0.1:6001/apps/12345"
    with pytest.raises(ValueError, match="app_id") as app_error:
        open_backend(url, app_id="999")
    with pytest.raises(ValueError, match="secret") as secret_error:
        open_backend(url, secret="other-secret")
    for error in (app_error, secret_error):
        assert SECRET not in str(error.value)
        assert "other-secret" not in str(error.value)
    assert open_backend(url, app_id="12345", key="app-key", secret=SECRET) is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:6001/apps/1", "no key"),
        ("http://k@127.0.0.1:6001/apps/1", "no secret"),
        (f"http://k:{SECRET}@127.0.0.1:6001", "no app_id"),
        (f"http://k:{SECRET}@127.0.0.1:6001/other/1", "must end with /apps/APP_ID"),
        (f"http://k:{SECRET}@127.0.0.1:6001/apps/1?token=abcd", "query"),
        (f"http://k:{SECRET}@/apps/1", "no host"),
        (f"http://k:{SECRET}@127.0.0.1:port/apps/1", "not a valid URL"),
        (f"ws://k:{SECRET}@127.0.0.1:6001/apps/1", "must start with redis://"),
        (f"amqp://k:{SECRET}@127.0.0.1", "must start with redis://"),
    ],
)
def test_refusals_name_the_problem_never_the_secret(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        open_backend(url)
    assert SECRET not in str(error.value)


def test_signed_query_passes_the_servers_check() -> None:
    """The signature is what the Tidings server recomputes (``rest_request_error``), for a
    body (with body_md5) and without one (no body_md5, as pusher-http-node sends)."""
    now = 1_700_000_000.0
    for method, body, params in (
        ("POST", b'{"name":"e"}', {}),
        ("GET", b"", {"info": "user_count,subscription_count", "filter_by_prefix": "presence-"}),
    ):
        query = signed_query("k", SECRET, method, "/apps/1/events", params, body, now)
        names = [name for name, _ in query]
        assert names[-1] == "auth_signature"
        assert ("body_md5" in names) == bool(body)
        assert rest_request_error(SECRET, method, "/apps/1/events", query, body, now) is None
        assert rest_request_error("wrong", method, "/apps/1/events", query, body, now)
