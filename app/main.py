"""create_app(): every route is registered here, by name."""
from __future__ import annotations

from aiohttp import web

from app import auth, errors, resources
from app.api import system
from app.dashboard import setup as dashboard_setup, views as dash
from app.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors.error_middleware, auth.auth_middleware],
    )
    app[resources.SETTINGS] = settings
    app.cleanup_ctx.extend([resources.database_ctx, resources.redis_ctx])

    r = app.router
    # --- service -------------------------------------------------------------------------------
    r.add_get("/healthz", system.healthz, name="healthz")
    r.add_route("*", "/api/v2/status", system.status, name="status")

    # --- hosts and fleet (issue 2) ---------------------------------------------------------------

    # --- profiles --------------------------------------------------------------------------------

    # --- repositories, snapshots, environments (issue 3) -----------------------------------------

    # --- tasks, queues, operators (issue 4) ------------------------------------------------------

    # --- web dashboard (issue 4): pages need a session cookie, /ui/ are their live fragments ------
    dashboard_setup.setup_templates(app)
    r.add_static("/static/", dashboard_setup.STATIC, name="static")
    r.add_get("/login", dash.login_page, name="dash_login")
    r.add_post("/login", dash.login_submit, name="dash_login_submit")
    r.add_post("/logout", dash.logout, name="dash_logout")
    r.add_get("/", dash.overview, name="dash_overview")
    r.add_get("/tasks", dash.tasks_page, name="dash_tasks")
    r.add_get("/tasks/{id}", dash.task_page, name="dash_task")
    r.add_post("/tasks/{id}/stop", dash.task_stop, name="dash_task_stop")
    r.add_get("/hosts", dash.hosts_page, name="dash_hosts")
    r.add_get("/hosts/{id}", dash.host_page, name="dash_host")
    r.add_get("/repos", dash.repos_page, name="dash_repos")
    r.add_get("/repos/{id}", dash.repo_page, name="dash_repo")
    r.add_get("/ui/overview", dash.ui_overview, name="ui_overview")
    r.add_get("/ui/tasks", dash.ui_tasks, name="ui_tasks")

    return app
