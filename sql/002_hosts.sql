-- Fleet reporting: profiles, hosts and their status, current inventories, available updates,
-- history, package events, and raw reports waiting for the diff worker.

-- Profiles (Repomanager's profile + profile_package + profile_service). Values are the
-- comma-joined strings the agent reads; repos membership lives with the repositories (003).
CREATE TABLE profiles (
    id                    bigserial PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$' AND name <> 'server-settings'),
    package_exclude       text NOT NULL DEFAULT '',
    package_exclude_major text NOT NULL DEFAULT '',
    service_reload        text NOT NULL DEFAULT '',
    service_restart       text NOT NULL DEFAULT '',
    notes                 text NOT NULL DEFAULT '',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hosts (
    id               bigserial PRIMARY KEY,
    hostname         text NOT NULL UNIQUE,
    ip               text NOT NULL,
    -- Public half of the host credentials (results.id); the token itself is kept only as a SHA-256 digest.
    auth_id          text NOT NULL UNIQUE,
    token_digest     bytea NOT NULL,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    -- Status as sent by the agent (PUT /host/status), stored raw (escaped only when rendered).
    os               text,
    os_version       text,
    os_family        text,
    type             text,
    kernel           text,
    arch             text,
    cpu              text,
    ram              text,
    network          jsonb,
    profile          text,
    env              text,
    agent_status     text NOT NULL DEFAULT 'unknown'
                     CHECK (agent_status IN ('unknown', 'running', 'stopped', 'disabled')),
    agent_status_at  timestamptz NOT NULL DEFAULT now(),
    agent_version    text,
    reboot_required  boolean,
    -- The agent's "uptime" field is really the boot time (epoch seconds).
    boot_time        double precision,
    last_seen_at     timestamptz,
    -- Digests of the last accepted report of each kind: an unchanged report costs a comparison only.
    installed_digest bytea,
    available_digest bytea,
    events_digest    bytea,
    -- Set by the diff worker when it applied an inventory (NULL: no inventory yet, the first one is the baseline).
    inventory_at     timestamptz,
    available_at     timestamptz,
    -- Kept by the diff worker so uptodate/outdated need no count over host_available.
    available_count  integer NOT NULL DEFAULT 0
);
CREATE INDEX hosts_os ON hosts (os, os_version);
CREATE INDEX hosts_kernel ON hosts (kernel);
CREATE INDEX hosts_arch ON hosts (arch);
CREATE INDEX hosts_profile ON hosts (profile);
CREATE INDEX hosts_env ON hosts (env);
-- (no index on available_count or last_seen_at: updates of those stay HOT, and uptodate/outdated
-- read every host anyway)

-- Current inventory: one row per installed package; identity is (name, arch) ('' = no arch given).
-- COLLATE "C" lets the plain btree serve prefix searches (/hosts/package/<prefix>).
CREATE TABLE host_packages (
    host_id  bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name     text COLLATE "C" NOT NULL,
    arch     text COLLATE "C" NOT NULL DEFAULT '',
    version  text NOT NULL,
    -- inventored (baseline), installed (added later), upgraded, downgraded
    state    text NOT NULL DEFAULT 'inventored',
    since    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host_id, name, arch)
);
-- Fleet-wide package questions: index-only scans by name.
CREATE INDEX host_packages_by_name ON host_packages (name, host_id) INCLUDE (arch, version);
-- Package names shared by the fleet (openssl, libc6, ...) are each on many hosts: a large most-common-
-- values list lets the planner see that (hash join with hosts instead of thousands of index lookups).
ALTER TABLE host_packages ALTER COLUMN name SET STATISTICS 2500;

-- Updates the host says it could install (replaced by every available report).
CREATE TABLE host_available (
    host_id    bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    name       text COLLATE "C" NOT NULL,
    arch       text COLLATE "C" NOT NULL DEFAULT '',
    version    text NOT NULL,
    repository text,
    security   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (host_id, name, arch)
);

-- Changes found by the diff worker between two inventories.
CREATE TABLE host_history (
    id          bigserial PRIMARY KEY,
    host_id     bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    change      text NOT NULL CHECK (change IN ('added', 'removed', 'upgraded', 'downgraded')),
    name        text NOT NULL,
    arch        text NOT NULL DEFAULT '',
    old_version text,
    new_version text
);
CREATE INDEX host_history_host_at ON host_history (host_id, at DESC, id DESC);

-- apt/dnf history events; the agent re-sends its whole history, each event is stored once.
CREATE TABLE host_events (
    id         bigserial PRIMARY KEY,
    host_id    bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    date_start date NOT NULL,
    time_start time NOT NULL,
    date_end   date,
    time_end   time,
    command    text NOT NULL,
    -- {"installed": [{"name", "version"}], "upgraded": [...], ...} as sent
    packages   jsonb NOT NULL DEFAULT '{}'::jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (host_id, date_start, time_start, command)
);

-- Raw installed/available reports accepted by the API and not yet applied by the diff worker
-- (applied in id order, then deleted).
CREATE TABLE host_reports (
    id          bigserial PRIMARY KEY,
    host_id     bigint NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('installed', 'available')),
    digest      bytea NOT NULL,
    body        bytea NOT NULL,  -- STORAGE EXTERNAL below: JSON is stored as is, not compressed (CPU)
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_reports_host ON host_reports (host_id, id);
ALTER TABLE host_reports ALTER COLUMN body SET STORAGE EXTERNAL;
