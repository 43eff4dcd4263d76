"""Old path of `tests.support.proxy`, kept only for the store outage tests until they import
it from there; nothing else may import it."""

from tests.support.proxy import TcpProxy

__all__ = ["TcpProxy"]
