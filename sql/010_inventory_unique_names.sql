-- Whether the kept inventory lists each name once. The worker's item-by-item comparison (split_diff)
-- relies on it to skip a scan of the whole list per changed name; false (rows kept before this
-- column existed) makes the next diff parse the report whole, which sets it.
ALTER TABLE host_inventories ADD COLUMN unique_names boolean NOT NULL DEFAULT false;
