"""Redis access. The only module of Vigil that imports redis."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vigil.errors import Unavailable


class RedisConnection:
    """A client for the configured Redis."""

    def __init__(self, url: str) -> None:
        self.client: Redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    async def ping(self) -> None:
        """Raise :class:`Unavailable` unless Redis answers."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable("redis unavailable") from exc

    async def close(self) -> None:
        await self.client.aclose()
