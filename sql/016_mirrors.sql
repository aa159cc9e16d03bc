-- A mirror repository: a repository whose snapshots come from a source repository.
CREATE TABLE mirrors (
    repo_id          bigint PRIMARY KEY REFERENCES repos (id) ON DELETE CASCADE,
    source_id        bigint NOT NULL REFERENCES sources (id),
    arches           text[] NOT NULL CHECK (cardinality(arches) > 0),
    gpg_check        boolean NOT NULL DEFAULT true,
    include          text[] NOT NULL DEFAULT '{}',
    exclude          text[] NOT NULL DEFAULT '{}',
    keep_latest      integer CHECK (keep_latest > 0),
    -- The last successful run: the digest of the verified Release text (with the mirror's settings),
    -- so an unchanged upstream costs one request and a signature check.
    last_digest      text,
    last_snapshot_id bigint REFERENCES snapshots (id) ON DELETE SET NULL,
    last_run_at      timestamptz
);
CREATE INDEX mirrors_source ON mirrors (source_id);
