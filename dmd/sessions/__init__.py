"""Browser sessions through aiohttp-session: memory (default), Redis or Memcached."""

from dmd.sessions.factory import SESSION_COOKIE, make_storage

__all__ = ["SESSION_COOKIE", "make_storage"]
