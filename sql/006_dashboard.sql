-- Web dashboard sessions. The cookie carries a random session id; only its SHA-256 digest
-- is kept, so a database dump cannot be replayed as a login.

CREATE TABLE sessions (
    digest       bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    user_agent   text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- The dashboard's jobs-over-time chart reads tasks by creation time across all states.
CREATE INDEX tasks_created ON tasks (created_at);

-- Host search on the fleet page is a prefix search on hostname (case-insensitive) or IP, served by
-- these indexes; neither column changes on a report, so report updates stay HOT.
CREATE INDEX hosts_hostname_prefix ON hosts (lower(hostname) text_pattern_ops);
CREATE INDEX hosts_ip_prefix ON hosts (ip text_pattern_ops);
