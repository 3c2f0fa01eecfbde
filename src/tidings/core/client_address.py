"""Which address a connection comes from, when some peers are trusted reverse proxies.

A proxy's own address says nothing about its clients; it names them in a header such as
``X-Forwarded-For: client, proxy1, proxy2``. Anyone can send that header, so it is read
only when the peer is a trusted proxy, and then from the right: each trusted proxy
appends the address it received from, so the first untrusted address from the right is
the nearest one that no trusted party vouches past. Entries left of it may be forged.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

Network = IPv4Network | IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks (``10.0.0.0/8``, ``::1``); ValueError names a bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def normalize(address: str) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), None if not one."""
    try:
        parsed = ip_address(address.strip().split("%", 1)[0])  # drop an IPv6 zone
    except ValueError:
        return None
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


class TrustedProxies:
    """Peers whose forwarded-for header is believed."""

    __slots__ = ("networks",)

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str) -> bool:
        try:
            parsed = ip_address(address)
        except ValueError:
            return False
        return any(parsed in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client of a request from ``peer`` (a normalized address) that carried
        ``forwarded_for`` (the header's values joined with commas; empty if absent).

        Not trusted, or no usable entry: the peer itself. An entry that is not an address
        ends the walk (whatever is left of it cannot be placed)."""
        client = peer
        if not self.trusts(peer):
            return client
        for entry in reversed(forwarded_for.split(",")):
            address = normalize(entry)
            if address is None:
                break
            client = address
            if not self.trusts(address):
                break
        return client
