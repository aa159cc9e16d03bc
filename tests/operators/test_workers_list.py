"""Who the workers lists show (GET /api/v2/queues, the overview, /metrics: app/tasks/status.py): workers
stopped more than a day ago leave them; lost ones stay until handled."""
from __future__ import annotations

import re

from app.metrics import DB_COLLECTOR
from app.tasks import status
from tests.helpers import bearer
from tests.test_dashboard import login

WORKERS = [
    # (worker_id, heartbeat age, stopped age or None)
    ("alive:1", "1 second", None),
    ("recent:2", "2 hours", "2 hours"),             # stopped cleanly today: shown
    ("old:3", "3 days", "3 days"),                  # stopped cleanly three days ago: gone
    ("lost:4", "3 days", None),                     # died three days ago, never handled: shown, lost
    ("handled:5", "4 days", "2 days"),              # lost, handled by the reconciler two days ago: gone
    ("holding:6", "5 days", "4 days"),              # stopped long ago but still holds a running task: shown
]


async def _insert(pool):
    for worker_id, beat, stopped in WORKERS:
        await pool.execute(
            "INSERT INTO workers (worker_id, hostname, pid, started_at, heartbeat_at, stopped_at)"
            " VALUES ($1, 'h', 1, now() - interval '6 days', now() - $2::text::interval, now() - $3::text::interval)",
            worker_id, beat, stopped)
    await pool.execute("INSERT INTO tasks (kind, target, status, worker_id, started_at, heartbeat_at)"
                       " VALUES ('rebuild', 'snapshot:77', 'running', 'holding:6', now(), now() - interval '4 days')")


async def test_workers_stopped_over_a_day_ago_leave_the_lists_lost_ones_stay(client, pool, settings, admin_key):
    await _insert(pool)
    shown = {w["worker_id"]: w["state"] for w in await status.list_workers(pool, settings.task_stale_seconds)}
    assert shown == {"alive:1": "alive", "recent:2": "stopped", "lost:4": "lost", "holding:6": "lost"}

    body = await (await client.get("/api/v2/queues", headers=bearer(admin_key))).json()
    api = {w["worker_id"]: w["state"] for w in body["results"]["workers"]}
    assert api == {"alive:1": "idle", "recent:2": "stopped", "lost:4": "lost", "holding:6": "lost"}
    assert next(w for w in body["results"]["workers"] if w["worker_id"] == "holding:6")["running_tasks"] == 1

    await login(client, api_key=admin_key)
    page = await (await client.get("/")).text()
    listed = set(re.findall(r'<tr class="w-\w+"><td class="mono">([^<]+)</td>', page))
    assert listed == {"alive:1", "recent:2", "lost:4", "holding:6"}

    DB_COLLECTOR.read_at = 0  # a scrape of another test in this process could still be cached
    metrics = await (await client.get("/metrics")).text()
    assert 'depot_workers{state="lost"} 2.0' in metrics and 'depot_workers{state="alive"} 1.0' in metrics


async def test_a_lost_worker_leaves_a_day_after_the_reconciler_handled_it(pool, redis, settings):
    from workers import reconciler

    await pool.execute("INSERT INTO workers (worker_id, hostname, pid, heartbeat_at)"
                       " VALUES ('dead:9', 'h', 1, now() - interval '10 minutes')")
    await reconciler.reconcile(pool, redis, settings)
    assert [w["state"] for w in await status.list_workers(pool, settings.task_stale_seconds)] == ["lost"]
    await pool.execute("UPDATE workers SET stopped_at = stopped_at - interval '25 hours' WHERE worker_id = 'dead:9'")
    assert await status.list_workers(pool, settings.task_stale_seconds) == []
