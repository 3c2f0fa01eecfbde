"""The start-up line that tells a newcomer how to stop the server and point pusher-js at it."""

from __future__ import annotations

from collections.abc import Sequence

# Addresses that mean "every interface": a browser cannot connect to them, but one on this
# machine reaches the server through the loopback address.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def client_hint(host: str, port: int, tls: bool, app_keys: Sequence[str]) -> str:
    """``stop with Ctrl-C; pusher-js: new Pusher('KEY', {...})`` for this address.

    The key is quoted only when there is exactly one app (keys are public, unlike secrets);
    with several, the reader picks one."""
    if host in WILDCARD_HOSTS:
        ws_host = "127.0.0.1"
        where = " (from another machine, use this machine's address as wsHost)"
    else:
        # pusher-js joins host and port with ':', so an IPv6 address needs its brackets.
        ws_host = f"[{host}]" if ":" in host else host
        where = ""
    key = f"'{app_keys[0]}'" if len(app_keys) == 1 else "'<app key>'"
    options = (
        f"wsHost: '{ws_host}', wsPort: {port}, forceTLS: {'true' if tls else 'false'}, "
        "cluster: 'local'"
    )
    return (
        f"stop with Ctrl-C (SIGINT) or SIGTERM; pusher-js: new Pusher({key}, {{{options}}}){where}"
    )
