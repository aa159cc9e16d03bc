-- Files a mirror run set out to download, kept from the pool GC until that mirror's next successful
-- run (which deletes its pins in the snapshot's transaction) or until they are older than
-- DEPOT_MIRROR_KEEP_FAILED_DAYS: a failed, stopped or killed run's downloads have no snapshot
-- referencing them, and the retry should not fetch them again. Keyed by SHA-256, as the pool is:
-- a pin is written before the file (and its package_files row) exists.
CREATE TABLE mirror_pins (
    repo_id   bigint NOT NULL REFERENCES mirrors (repo_id) ON DELETE CASCADE,
    sha256    text NOT NULL,
    pinned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (repo_id, sha256)
);
CREATE INDEX mirror_pins_sha256 ON mirror_pins (sha256);

-- Each mirror's last run (the repository page, the sources page): the newest mirror task of its
-- repository, found without a scan of every task.
CREATE INDEX tasks_mirror_runs ON tasks (target, id DESC) WHERE kind = 'mirror';
