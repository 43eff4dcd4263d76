import base58
from hypothesis import given
from hypothesis import strategies as st

from order_engine.venues.signatures import SIGNATURE_BYTES, b58encode


@given(st.binary(max_size=80))
def test_encodes_as_the_base58_package_does(data: bytes) -> None:
    assert b58encode(data) == base58.b58encode(data).decode()


@given(st.integers(min_value=0, max_value=SIGNATURE_BYTES), st.binary(max_size=SIGNATURE_BYTES))
def test_leading_zero_bytes_are_leading_ones(zeros: int, rest: bytes) -> None:
    data = bytes(zeros) + rest
    assert b58encode(data) == base58.b58encode(data).decode()
