"""protocol/auth.py: channel, user and REST signatures (reference vectors from Pusher's docs)."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from tidings.protocol.auth import (
    EMPTY_MD5,
    channel_auth_ok,
    rest_request_error,
    rest_string_to_sign,
    sign,
    user_auth_ok,
)

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
PRIVATE_SIG = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
USER_SIG = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
REST_SIG = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
REST_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
REST_QUERY = [
    ("auth_key", KEY),
    ("auth_timestamp", "1353088179"),
    ("auth_version", "1.0"),
    ("body_md5", "ec365a775a4cd0599faeb73354201b6f"),
]
NOW = 1353088179.0


def rest_query(signature: str = REST_SIG) -> list[tuple[str, str]]:
    return [*REST_QUERY, ("auth_signature", signature)]


# -- reference vectors (pusher docs auth-signatures.md and rest-api.md) -------------------


def test_private_channel_vector() -> None:
    assert sign(SECRET, "1234.1234:private-foobar") == PRIVATE_SIG


def test_user_signin_vector() -> None:
    assert sign(SECRET, '1234.1234::user::{"id":"12345"}') == USER_SIG


def test_rest_body_md5_vector() -> None:
    assert hashlib.md5(REST_BODY).hexdigest() == "ec365a775a4cd0599faeb73354201b6f"


def test_rest_string_to_sign_vector() -> None:
    assert rest_string_to_sign("POST", "/apps/3/events", REST_QUERY) == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    assert sign(SECRET, rest_string_to_sign("POST", "/apps/3/events", REST_QUERY)) == REST_SIG


def test_rest_request_vector_passes() -> None:
    assert (
        rest_request_error(SECRET, "POST", "/apps/3/events", rest_query(), REST_BODY, NOW) is None
    )


# -- channel and user auth ----------------------------------------------------------------


def test_channel_auth_private_ok() -> None:
    auth = f"{KEY}:{PRIVATE_SIG}"
    assert channel_auth_ok(KEY, SECRET, "1234.1234", "private-foobar", auth, None)


def test_channel_auth_presence_signs_channel_data() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    signature = sign(SECRET, f"1234.1234:presence-foobar:{data}")
    auth = f"{KEY}:{signature}"
    assert channel_auth_ok(KEY, SECRET, "1234.1234", "presence-foobar", auth, data)
    assert not channel_auth_ok(KEY, SECRET, "1234.1234", "presence-foobar", auth, data + " ")
    assert not channel_auth_ok(KEY, SECRET, "1234.1234", "presence-foobar", auth, None)


def test_channel_auth_wrong_key() -> None:
    auth = f"other-key:{PRIVATE_SIG}"
    assert not channel_auth_ok(KEY, SECRET, "1234.1234", "private-foobar", auth, None)


def test_channel_auth_wrong_socket_or_channel() -> None:
    auth = f"{KEY}:{PRIVATE_SIG}"
    assert not channel_auth_ok(KEY, SECRET, "1234.1235", "private-foobar", auth, None)
    assert not channel_auth_ok(KEY, SECRET, "1234.1234", "private-foobaz", auth, None)


def test_channel_auth_malformed_values() -> None:
    for auth in (None, 42, "", PRIVATE_SIG, f"{KEY}:", f"{KEY}:{PRIVATE_SIG.upper()}", ["x"]):
        assert not channel_auth_ok(KEY, SECRET, "1234.1234", "private-foobar", auth, None)


def test_user_auth() -> None:
    data = '{"id":"12345"}'
    assert user_auth_ok(KEY, SECRET, "1234.1234", data, f"{KEY}:{USER_SIG}")
    assert not user_auth_ok(KEY, SECRET, "1234.1234", '{"id":"12346"}', f"{KEY}:{USER_SIG}")
    assert not user_auth_ok(KEY, SECRET, "1234.1234", data, f"x:{USER_SIG}")
    assert not user_auth_ok(KEY, SECRET, "1234.1234", data, None)


# -- REST request signatures --------------------------------------------------------------


def test_rest_string_to_sign_lowercases_sorts_and_drops_signature() -> None:
    query = [("b", "2"), ("A", "1"), ("auth_signature", "zzz"), ("c", "x y")]
    assert rest_string_to_sign("get", "/p", query) == "GET\n/p\na=1&b=2&c=x y"


def test_rest_repeated_names_are_signed_in_the_order_sent() -> None:
    query = [("b", "2"), ("a", "z"), ("B", "1"), ("a", "y")]
    assert rest_string_to_sign("POST", "/p", query) == "POST\n/p\na=z&a=y&b=2&b=1"


NAMES = st.sampled_from(["auth_key", "AUTH_Signature", "auth_signature", "b", "B", "a", "İ", "ß"])


@given(
    method=st.sampled_from(["get", "POST", "Delete"]),
    query=st.lists(st.tuples(st.one_of(NAMES, st.text(max_size=4)), st.text(max_size=4))),
)
def test_rest_string_to_sign_as_the_rule_reads(method: str, query: list[tuple[str, str]]) -> None:
    # The rule written out plainly (the function is shaped for speed: it runs per request).
    kept = [(k.lower(), v) for k, v in query if k.lower() != "auth_signature"]
    kept = sorted(kept, key=lambda kv: kv[0])
    expected = "\n".join((method.upper(), "/apps/1/events", "&".join(f"{k}={v}" for k, v in kept)))
    assert rest_string_to_sign(method, "/apps/1/events", query) == expected


def test_sign_is_hmac_sha256_hex_for_every_secret() -> None:
    for secret in ("", SECRET, "another-secret", "ünïcode"):
        for message in ("", "a", "POST\n/apps/1/events\nauth_key=k"):
            expected = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
            assert sign(secret, message) == expected


def test_rest_bad_signature() -> None:
    error = rest_request_error(
        SECRET, "POST", "/apps/3/events", rest_query("0" * 64), REST_BODY, NOW
    )
    # Pusher's wording: the string it signed, JSON-quoted; never the secret or the HMAC.
    assert error == (
        'Invalid signature: you should have sent HmacSHA256Hex("POST\\n/apps/3/events\\n'
        "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&"
        'body_md5=ec365a775a4cd0599faeb73354201b6f", your_secret_key), but you sent "'
        + "0" * 64
        + '"'
    )
    assert SECRET not in error


def test_rest_signature_covers_method_and_path() -> None:
    assert rest_request_error(SECRET, "GET", "/apps/3/events", rest_query(), REST_BODY, NOW)
    assert rest_request_error(SECRET, "POST", "/apps/4/events", rest_query(), REST_BODY, NOW)


def test_rest_wrong_secret() -> None:
    error = rest_request_error("other", "POST", "/apps/3/events", rest_query(), REST_BODY, NOW)
    assert error is not None
    assert error.startswith("Invalid signature: you should have sent HmacSHA256Hex(")


def test_rest_missing_parameters() -> None:
    for name in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        query = [(k, v) for k, v in rest_query() if k != name]
        error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
        assert error == f"missing {name} query parameter"


def test_rest_auth_version_must_be_1_0() -> None:
    query = [(k, "2.0" if k == "auth_version" else v) for k, v in rest_query()]
    error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
    assert error == "auth_version must be 1.0"


def test_rest_timestamp_not_an_integer() -> None:
    query = [(k, "soon" if k == "auth_timestamp" else v) for k, v in rest_query()]
    error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
    assert error == "auth_timestamp must be an integer"


def test_rest_timestamp_digits_int_cannot_read() -> None:
    """str.isdigit() accepts "⓪" and "²", int() does not (found by fuzzing: a ValueError)."""
    for stamp in ("\u24ea", "1353088179\u00b2", "\u0661\u0663"):
        query = [(k, stamp if k == "auth_timestamp" else v) for k, v in rest_query()]
        error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
        assert error == "auth_timestamp must be an integer"


def test_rest_timestamp_window_is_600_seconds() -> None:
    path, query = "/apps/3/events", rest_query()
    assert rest_request_error(SECRET, "POST", path, query, REST_BODY, NOW + 600) is None
    assert rest_request_error(SECRET, "POST", path, query, REST_BODY, NOW - 600) is None
    stale = "auth_timestamp is more than 600 s from the server time"
    assert rest_request_error(SECRET, "POST", path, query, REST_BODY, NOW + 601) == stale
    assert rest_request_error(SECRET, "POST", path, query, REST_BODY, NOW - 601) == stale


def test_rest_huge_timestamp_is_an_error_not_an_exception() -> None:
    """auth_timestamp=1 followed by 400 zeros parses as int but overflows float arithmetic."""
    query = [(k, "1" + "0" * 400 if k == "auth_timestamp" else v) for k, v in rest_query()]
    error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
    assert error is not None


def test_rest_body_md5_mismatch() -> None:
    error = rest_request_error(
        SECRET, "POST", "/apps/3/events", rest_query(), REST_BODY + b" ", NOW
    )
    assert error == "body_md5 does not match the request body"


def test_rest_body_without_body_md5() -> None:
    query = [(k, v) for k, v in rest_query() if k != "body_md5"]
    error = rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW)
    assert error == "body_md5 does not match the request body"


def test_rest_get_with_empty_body_md5_like_the_python_sdk() -> None:
    query = [
        ("auth_key", KEY),
        ("auth_timestamp", "1353088179"),
        ("auth_version", "1.0"),
        ("body_md5", EMPTY_MD5),
    ]
    signature = sign(SECRET, rest_string_to_sign("GET", "/apps/3/channels", query))
    query.append(("auth_signature", signature))
    assert rest_request_error(SECRET, "GET", "/apps/3/channels", query, b"", NOW) is None
    assert EMPTY_MD5 == "d41d8cd98f00b204e9800998ecf8427e"


def test_rest_get_without_body_md5() -> None:
    query = [("auth_key", KEY), ("auth_timestamp", "1353088179"), ("auth_version", "1.0")]
    signature = sign(SECRET, rest_string_to_sign("GET", "/apps/3/channels", query))
    query.append(("auth_signature", signature))
    assert rest_request_error(SECRET, "GET", "/apps/3/channels", query, b"", NOW) is None


def test_rest_parameter_names_are_case_insensitive() -> None:
    query = [(k.upper(), v) for k, v in REST_QUERY]
    query.append(("AUTH_SIGNATURE", REST_SIG))
    assert rest_request_error(SECRET, "POST", "/apps/3/events", query, REST_BODY, NOW) is None
