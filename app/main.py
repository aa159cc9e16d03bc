"""create_app(): every route is registered here, by name."""
from __future__ import annotations

from aiohttp import web

from app import auth, errors, resources, security
from app.api import system
from app.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            errors.error_middleware,
            security.cors_preflight_middleware,
            security.auth_throttle_middleware,
            auth.auth_middleware,
        ],
    )
    app[resources.SETTINGS] = settings
    security.setup(app)  # security headers on every response, the failed-auth throttle
    app.cleanup_ctx.extend([resources.database_ctx, resources.redis_ctx])

    r = app.router
    # --- service -------------------------------------------------------------------------------
    r.add_get("/healthz", system.healthz, name="healthz")
    r.add_route("*", "/api/v2/status", system.status, name="status")

    # --- hosts and fleet (issue 2) ---------------------------------------------------------------

    # --- profiles --------------------------------------------------------------------------------

    # --- repositories, snapshots, environments (issue 3) -----------------------------------------

    # --- tasks, queues, operators (issue 4) ------------------------------------------------------

    return app
