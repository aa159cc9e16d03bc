-- Requests to hosts, sent over the agent channel (/ws).
-- The state machine is app/agents/requests.py.
CREATE TABLE agent_requests (
    id           bigserial PRIMARY KEY,
    host_id      bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    request      text NOT NULL CHECK (request IN ('request-general-infos', 'request-packages-infos',
                                                  'request-all-packages-update', 'request-packages-update',
                                                  'update-profile')),
    -- As given to the API (JSON booleans); the wire form is built when the request is sent.
    params       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'sent', 'running', 'completed', 'failed', 'canceled')),
    info         text,
    summary      jsonb,
    log          text,
    error        text,
    -- Failed by Depot's own time limit: the agent's final answer, should it still come, replaces that.
    timed_out    boolean NOT NULL DEFAULT false,
    requested_by text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_requests_host ON agent_requests (host_id, id DESC);
-- Waiting requests, oldest first per host (dispatch and the offline window).
CREATE INDEX agent_requests_new ON agent_requests (host_id, id) WHERE status = 'new';
-- One request in flight per host: the agent runs one at a time.
CREATE UNIQUE INDEX agent_requests_in_flight ON agent_requests (host_id) WHERE status IN ('sent', 'running');
