-- Repository metadata a mirror carries over from its upstream beside the package indexes (rpm:
-- updateinfo, modules, comps), each file as the upstream's signed repomd.xml listed it: every rebuild
-- of the snapshot publishes it again, listed in Depot's own signed repomd.xml.
CREATE TABLE snapshot_metadata (
    snapshot_id bigint NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    type        text NOT NULL,     -- the repomd record's type: updateinfo, modules, group, group_gz, ...
    name        text NOT NULL,     -- the upstream file's name without its digest prefix (its suffix says its compression)
    data        bytea NOT NULL,    -- the file as the upstream served it
    open_sha256 text,              -- its uncompressed SHA-256 and size, as the upstream's repomd gave them
    open_size   bigint,
    PRIMARY KEY (snapshot_id, type)
);
