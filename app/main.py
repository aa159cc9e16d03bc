"""create_app(): every route is registered here, by name."""
from __future__ import annotations

from aiohttp import web

from app import auth, errors, logs, metrics, openapi, reports_counter, resources, security
from app.agents import channel as agent_channel, hub as agent_hub
from app.dashboard import account, admin_users, profiles as dash_profiles
from app.keys import SETTINGS
from app.api import environments, hosts, pool as pool_api, profiles, published, snapshots, system, users as users_api
from app.api import agents as agents_api
from app.api import repos as repos_api
from app.api import sources as sources_api
from app.api import tasks as tasks_api
from app.dashboard import fleet as dash_fleet, repos as dash_repos, setup as dashboard_setup, views as dash
from app.dashboard import sources as dash_sources
from app.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            logs.request_middleware,
            errors.error_middleware,
            security.cors_preflight_middleware,
            security.auth_throttle_middleware,
            auth.auth_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[auth.HOST_CACHE] = auth.HostCredentialCache(settings.host_auth_cache_seconds)
    app[auth.HOST_LOOKUPS] = auth.HostLookups(settings.intake_max_group, settings.intake_max_inflight)
    security.setup(app)  # security headers on every response, the failed-auth throttle
    app.cleanup_ctx.extend([resources.database_ctx, resources.redis_ctx, agent_hub.hub_ctx])
    app.on_shutdown.append(agent_hub.close_sockets)  # the server waits for every socket's handler to end
    reports_counter.setup(app, settings.queue_name)  # host reports per minute, fleet-wide, in Redis (after redis_ctx)
    app.on_response_prepare.append(logs.add_request_id_header)
    if settings.metrics_port:
        app.cleanup_ctx.append(metrics.private_metrics_ctx(app))

    r = app.router

    def both(method: str, path: str, handler, name: str) -> None:
        """API routes answer with and without a trailing slash."""
        r.add_route(method, path, handler, name=name)
        r.add_route(method, path + "/", handler, name=name + "_slash")

    # --- service -------------------------------------------------------------------------------
    r.add_get("/healthz", system.healthz, name="healthz")
    r.add_route("*", "/api/v2/status", system.status, name="status")

    # --- hosts and fleet ---------------------------------------------------------------------------
    # Who may call what: see the docstring of app/api/hosts.py.
    both("POST", "/api/v2/host/registering", hosts.register, "host_register")
    both("DELETE", "/api/v2/host/registering", hosts.unregister, "host_unregister")
    both("PUT", "/api/v2/host/status", hosts.put_status, "host_status")
    both("PUT", "/api/v2/host/packages/installed", hosts.put_installed, "host_installed_put")
    both("PUT", "/api/v2/host/packages/available", hosts.put_available, "host_available_put")
    both("PUT", "/api/v2/host/packages/event", hosts.put_events, "host_events_put")
    both("GET", r"/api/v2/host/{host_id:\d+}", hosts.host_details, "host_details")
    both("GET", r"/api/v2/host/{host_id:\d+}/installed", hosts.host_installed, "host_installed")
    both("GET", r"/api/v2/host/{host_id:\d+}/available", hosts.host_available, "host_available")
    both("GET", r"/api/v2/host/{host_id:\d+}/updates", hosts.host_available, "host_updates")
    both("GET", r"/api/v2/host/{host_id:\d+}/history", hosts.host_history, "host_history")
    both("GET", "/api/v2/hosts", hosts.hosts_list, "hosts")
    both("GET", "/api/v2/hosts/uptodate", hosts.hosts_uptodate, "hosts_uptodate")
    both("GET", "/api/v2/hosts/outdated", hosts.hosts_outdated, "hosts_outdated")
    both("GET", "/api/v2/hosts/os/{value}/{version}", hosts.hosts_filter("os"), "hosts_os_version")
    both("GET", "/api/v2/hosts/os/{value}", hosts.hosts_filter("os"), "hosts_os")
    both("GET", "/api/v2/hosts/kernel/{value}", hosts.hosts_filter("kernel"), "hosts_kernel")
    both("GET", "/api/v2/hosts/arch/{value}", hosts.hosts_filter("arch"), "hosts_arch")
    both("GET", "/api/v2/hosts/profile/{value}", hosts.hosts_filter("profile"), "hosts_profile")
    both("GET", "/api/v2/hosts/environment/{value}", hosts.hosts_filter("environment"), "hosts_environment")
    both("GET", "/api/v2/hosts/package/{value}/{version}", hosts.hosts_package, "hosts_package_version")
    both("GET", "/api/v2/hosts/package/{value}", hosts.hosts_package, "hosts_package")
    both("GET", "/api/v2/hosts/agent/{value}", hosts.hosts_by_agent, "hosts_agent")
    both("GET", "/api/v2/hosts/{filter:os|kernel|arch|profile|environment|package|agent}", hosts.hosts_missing_value,
         "hosts_missing")

    # --- the agent channel: linupdate's agents connect here and take operators' requests -----------
    r.add_get("/ws", agent_channel.websocket, name="agent_ws")
    both("POST", r"/api/v2/host/{host_id:\d+}/requests", agents_api.create_request, "host_request_create")
    both("GET", r"/api/v2/host/{host_id:\d+}/requests", agents_api.host_requests, "host_requests")
    both("POST", "/api/v2/hosts/requests", agents_api.create_requests, "hosts_requests_create")
    both("GET", r"/api/v2/host/requests/{request_id:\d+}", agents_api.get_request, "host_request")
    both("DELETE", r"/api/v2/host/requests/{request_id:\d+}", agents_api.cancel_request, "host_request_cancel")

    # --- profiles --------------------------------------------------------------------------------
    both("GET", "/api/v2/profile", profiles.list_profiles, "profiles")
    both("POST", "/api/v2/profile", profiles.create_profile, "profile_create")
    # Before {name}: routes match in registration order.
    both("GET", "/api/v2/profile/server-settings", profiles.server_settings, "profile_server_settings")
    both("GET", "/api/v2/profile/{name}", profiles.get_profile, "profile")
    both("PUT", "/api/v2/profile/{name}", profiles.update_profile, "profile_update")
    both("DELETE", "/api/v2/profile/{name}", profiles.delete_profile, "profile_delete")
    both("GET", "/api/v2/profile/{name}/excludes", profiles.get_excludes, "profile_excludes")
    both("GET", "/api/v2/profile/{name}/repos", profiles.get_repos, "profile_repos")
    both("PUT", "/api/v2/profile/{name}/repos", repos_api.set_profile_repos, "profile_repos_update")

    # --- repositories, snapshots, environments ---------------------------------------------------
    for method, path, handler, name in (
        ("GET", "/api/v2/repo", repos_api.list_repos, "repos"),
        ("POST", "/api/v2/repo", repos_api.create_repo, "repo_create"),
        ("GET", "/api/v2/repo/{repo_id}", repos_api.get_repo, "repo"),
        ("DELETE", "/api/v2/repo/{repo_id}", repos_api.delete_repo, "repo_delete"),
        ("POST", "/api/v2/repo/{repo_id}/snapshot", repos_api.create_snapshot, "snapshot_create"),
        ("POST", "/api/v2/repo/{repo_id}/mirror", repos_api.mirror, "repo_mirror"),
        ("GET", "/api/v2/snapshot/{snap_id}", snapshots.get_snapshot, "snapshot"),
        ("DELETE", "/api/v2/snapshot/{snap_id}", snapshots.delete_snapshot, "snapshot_delete"),
        ("GET", "/api/v2/snapshot/{snap_id}/packages", snapshots.list_packages, "snapshot_packages"),
        ("DELETE", "/api/v2/snapshot/{snap_id}/packages", snapshots.delete_packages, "snapshot_packages_delete"),
        ("GET", "/api/v2/snapshot/{snap_id}/diff/{other_id}", snapshots.diff, "snapshot_diff"),
        ("POST", "/api/v2/snapshot/{snap_id}/upload", snapshots.upload, "snapshot_upload"),
        ("PUT", "/api/v2/snapshot/{snap_id}/rebuild", snapshots.rebuild, "snapshot_rebuild"),
        ("GET", "/api/v2/environment", environments.list_environments, "environments"),
        ("POST", "/api/v2/environment", environments.create_environment, "environment_create"),
        ("PATCH", "/api/v2/environment/{env}/point", environments.point, "environment_point"),
        ("POST", "/api/v2/pool/gc", pool_api.collect, "pool_gc"),
    ):
        both(method, path, handler, name)
    # --- source repositories (the upstreams of mirrors) ----------------------------------------------
    # Before {type}/{name}: routes match in registration order.
    for method, path, handler, name in (
        ("GET", "/api/v2/source", sources_api.list_all, "sources"),
        ("GET", "/api/v2/source/{type}", sources_api.list_type, "sources_type"),
        ("POST", "/api/v2/source/{type}", sources_api.create, "source_create"),
        ("POST", "/api/v2/source/{type}/import", sources_api.import_template, "sources_import"),
        ("GET", "/api/v2/source/{type}/{name}", sources_api.get_one, "source"),
        ("PUT", "/api/v2/source/{type}/{name}", sources_api.replace, "source_replace"),
        ("DELETE", "/api/v2/source/{type}/{name}", sources_api.delete, "source_delete"),
        ("POST", "/api/v2/source/{type}/{name}/keys", sources_api.add_keys, "source_keys"),
    ):
        both(method, path, handler, name)
    # The published trees and the public key (nginx serves /repo in production; this is the fallback).
    r.add_get("/repo/{path:.*}", published.serve, name="published")
    app.on_startup.append(published.publish_key_on_startup)

    # --- tasks, queues, operators ----------------------------------------------------------------
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
        both(method, path, handler, name)
    # --- users and API keys (admin) ------------------------------------------------------------------
    for method, path, handler, name in (
        ("GET", "/api/v2/users", users_api.list_users, "users"),
        ("POST", "/api/v2/users", users_api.create_user, "user_create"),
        ("GET", "/api/v2/users/{name}", users_api.get_user, "user"),
        ("PATCH", "/api/v2/users/{name}", users_api.update_user, "user_update"),
        ("PUT", "/api/v2/users/{name}", users_api.update_user, "user_update_put"),
        ("DELETE", "/api/v2/users/{name}", users_api.delete_user, "user_delete"),
        ("POST", "/api/v2/users/{name}/apikey", users_api.create_api_key, "user_apikey"),
    ):
        both(method, path, handler, name)
    r.add_get("/api/v2/openapi.json", openapi.openapi_json, name="openapi")
    r.add_get("/api/docs", openapi.docs_page, name="api_docs")
    if not settings.metrics_port:  # else served on the private port only
        r.add_get("/metrics", metrics.metrics_handler, name="metrics")

    # --- web dashboard: pages need a session cookie, /ui/ are their live fragments ------
    dashboard_setup.setup_templates(app)
    r.add_static("/static/", dashboard_setup.STATIC, name="static")
    r.add_get("/login", dash.login_page, name="dash_login")
    r.add_post("/login", dash.login_submit, name="dash_login_submit")
    r.add_post("/logout", dash.logout, name="dash_logout")
    # The user space, the users page (admins) and the profiles pages: each in its own module.
    r.add_get("/account", account.account_page, name="dash_account")
    r.add_post("/account/apikey", account.new_api_key, name="dash_account_apikey")
    r.add_post("/account/password", account.change_password, name="dash_account_password")
    r.add_get("/users", admin_users.users_page, name="dash_users")
    r.add_post("/users", admin_users.user_create, name="dash_user_create")
    r.add_post("/users/{name}/role", admin_users.user_role, name="dash_user_role")
    r.add_post("/users/{name}/password", admin_users.user_password, name="dash_user_password")
    r.add_post("/users/{name}/delete", admin_users.user_delete, name="dash_user_delete")
    r.add_get("/profiles", dash_profiles.profiles_page, name="dash_profiles")
    r.add_post("/profiles", dash_profiles.profile_create, name="dash_profile_create")
    r.add_get(r"/profiles/{id:\d{1,18}}", dash_profiles.profile_page, name="dash_profile")
    r.add_post(r"/profiles/{id:\d{1,18}}", dash_profiles.profile_update, name="dash_profile_update")
    r.add_post(r"/profiles/{id:\d{1,18}}/repos", dash_profiles.profile_repos, name="dash_profile_repos")
    r.add_post(r"/profiles/{id:\d{1,18}}/delete", dash_profiles.profile_delete, name="dash_profile_delete")
    r.add_get("/", dash.overview, name="dash_overview")
    r.add_get("/tasks", dash.tasks_page, name="dash_tasks")
    r.add_get("/tasks/{id}", dash.task_page, name="dash_task")
    r.add_post("/tasks/{id}/stop", dash.task_stop, name="dash_task_stop")
    r.add_get("/hosts", dash_fleet.hosts_page, name="dash_hosts")
    r.add_post("/hosts/requests", dash_fleet.fleet_requests, name="dash_fleet_requests")
    r.add_get("/hosts/{id}", dash.host_page, name="dash_host")
    r.add_post("/hosts/{id}/requests", dash.host_request_create, name="dash_host_request_create")
    r.add_get("/hosts/{id}/requests/{rid}", dash.host_request_page, name="dash_host_request")
    r.add_post("/hosts/{id}/requests/{rid}/cancel", dash.host_request_cancel, name="dash_host_request_cancel")
    r.add_get("/ui/hosts/{id}/requests", dash.ui_host_requests, name="ui_host_requests")
    r.add_get("/ui/hosts/{id}/requests/{rid}", dash.ui_host_request, name="ui_host_request")
    r.add_get("/repos", dash_repos.repos_page, name="dash_repos")
    r.add_post("/repos", dash_repos.create_repo, name="dash_repo_create")
    r.add_post("/repos/environments", dash_repos.create_environment, name="dash_environment_create")
    r.add_post("/repos/environments/point", dash_repos.point, name="dash_environment_point")
    r.add_get(r"/repos/{id:\d+}", dash_repos.repo_page, name="dash_repo")
    r.add_post(r"/repos/{id:\d+}/delete", dash_repos.delete_repo, name="dash_repo_delete")
    r.add_post(r"/repos/{id:\d+}/snapshots", dash_repos.create_snapshot, name="dash_snapshot_create")
    r.add_get(r"/repos/{id:\d+}/compare", dash_repos.compare, name="dash_snapshot_compare")
    r.add_post(r"/repos/snapshots/{snap_id:\d+}/delete", dash_repos.delete_snapshot, name="dash_snapshot_delete")
    r.add_post(r"/repos/snapshots/{snap_id:\d+}/rebuild", dash_repos.rebuild, name="dash_snapshot_rebuild")
    r.add_post(r"/repos/snapshots/{snap_id:\d+}/upload", dash_repos.upload, name="dash_snapshot_upload")
    r.add_post(r"/repos/{id:\d+}/mirror", dash_repos.repo_mirror, name="dash_repo_mirror")
    r.add_get("/sources", dash_sources.sources_page, name="dash_sources")
    r.add_post("/sources", dash_sources.source_create, name="dash_source_create")
    r.add_post("/sources/import", dash_sources.source_import, name="dash_source_import")
    r.add_post("/sources/{type}/{name}/keys", dash_sources.source_key, name="dash_source_key")
    r.add_post("/sources/{type}/{name}/delete", dash_sources.source_delete, name="dash_source_delete")
    r.add_post("/sources/{type}/{name}/mirrors", dash_sources.mirror_create, name="dash_source_mirror")
    r.add_get("/ui/overview", dash.ui_overview, name="ui_overview")
    r.add_get("/ui/tasks", dash.ui_tasks, name="ui_tasks")
    r.add_get("/ui/tasks/{id}", dash.ui_task, name="ui_task")

    return app
