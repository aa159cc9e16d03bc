"""create_app(): every route is registered here, by name."""
from __future__ import annotations

from aiohttp import web

from app import auth, errors, logs, metrics, openapi, resources
from app.api import system
from app.api import tasks as tasks_api
from app.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[logs.request_middleware, errors.error_middleware, auth.auth_middleware],
    )
    app[resources.SETTINGS] = settings
    app.cleanup_ctx.extend([resources.database_ctx, resources.redis_ctx])
    app.on_response_prepare.append(logs.add_request_id_header)
    if settings.metrics_port:
        app.cleanup_ctx.append(metrics.private_metrics_ctx(app))

    r = app.router
    # --- service -------------------------------------------------------------------------------
    r.add_get("/healthz", system.healthz, name="healthz")
    r.add_route("*", "/api/v2/status", system.status, name="status")

    # --- hosts and fleet (issue 2) ---------------------------------------------------------------

    # --- profiles --------------------------------------------------------------------------------

    # --- repositories, snapshots, environments (issue 3) -----------------------------------------

    # --- tasks, queues, operators (issue 4) ------------------------------------------------------
    # Trailing slash optional (§1.1): each path is registered in both forms, the second named *_slash.
    for method, path, handler, name in (
        ("GET", "/api/v2/tasks", tasks_api.list_all, "tasks"),
        ("GET", "/api/v2/tasks/running", tasks_api.list_running, "tasks_running"),
        ("GET", "/api/v2/tasks/queued", tasks_api.list_queued, "tasks_queued"),
        ("GET", "/api/v2/tasks/scheduled", tasks_api.list_scheduled, "tasks_scheduled"),
        ("POST", "/api/v2/tasks/scheduled", tasks_api.create_schedule, "tasks_scheduled_create"),
        ("GET", "/api/v2/tasks/done", tasks_api.list_done, "tasks_done"),
        ("POST", "/api/v2/task/schedule", tasks_api.create_schedule, "task_schedule"),
        ("GET", "/api/v2/task/{id}", tasks_api.get_task, "task"),
        ("POST", "/api/v2/task/{id}/stop", tasks_api.stop_task, "task_stop"),
        ("POST", "/api/v2/task/{id}/enable", tasks_api.enable_task, "task_enable"),
        ("POST", "/api/v2/task/{id}/disable", tasks_api.disable_task, "task_disable"),
        ("DELETE", "/api/v2/task/{id}/delete", tasks_api.delete_task, "task_delete"),
        ("GET", "/api/v2/queues", tasks_api.get_queues, "queues"),
    ):
        r.add_route(method, path, handler, name=name)
        r.add_route(method, path + "/", handler, name=f"{name}_slash")
    r.add_get("/api/v2/openapi.json", openapi.openapi_json, name="openapi")
    r.add_get("/api/docs", openapi.docs_page, name="api_docs")
    if not settings.metrics_port:  # else served on the private port only
        r.add_get("/metrics", metrics.metrics_handler, name="metrics")

    return app
