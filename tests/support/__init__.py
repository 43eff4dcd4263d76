"""What the tests share, one module per kind; `tests/conftest.py` turns it into fixtures.

- factories: settings and orders as tests make them.
- clients: a test server's clients (POST an order, watch it on a WebSocket).
- engines: an Engine wired from its parts and driven without HTTP.
- faulty_store: a real store that fails, or holds, the calls a test chooses.
- services: PostgreSQL and Redis, and skipping (failing under CI) when one is missing.
- processes: the one launcher of server processes, shared with the benchmark (no pytest).
- proxy: a TCP proxy to cut a real server off and restore it.
"""
