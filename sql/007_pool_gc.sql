-- Pool garbage collection (app/repos/gc.py) asks "is this row the signed copy of a referenced one?"
-- for every candidate: an index on signed_id answers it without a scan of package_files.
CREATE INDEX package_files_signed ON package_files (signed_id) WHERE signed_id IS NOT NULL;
