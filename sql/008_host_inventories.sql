-- The last applied installed inventory of each host, as one zlib-compressed JSON object
-- {"name[:arch]": "version", ...}: the diff worker compares a new report against it in Python
-- instead of reading the host's 2,000 host_packages rows (or parsing JSON in PostgreSQL).
-- Written in the same transaction as host_packages, so the two always agree; a host without a
-- row here (e.g. an inventory applied before this table existed) is read from host_packages.
CREATE TABLE host_inventories (
    host_id bigint PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    body    bytea NOT NULL
);
-- Already compressed: PostgreSQL should not try again.
ALTER TABLE host_inventories ALTER COLUMN body SET STORAGE EXTERNAL;

-- From this version on, host_reports.body is zlib-compressed JSON too (compressed by the API, which
-- is cheaper than PostgreSQL's own compression); the worker still reads plain JSON bodies.
