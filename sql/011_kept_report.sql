-- A kept inventory in the agent's exact form stays where it already is, in its host_reports row,
-- instead of being copied into host_inventories.body (the copy was ~70% of the diff worker's WAL).
-- report_id names that row; the host's reports with a higher id are the pending ones. Not a
-- foreign key: if that row is gone, the next diff reads host_packages instead (as for a host
-- without a kept inventory). body holds the kept inventory only when report_id is NULL.
ALTER TABLE host_inventories ADD COLUMN report_id bigint;
ALTER TABLE host_inventories ALTER COLUMN body DROP NOT NULL;

-- The reports the diff worker has yet to apply (for operators, the tests and the benchmark).
CREATE VIEW host_pending_reports AS
SELECT r.* FROM host_reports r LEFT JOIN host_inventories k ON k.host_id = r.host_id
WHERE r.id > coalesce(k.report_id, 0);
