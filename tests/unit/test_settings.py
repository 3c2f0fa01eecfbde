"""config.py: load_settings from file, environment and flags; every bad value named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tidings.config import DEV_APP, ConfigError, Settings, load_settings, parse_app_spec
from tidings.core.apps import HistoryRule

SECRET = "s3cr3t-value"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    return path


def config_error(
    config: Path | None = None,
    env: dict[str, str] | None = None,
    flags: dict[str, Any] | None = None,
) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env if env is not None else {}, flags)
    return str(caught.value)


# -- defaults and precedence --------------------------------------------------------------


def test_defaults_with_the_dev_app() -> None:
    settings = load_settings(None, {})
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 6001, "info")
    assert (settings.activity_timeout, settings.pong_timeout) == (120.0, 30.0)
    assert (settings.max_connections, settings.max_write_buffer) == (100_000, 1048576)
    assert (settings.max_request_body, settings.shutdown_timeout) == (262144, 10.0)
    assert [a.model_dump(include={"id", "key", "secret"}) for a in settings.apps] == [DEV_APP]
    assert settings.uses_dev_app


def test_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
port = 7000
activity_timeout = 60
log_level = "debug"

[[apps]]
id = "1"
key = "k1"
secret = "{SECRET}"
client_events = false
subscription_count = true
allowed_origins = ["https://a.example"]
""",
    )
    settings = load_settings(path, {})
    assert (settings.port, settings.activity_timeout, settings.log_level) == (7000, 60.0, "debug")
    [app] = settings.apps
    assert app.to_app().secret == SECRET
    assert app.to_app().client_events is False
    assert app.to_app().subscription_count is True
    assert app.to_app().allowed_origins == ("https://a.example",)
    assert not settings.uses_dev_app


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 7000\nhost = "0.0.0.0"\npong_timeout = 5\n')
    env = {"TIDINGS_PORT": "7001", "TIDINGS_PONG_TIMEOUT": "6"}
    settings = load_settings(path, env, {"port": 7002, "host": None})
    assert settings.port == 7002  # flag beats env beats file
    assert settings.pong_timeout == 6.0  # env beats file
    assert settings.host == "0.0.0.0"  # a flag left unset (None) does not override


def test_env_empty_string_is_unset(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7000\n")
    assert load_settings(path, {"TIDINGS_PORT": ""}).port == 7000


def test_tidings_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 7005\n")
    assert load_settings(None, {"TIDINGS_CONFIG": str(path)}).port == 7005


def test_apps_env_replaces_file_apps_and_flags_replace_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[[apps]]\nid = "1"\nkey = "file-key"\nsecret = "x"\n')
    env = {"TIDINGS_APPS": "2:env-key:a, 3:env-key3:b:with:colons"}
    settings = load_settings(path, env)
    assert [(a.id, a.key, a.secret) for a in settings.apps] == [
        ("2", "env-key", "a"),
        ("3", "env-key3", "b:with:colons"),
    ]
    settings = load_settings(path, env, {"apps": ("4:flag-key:c",)})
    assert [(a.id, a.key) for a in settings.apps] == [("4", "flag-key")]
    # An empty tuple of --app flags leaves the env apps alone.
    assert [a.id for a in load_settings(path, env, {"apps": ()}).apps] == ["2", "3"]


def test_parse_app_spec() -> None:
    assert parse_app_spec("1:k:s:t") == {"id": "1", "key": "k", "secret": "s:t"}


# -- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "setting", "value"),
    [
        ({"TIDINGS_PORT": "abc"}, "port", "'abc'"),
        ({"TIDINGS_PORT": "70000"}, "port", "'70000'"),
        ({"TIDINGS_PORT": "-1"}, "port", "'-1'"),
        ({"TIDINGS_ACTIVITY_TIMEOUT": "0"}, "activity_timeout", "'0'"),
        ({"TIDINGS_ACTIVITY_TIMEOUT": "never"}, "activity_timeout", "'never'"),
        ({"TIDINGS_PONG_TIMEOUT": "99999"}, "pong_timeout", "'99999'"),
        ({"TIDINGS_MAX_CONNECTIONS": "0"}, "max_connections", "'0'"),
        ({"TIDINGS_MAX_WRITE_BUFFER": "10"}, "max_write_buffer", "'10'"),
        ({"TIDINGS_MAX_REQUEST_BODY": "1.5"}, "max_request_body", "'1.5'"),
        ({"TIDINGS_SHUTDOWN_TIMEOUT": "-3"}, "shutdown_timeout", "'-3'"),
        ({"TIDINGS_LOG_LEVEL": "loud"}, "log_level", "'loud'"),
        ({"TIDINGS_REQUEST_HEADER_TIMEOUT": "0"}, "request_header_timeout", "'0'"),
        ({"TIDINGS_REQUEST_BODY_TIMEOUT": "-1"}, "request_body_timeout", "'-1'"),
        ({"TIDINGS_KEEPALIVE_TIMEOUT": "0"}, "keepalive_timeout", "'0'"),
        ({"TIDINGS_MAX_PENDING_CONNECTIONS": "0"}, "max_pending_connections", "'0'"),
        ({"TIDINGS_MAX_CONNECTIONS_PER_IP": "-1"}, "max_connections_per_ip", "'-1'"),
        ({"TIDINGS_CLIENT_IP_HEADER": "X Forwarded"}, "client_ip_header", "'X Forwarded'"),
    ],
)
def test_bad_env_values(env: dict[str, str], setting: str, value: str) -> None:
    message = config_error(env=env)
    assert f"setting {setting}:" in message
    assert f"(got {value})" in message


@pytest.mark.parametrize(
    ("flags", "setting", "value"),
    [
        ({"port": 70000}, "port", "70000"),
        ({"port": "abc"}, "port", "'abc'"),
        ({"activity_timeout": -1.0}, "activity_timeout", "-1.0"),
        ({"log_level": "verbose"}, "log_level", "'verbose'"),
    ],
)
def test_bad_flag_values(flags: dict[str, Any], setting: str, value: str) -> None:
    message = config_error(flags=flags)
    assert f"setting {setting}:" in message and f"(got {value})" in message


def test_slow_client_defaults() -> None:
    settings = load_settings(None, {})
    assert (settings.request_header_timeout, settings.request_body_timeout) == (20.0, 30.0)
    assert (settings.keepalive_timeout, settings.max_pending_connections) == (75.0, 4096)
    assert (settings.max_connections_per_ip, settings.trusted_proxies) == (0, ())
    assert settings.client_ip_header == "X-Forwarded-For"


def test_trusted_proxies_from_env_flag_and_file(tmp_path: Path) -> None:
    env = {"TIDINGS_TRUSTED_PROXIES": "10.0.0.0/8, ::1,"}
    assert load_settings(None, env).trusted_proxies == ("10.0.0.0/8", "::1")
    flags = {"trusted_proxies": "192.168.0.1"}
    assert load_settings(None, env, flags).trusted_proxies == ("192.168.0.1",)
    path = write(tmp_path, 'trusted_proxies = ["172.16.0.0/12"]\n')
    assert load_settings(path, {}).trusted_proxies == ("172.16.0.0/12",)


def test_bad_trusted_proxy_is_named() -> None:
    message = config_error(env={"TIDINGS_TRUSTED_PROXIES": "10.0.0.1,proxy.local"})
    assert "setting trusted_proxies:" in message and "'proxy.local'" in message


def test_bad_file_values(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "abc"\n')
    message = config_error(path)
    assert "setting port:" in message and "(got 'abc')" in message


def test_unknown_top_level_setting(tmp_path: Path) -> None:
    # Named, but its value not shown: an unknown setting may be a misspelt secret.
    message = config_error(write(tmp_path, "prot = 6001\n"))
    assert "setting prot:" in message and "(value not shown)" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert config_error(missing) == f"config file {str(missing)!r} not found"


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "port = \n")
    assert config_error(path).startswith(f"config file {str(path)!r} is not valid TOML:")


def app_file(tmp_path: Path, extra: str, secret: str = SECRET, second: str = "") -> Path:
    return write(
        tmp_path,
        f'[[apps]]\nid = "app1"\nkey = "k1"\nsecret = "{secret}"\n{extra}\n{second}',
    )


@pytest.mark.parametrize(
    ("extra", "location", "shown"),
    [
        ("max_connections = 0", "apps[app1].max_connections", "(got 0)"),
        ('max_connections = "many"', "apps[app1].max_connections", "(got 'many')"),
        ("max_message_bytes = 10", "apps[app1].max_message_bytes", "(got 10)"),
        ("max_event_payload_bytes = 0", "apps[app1].max_event_payload_bytes", "(got 0)"),
        ("cache_ttl = 0", "apps[app1].cache_ttl", "(got 0)"),
        (
            "authorized_connections_timeout = -1",
            "apps[app1].authorized_connections_timeout",
            "(got -1)",
        ),
        ('client_events = "sometimes"', "apps[app1].client_events", "(got 'sometimes')"),
        ("max_presence_members = 0", "apps[app1].max_presence_members", "(got 0)"),
        ("colour = 1", "apps[app1].colour", "(value not shown)"),
        (f'secrte = "{SECRET}"', "apps[app1].secrte", "(value not shown)"),
    ],
)
def test_bad_app_values(tmp_path: Path, extra: str, location: str, shown: str) -> None:
    message = config_error(app_file(tmp_path, extra))
    assert f"setting {location}:" in message and shown in message
    assert SECRET not in message


def test_history_rules(tmp_path: Path) -> None:
    rules = '[[apps.history]]\npattern = "chat-*"\nsize = 5\n[[apps.history]]\npattern = "*"\n'
    (app,) = load_settings(app_file(tmp_path, rules), {}).apps
    assert [rule.to_rule() for rule in app.history] == [
        HistoryRule("chat-*", 5, 300.0),
        HistoryRule("*", 100, 300.0),
    ]
    assert app.to_app().history_rule("chat-1") == HistoryRule("chat-*", 5, 300.0)


@pytest.mark.parametrize(
    ("rule", "location", "shown"),
    [
        ('pattern = "c"\nsize = 0', "history.0.size", "(got 0)"),
        ('pattern = "c"\nsize = 10001', "history.0.size", "(got 10001)"),
        ('pattern = "c"\nttl = 0.5', "history.0.ttl", "(got 0.5)"),
        ('pattern = "c"\nttl = 86401', "history.0.ttl", "(got 86401)"),
        ('pattern = "a b"', "history.0.pattern", "(got 'a b')"),
        ('pattern = ""', "history.0.pattern", "(got '')"),
        ("size = 5", "history.0.pattern", "required but missing"),
        ('pattern = "c"\nlength = 5', "history.0.length", "(value not shown)"),
    ],
)
def test_bad_history_rules_name_the_setting(
    tmp_path: Path, rule: str, location: str, shown: str
) -> None:
    message = config_error(app_file(tmp_path, f"[[apps.history]]\n{rule}"))
    assert f"setting apps[app1].{location}" in message and shown in message, message
    assert SECRET not in message


def test_app_bad_id_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[apps]]\nid = "a b"\nkey = "k/1"\nsecret = "{SECRET}"\n')
    message = config_error(path)
    assert "setting apps[a b].id:" in message and "(got 'a b')" in message
    assert "setting apps[a b].key:" in message and "(got 'k/1')" in message
    assert SECRET not in message


def test_app_missing_fields(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[[apps]]\nid = "app1"\n'))
    assert "setting apps[app1].key: required but missing" in message
    assert "setting apps[app1].secret: required but missing" in message


def test_empty_secret_is_named_but_not_shown(tmp_path: Path) -> None:
    message = config_error(app_file(tmp_path, "", secret=""))
    assert "setting apps[app1].secret:" in message and "(value not shown)" in message


def test_secret_of_the_wrong_type_is_not_shown(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, '[[apps]]\nid = "a"\nkey = "k"\nsecret = 987654321\n'))
    assert "setting apps[a].secret:" in message and "987654321" not in message


def test_too_long_secret_is_not_shown(tmp_path: Path) -> None:
    long_secret = "q" * 300
    message = config_error(app_file(tmp_path, "", secret=long_secret))
    assert "setting apps[app1].secret:" in message and long_secret not in message


def test_duplicate_app_key(tmp_path: Path) -> None:
    second = '[[apps]]\nid = "app2"\nkey = "k1"\nsecret = "other-secret"\n'
    message = config_error(app_file(tmp_path, "", second=second))
    assert "setting apps:" in message and "key 'k1'" in message
    assert SECRET not in message and "other-secret" not in message


def test_duplicate_app_id_from_env() -> None:
    message = config_error(env={"TIDINGS_APPS": f"1:a:{SECRET},1:b:{SECRET}"})
    assert "setting apps:" in message and "id '1'" in message and SECRET not in message


@pytest.mark.parametrize("spec", ["1:k", f"1::{SECRET}", f":k:{SECRET}"])
def test_bad_app_spec_flag(spec: str) -> None:
    message = config_error(flags={"apps": (spec,)})
    assert message.startswith("invalid app:") and "expected ID:KEY:SECRET" in message
    assert SECRET not in message


def test_trailing_colon_belongs_to_the_secret() -> None:
    [app] = load_settings(None, {}, {"apps": (f"1:k:{SECRET}:",)}).apps
    assert app.secret == f"{SECRET}:"


def test_bad_app_spec_env_with_empty_secret() -> None:
    assert (
        config_error(env={"TIDINGS_APPS": "1:k:"})
        == "invalid app: expected ID:KEY:SECRET (value not shown)"
    )


def test_env_app_secret_with_a_comma_is_not_echoed() -> None:
    """A comma inside a secret splits TIDINGS_APPS; the error must not print the secret's tail."""
    message = config_error(env={"TIDINGS_APPS": "1:k:first-half,second-half"})
    assert "second-half" not in message


def test_app_written_as_a_spec_string_in_toml_is_not_echoed(tmp_path: Path) -> None:
    """apps = ["id:key:secret"] is a plausible mistake; the error must not print the secret."""
    message = config_error(write(tmp_path, f'apps = ["1:k:{SECRET}"]\n'))
    assert "setting apps" in message
    assert SECRET not in message


def test_settings_are_frozen() -> None:
    settings = load_settings(None, {})
    with pytest.raises(ValueError):
        settings.port = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


# -- values that may hold credentials are never quoted ------------------------------------

HOOK = "https://hook-user:hook-pass@example.com/hook?token=hook-token#hook-fragment"
HOOK_SECRETS = ("hook-user", "hook-pass", "hook-token", "hook-fragment", "Bearer")


def webhook_file(tmp_path: Path, webhook: str) -> Path:
    return app_file(tmp_path, f"[[apps.webhooks]]\n{webhook}")


@pytest.mark.parametrize(
    ("webhook", "location", "shown"),
    [
        # A bad field next to the URL: the URL is not quoted at all.
        (f'url = "{HOOK}"\nevent_types = ["nope"]', "webhooks.0.event_types", "nope"),
        (f'url = "{HOOK}"\nretries = "hook-token"', "webhooks.0.retries", "(value not shown)"),
        # A bad URL is quoted without user info, query or fragment.
        (
            'url = "ftp://hook-user:hook-pass@example.com/hook?token=hook-token"',
            "webhooks.0.url",
            "(got 'ftp://example.com/hook')",
        ),
        (
            'url = "http://hook-user:hook-pass@example.com:99999/hook?token=hook-token"',
            "webhooks.0.url",
            "(value not shown)",
        ),
        (f'url = "{HOOK}"\nheaders = "Authorization: Bearer x"', "webhooks.0.headers", "not shown"),
        (
            f'url = "{HOOK}"\nheaders = {{ Authorization = ["Bearer x"] }}',
            "webhooks.0.headers.Authorization",
            "(value not shown)",
        ),
    ],
)
def test_webhook_errors_never_quote_credentials(
    tmp_path: Path, webhook: str, location: str, shown: str
) -> None:
    message = config_error(webhook_file(tmp_path, webhook))
    assert f"setting apps[app1].{location}:" in message and shown in message, message
    for secret in (*HOOK_SECRETS, SECRET):
        assert secret not in message, (secret, message)


def test_webhook_url_must_parse(tmp_path: Path) -> None:
    for url in ("http://[::1/hook", "https:///hook", "http://example.com:port/x"):
        message = config_error(webhook_file(tmp_path, f'url = "{url}"'))
        assert "setting apps[app1].webhooks.0.url: not a valid" in message, message


def test_bad_redis_url_is_quoted_without_its_password(tmp_path: Path) -> None:
    message = config_error(write(tmp_path, 'redis = "http://:redis-pass@127.0.0.1:6379/0"\n'))
    assert "setting redis:" in message and "(got 'http://127.0.0.1:6379/0')" in message
    assert "redis-pass" not in message
    message = config_error(flags={"redis": "tcp://user:redis-pass@h/0"})
    assert "setting redis:" in message and "redis-pass" not in message


def test_redis_cluster_is_redis_with_a_cluster_url(tmp_path: Path) -> None:
    flags = {"redis_cluster": "redis://10.0.0.5:7000"}
    assert load_settings(None, {}, flags).redis == "redis+cluster://10.0.0.5:7000"
    env = {"TIDINGS_REDIS_CLUSTER": "rediss://u:pw@10.0.0.5:7000"}
    assert load_settings(None, env).redis == "rediss+cluster://u:pw@10.0.0.5:7000"
    path = write(tmp_path, 'redis = "redis+cluster://10.0.0.5:7000"\n')
    assert load_settings(path, {}).redis == "redis+cluster://10.0.0.5:7000"


def test_redis_and_redis_cluster_together_are_refused() -> None:
    flags = {"redis": "redis://10.0.0.5:6379/0", "redis_cluster": "redis://10.0.0.6:7000"}
    assert "give one of them" in config_error(flags=flags)


def test_a_setting_on_by_default_is_switched_off_by_its_no_flag(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text("lean_rest = true\ndebug = true\n")
    assert load_settings(None, {}).lean_rest is True
    # --no-lean-rest passes False: it wins over the file and the environment.
    env = {"TIDINGS_LEAN_REST": "true"}
    assert load_settings(path, env, {"lean_rest": False}).lean_rest is False
    assert load_settings(path, {"TIDINGS_LEAN_REST": "false"}).lean_rest is False
    # An on-flag not given (False) leaves the file's value alone.
    assert load_settings(path, {}, {"debug": False}).debug is True
