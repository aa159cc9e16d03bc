-- Users, their API keys, the task table (source of truth for every job) and worker heartbeats.

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'uploader', 'viewer')),
    -- Optional password for the web dashboard: 'scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>'.
    password    text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One key per user (making a new one replaces the old one, as in Repomanager).
-- key_id is the public lookup part of the key (O(1) lookup); only a SHA-256 digest of the whole key is kept.
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    user_id     bigint NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    digest      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

-- Every queued job has a row here; Redis only carries "task-<id>-<n>": PostgreSQL is the truth, and the reconciler re-sends what Redis loses.
CREATE TABLE tasks (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL,                 -- host_diff, rebuild, env_point, ...
    target         text NOT NULL,                 -- the locked resource, e.g. 'host:12', 'snapshot:5'
    type           text NOT NULL DEFAULT 'immediate' CHECK (type IN ('immediate', 'scheduled')),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'done', 'error', 'stopped', 'scheduled', 'disabled')),
    params         jsonb NOT NULL DEFAULT '{}'::jsonb,
    progress       integer NOT NULL DEFAULT 0,
    progress_text  text,
    error          text,
    result         jsonb,
    requested_by   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    worker_id      text,
    heartbeat_at   timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    enqueue_count  integer NOT NULL DEFAULT 0,
    stop_requested boolean NOT NULL DEFAULT false
);
-- Coalescing: at most one queued task per (kind, target); a request made while one is queued joins it.
CREATE UNIQUE INDEX tasks_one_queued ON tasks (kind, target) WHERE status = 'queued';
-- The per-resource lock: at most one running task per (kind, target).
CREATE UNIQUE INDEX tasks_one_running ON tasks (kind, target) WHERE status = 'running';
CREATE INDEX tasks_status_created ON tasks (status, created_at);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE workers (
    worker_id    text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);
