"""dmc: the DM compute-node agent.

It must stay importable without the daemon's server-only dependencies
(aiohttp-session, SQLAlchemy, jinja2, ...) so the single binary stays small.
"""

__version__ = "0.1.0"
