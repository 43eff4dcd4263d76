"""Old path of `tests.support.services` (and `free_port`, now in `tests.support.processes`),
kept only for the store tests until they import from there; nothing else may import it."""

from tests.support.processes import free_port
from tests.support.services import (
    POSTGRES_URL,
    REDIS_HOST,
    REDIS_PORT,
    REQUIRE_SERVICES,
    postgres_schema,
    require_postgres,
    require_redis,
    require_server,
)

__all__ = [
    "POSTGRES_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REQUIRE_SERVICES",
    "free_port",
    "postgres_schema",
    "require_postgres",
    "require_redis",
    "require_server",
]
