-- Source repositories (upstreams to mirror) and each one's own keyring.
-- `definition` is the reference's definition shape (name, type, url, distributions|releasever, ...)
-- without its secrets; those (the TLS client key, a basic-auth password) live in `secrets`, which
-- no listing reads.
CREATE TABLE sources (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('deb', 'rpm')),
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    definition  jsonb NOT NULL,
    secrets     jsonb NOT NULL DEFAULT '{}'::jsonb,
    method      text NOT NULL DEFAULT 'manual' CHECK (method IN ('manual', 'import-api')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (type, name)
);

-- A key validates only the source it was added to: verification builds a keyring from these rows alone.
CREATE TABLE source_keys (
    source_id   bigint NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9A-F]{40}$|^[0-9A-F]{64}$'),
    public_key  bytea NOT NULL,            -- the binary (dearmored) public key, with its subkeys
    uids        text NOT NULL DEFAULT '',
    expires_at  timestamptz,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, fingerprint)
);
