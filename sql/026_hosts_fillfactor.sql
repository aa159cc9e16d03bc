-- A host's row is rewritten by every report it sends (last seen, digests) and every diff applied to it
-- (inventory and available times): with room left on its page, such an update is a HOT one, written
-- beside the old version without a new entry in each of the table's indexes. Pages written from now
-- on keep that room; the table's existing pages get it as they are rewritten (VACUUM FULL, CLUSTER).
ALTER TABLE hosts SET (fillfactor = 70);
