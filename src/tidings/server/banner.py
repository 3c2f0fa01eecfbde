"""The start-up line that tells a newcomer how to stop the server and point pusher-js at it."""

from __future__ import annotations

from collections.abc import Sequence

# Addresses that mean "every interface": a browser cannot connect to them, but one on this
# machine reaches the server through the loopback address.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


# pusher-js's own default httpPath; another one must be given to it.
PUSHER_JS_HTTP_PATH = "/pusher"


def client_hint(
    host: str, port: int, tls: bool, app_keys: Sequence[str], http_path: str = PUSHER_JS_HTTP_PATH
) -> str:
    """``stop with Ctrl-C; pusher-js: new Pusher('KEY', {...})`` for this address.

    The key is quoted only when there is exactly one app (keys are public, unlike secrets);
    with several, the reader picks one. httpHost and httpPort are there because pusher-js
    sends its HTTP fallback to Pusher's own hosts without them."""
    if host in WILDCARD_HOSTS:
        ws_host = "127.0.0.1"
        where = " (from another machine, use this machine's address as wsHost and httpHost)"
    else:
        # pusher-js joins host and port with ':', so an IPv6 address needs its brackets.
        ws_host = f"[{host}]" if ":" in host else host
        where = ""
    key = f"'{app_keys[0]}'" if len(app_keys) == 1 else "'<app key>'"
    options = (
        f"wsHost: '{ws_host}', wsPort: {port}, forceTLS: {'true' if tls else 'false'}, "
        f"httpHost: '{ws_host}', httpPort: {port}, "
    )
    if http_path != PUSHER_JS_HTTP_PATH:
        options += f"httpPath: '{http_path}', "
    options += "cluster: 'local'"
    return (
        f"stop with Ctrl-C (SIGINT) or SIGTERM; pusher-js: new Pusher({key}, {{{options}}}){where}"
    )
