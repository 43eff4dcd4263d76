"""The connection gate: who is admitted, counted under which address, and given back."""

from __future__ import annotations

import ipaddress

import pytest

from order_engine.config import LimitSettings
from order_engine.serving.gate import ConnectionGate, Refusal, Ticket, descriptor_budget


def admitted(gate: ConnectionGate, host: str) -> Ticket:
    ticket = gate.admit((host, 40000))
    assert isinstance(ticket, Ticket), ticket
    return ticket


def test_each_address_has_its_own_places() -> None:
    gate = ConnectionGate(per_address=2, total=0)
    first = [admitted(gate, "10.0.0.1") for _ in range(2)]
    assert gate.admit(("10.0.0.1", 1)) is Refusal.PER_ADDRESS
    admitted(gate, "10.0.0.2")
    gate.release(first[0])
    gate.release(first[0])  # released once only: a second call changes nothing
    admitted(gate, "10.0.0.1")
    assert gate.admit(("10.0.0.1", 1)) is Refusal.PER_ADDRESS
    assert len(gate) == 3


def test_the_total_is_checked_first_and_counts_everyone() -> None:
    gate = ConnectionGate(per_address=1, total=2, exempt=[ipaddress.ip_network("10.0.0.9")])
    admitted(gate, "10.0.0.9")
    admitted(gate, "10.0.0.1")
    assert gate.admit(("10.0.0.3", 1)) is Refusal.TOTAL
    assert gate.admit(("10.0.0.9", 1)) is Refusal.TOTAL  # exempt per address only


def test_an_upgraded_connection_leaves_its_address_but_not_the_total() -> None:
    gate = ConnectionGate(per_address=1, total=0)
    ticket = admitted(gate, "10.0.0.1")
    gate.leave_address(ticket)
    assert gate.count("10.0.0.1") == 0
    second = admitted(gate, "10.0.0.1")
    assert len(gate) == 2
    gate.release(ticket)
    gate.release(second)
    assert (len(gate), gate.count("10.0.0.1")) == (0, 0)


def test_an_ipv4_client_on_a_dual_stack_socket_is_the_same_address() -> None:
    gate = ConnectionGate(per_address=1, total=0)
    admitted(gate, "192.0.2.7")
    assert gate.admit(("::ffff:192.0.2.7", 1, 0, 0)) is Refusal.PER_ADDRESS


def test_peers_without_an_ip_address_are_capped_in_the_total_only() -> None:
    gate = ConnectionGate(per_address=1, total=3)
    for peer in (None, "", None):  # a Unix socket's peer
        assert isinstance(gate.admit(peer), Ticket)
    assert gate.admit(None) is Refusal.TOTAL


def test_behind_a_trusted_proxy_nobody_listed_means_every_peer_is_spared() -> None:
    """With trust_forwarded_for the peers are proxies: capping one caps all its clients."""
    behind = LimitSettings(trust_forwarded_for=True, connections_per_address=1)
    gate = ConnectionGate.from_settings(behind)
    for _ in range(3):
        admitted(gate, "10.0.0.1")
    listed = LimitSettings(
        trust_forwarded_for=True, connections_per_address=1, connections_exempt=("10.0.0.0/24",)
    )
    gate = ConnectionGate.from_settings(listed)
    for _ in range(3):
        admitted(gate, "10.0.0.1")
    admitted(gate, "192.0.2.1")
    assert gate.admit(("192.0.2.1", 1)) is Refusal.PER_ADDRESS


def test_the_default_total_leaves_file_descriptors_spare() -> None:
    resource = pytest.importorskip("resource")  # not on Windows
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    gate = ConnectionGate.from_settings(LimitSettings(max_connections=0))
    assert gate.limits[1] == descriptor_budget()
    if soft != resource.RLIM_INFINITY:
        assert 0 < gate.limits[1] <= soft - 64
    assert ConnectionGate.from_settings(LimitSettings(max_connections=5)).limits[1] == 5
