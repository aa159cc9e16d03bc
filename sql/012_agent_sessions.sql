-- The agent channel (/ws, app/agents/): which server process holds which host's socket.

-- Server processes that accept agent sockets, each beating while it runs. A process that stops beating
-- is gone: its sessions no longer count, and the workers delete it (and so its sessions).
CREATE TABLE agent_servers (
    server_id    text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- One authenticated socket per host: a newer one (on any server process) replaces the row.
CREATE TABLE agent_sessions (
    host_id      bigint PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    server_id    text NOT NULL REFERENCES agent_servers (server_id) ON DELETE CASCADE,
    session_id   text NOT NULL,
    connected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_sessions_server ON agent_sessions (server_id);
