-- Each package_hosts row holds its hosts as a bitmap of its range of 400 host ids (bit n: host
-- bucket * 400 + n) instead of a sorted int4[]: a fleet question's union of many lists is then
-- bit_or (in C, 50 bytes a row) instead of intarray merges, and an entry most hosts of a range share
-- takes 50 bytes instead of 4 per host. An entry one host has costs 50 bytes too.

-- The bit of one host in its row.
CREATE FUNCTION posting_bit(host_id bigint) RETURNS bit(400) LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN B'1'::bit(400) >> (host_id % 400)::int4;

-- Whether a host is in the row of its range.
CREATE FUNCTION posting_has(hosts bit(400), host_id bigint) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN get_bit(hosts, (host_id % 400)::int4) = 1;

-- A row's hosts: their ids, ascending (an empty array for an empty row).
CREATE FUNCTION posting_ids(bucket int4, hosts bit(400)) RETURNS int4[] LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN coalesce((SELECT array_agg(bucket * 400 + i - 1)
                     FROM unnest(array_positions(string_to_array(hosts::text, NULL), '1')) AS i), '{}');

-- The rows rewritten into a new table (an UPDATE of every row would leave the old table twice its size).
CREATE TABLE package_hosts_bits (
    version_id int4 NOT NULL,
    bucket     int4 NOT NULL,
    hosts      bit(400) NOT NULL,
    PRIMARY KEY (version_id, bucket)
) WITH (fillfactor = 80);
INSERT INTO package_hosts_bits (version_id, bucket, hosts)
SELECT p.version_id, p.bucket, coalesce((SELECT bit_or(posting_bit(h)) FROM unnest(p.hosts) AS h), B'0'::bit(400))
FROM package_hosts p ORDER BY 1, 2;
DROP TABLE package_hosts;
ALTER TABLE package_hosts_bits RENAME TO package_hosts;
ALTER INDEX package_hosts_bits_pkey RENAME TO package_hosts_pkey;
DROP AGGREGATE posting_union(int4[]);

-- A host's row gone takes it out of its range's rows (as sql/017's, on bitmaps). Planned for each set:
-- a generic plan cannot know the set's size, and a nested loop that rescans a big set for every row
-- of the range is quadratic.
CREATE OR REPLACE FUNCTION host_sets_forget() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    WITH locked AS (
        SELECT p.version_id FROM package_hosts p JOIN unnest(OLD.ids) AS u(id) ON p.version_id = u.id
        WHERE p.bucket = posting_bucket(OLD.host_id) ORDER BY p.version_id FOR UPDATE OF p
    )
    UPDATE package_hosts p SET hosts = p.hosts & ~posting_bit(OLD.host_id)
    FROM locked WHERE p.version_id = locked.version_id AND p.bucket = posting_bucket(OLD.host_id);
    RETURN OLD;
END $$;
