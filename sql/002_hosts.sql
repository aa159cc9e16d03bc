-- Hosts and their credentials. (The fleet-reporting work extends this file until it first lands.)

CREATE TABLE hosts (
    id            bigserial PRIMARY KEY,
    hostname      text NOT NULL UNIQUE,
    ip            text NOT NULL,
    -- Public half of the host credentials (results.id); the token itself is kept only as a SHA-256 digest.
    auth_id       text NOT NULL UNIQUE,
    token_digest  bytea NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
