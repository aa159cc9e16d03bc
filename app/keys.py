"""Application keys every layer may read, with no domain imports (the domain's own keys live in resources.py)."""
from __future__ import annotations

import asyncpg
from aiohttp import web
from arq.connections import ArqRedis

from app.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", ArqRedis)
