"""How many connections are open, per peer address and in all: the count a new connection
is admitted or refused by, before it may read a byte of a request."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from order_engine.config import LimitSettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Peer addresses whose key is remembered, at most (forgotten all at once past it).
_KEYS_REMEMBERED = 4096


def descriptor_budget() -> int:
    """The connections the process's open-file limit leaves room for, a tenth of it (at least
    64) kept for the rest (the store, Redis, logs, the chain service); 0 (no cap) where the
    limit is unknown or infinite: beyond it accept() fails, and asyncio stops accepting
    anyone for a while."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 0
    return max(soft - max(64, soft // 10), 1)


class Refusal(Enum):
    PER_ADDRESS = "per_address"
    TOTAL = "total"


@dataclass(slots=True)
class Ticket:
    """One admitted connection's place: `address` is None once it no longer counts against
    its address (exempt, or upgraded to a WebSocket)."""

    address: str | None
    open: bool = True


class ConnectionGate:
    """`per_address`, `total`: 0 = no cap. `exempt`: peers the per-address cap spares."""

    def __init__(self, per_address: int, total: int, exempt: Iterable[Network] = ()) -> None:
        self._per_address = per_address
        self._total = total
        self._exempt = tuple(exempt)
        self._counts: dict[str, int] = {}
        self._keys: dict[Any, str | None] = {}  # peer host -> the key it counts under
        self._open = 0

    @classmethod
    def from_settings(cls, limits: LimitSettings) -> ConnectionGate:
        exempt = [ipaddress.ip_network(entry, strict=False) for entry in limits.connections_exempt]
        per_address = limits.connections_per_address
        if limits.trust_forwarded_for and not exempt:
            # Every peer is taken for a proxy then: capping one would cap all its clients.
            per_address = 0
        return cls(per_address, limits.max_connections or descriptor_budget(), exempt)

    @property
    def limits(self) -> tuple[int, int]:
        return self._per_address, self._total

    def __len__(self) -> int:
        return self._open

    def count(self, address: str) -> int:
        return self._counts.get(address, 0)

    def admit(self, peer: Any) -> Ticket | Refusal:
        """`peer`: the transport's peername (a tuple for TCP, else anything)."""
        if self._total and self._open >= self._total:
            return Refusal.TOTAL
        address = self._capped_address(peer)
        if address is not None:
            count = self._counts.get(address, 0)
            if count >= self._per_address:
                return Refusal.PER_ADDRESS
            self._counts[address] = count + 1
        self._open += 1
        return Ticket(address)

    def leave_address(self, ticket: Ticket) -> None:
        """The connection stays open but no longer counts against its address."""
        address, ticket.address = ticket.address, None
        if address is not None:
            left = self._counts[address] - 1
            if left:
                self._counts[address] = left
            else:
                del self._counts[address]

    def release(self, ticket: Ticket) -> None:
        if ticket.open:
            ticket.open = False
            self.leave_address(ticket)
            self._open -= 1

    def _capped_address(self, peer: Any) -> str | None:
        """The address the per-address cap counts `peer` under, None when none applies."""
        if not self._per_address:
            return None
        if not isinstance(peer, tuple) or not peer:  # a Unix socket: no address to count
            return None
        host = peer[0]
        if host in self._keys:
            return self._keys[host]
        if len(self._keys) >= _KEYS_REMEMBERED:
            self._keys.clear()
        key = self._keys[host] = self._key_of(host)
        return key

    def _key_of(self, host: Any) -> str | None:
        # Parsed once per address, not per connection: clients that connect per order
        # (a WebSocket each) made this a visible share of a connection's cost.
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket's IPv4 peer is the same client
        if any(ip in network for network in self._exempt):
            return None
        return str(ip)
