-- Repositories, snapshots, environments and package files.
-- Package files are parsed once at upload; rebuilds render metadata from these rows, never reopening a package file.

CREATE TABLE repos (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$'),
    type        text NOT NULL CHECK (type IN ('deb', 'rpm')),
    dist        text CHECK (dist ~ '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$'),
    section     text CHECK (section ~ '^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$'),
    releasever  text CHECK (releasever ~ '^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'deb' AND dist IS NOT NULL AND section IS NOT NULL AND releasever IS NULL)
        OR (type = 'rpm' AND releasever IS NOT NULL AND dist IS NULL AND section IS NULL))
);
-- One repository per published URL (/repo/deb/<name>/<dist>/<section>/, /repo/rpm/<name>/<releasever>/).
CREATE UNIQUE INDEX repos_deb_url ON repos (name, dist, section) WHERE type = 'deb';
CREATE UNIQUE INDEX repos_rpm_url ON repos (name, releasever) WHERE type = 'rpm';

-- Any number of snapshots per repository and day (Repomanager's one-per-day folder is a defect).
CREATE TABLE snapshots (
    id          bigserial PRIMARY KEY,
    repo_id     bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    signed      boolean NOT NULL DEFAULT false,
    -- NULL: published metadata matches the content; needed/running/failed otherwise.
    reconstruct text CHECK (reconstruct IN ('needed', 'running', 'failed')),
    copied_from bigint REFERENCES snapshots (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    built_at    timestamptz
);
CREATE INDEX snapshots_repo ON snapshots (repo_id, created_at DESC);

-- One row per distinct file (by SHA-256), whatever the number of snapshots holding it.
CREATE TABLE package_files (
    id            bigserial PRIMARY KEY,
    sha256        text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    sha1          text NOT NULL,
    md5           text NOT NULL,
    size          bigint NOT NULL,
    type          text NOT NULL CHECK (type IN ('deb', 'rpm')),
    name          text NOT NULL,
    version       text NOT NULL,
    release       text,
    epoch         text,
    arch          text NOT NULL,
    filename      text NOT NULL,           -- canonical, from the package's own metadata
    stanza        text,                    -- deb: control fields, rendered once
    primary_xml   text,                    -- rpm: createrepo_c chunks
    filelists_xml text,
    other_xml     text,
    -- rpm: the copy signed by Depot's key (signed once, kept; never re-signed at each rebuild).
    signed_id     bigint REFERENCES package_files (id),
    signed_by     text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE snapshot_packages (
    snapshot_id bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    filename    text NOT NULL,
    package_id  bigint NOT NULL REFERENCES package_files (id),
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, filename)
);
CREATE INDEX snapshot_packages_package ON snapshot_packages (package_id);

CREATE TABLE environments (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO environments (name) VALUES ('preprod'), ('prod');

-- Which snapshot of each repository an environment serves.
CREATE TABLE environment_snapshots (
    environment_id bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    repo_id        bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    snapshot_id    bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    pointed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment_id, repo_id)
);
