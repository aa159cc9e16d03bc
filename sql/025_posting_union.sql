-- Entry 0 (no package version has that id) holds, for each range of 400 host ids, every host that has an
-- inventory set. A fleet question's union of many entries (a broad prefix: thousands) can then read a
-- few entries' rows and check only the hosts they lack (posting_union below). Kept by triggers on
-- host_sets, whoever writes the sets (the worker, seeds, this migration). Its row is locked after the
-- others, as the worker's write takes it (its trigger runs after the posting rows are locked in key
-- order): two writers then never wait for each other in a cycle.
INSERT INTO package_hosts (version_id, bucket, hosts)
SELECT 0, posting_bucket(host_id), bit_or(posting_bit(host_id)) FROM host_sets GROUP BY 2 ORDER BY 2;

CREATE FUNCTION host_sets_join() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO package_hosts (version_id, bucket, hosts)
    SELECT 0, posting_bucket(host_id), bit_or(posting_bit(host_id)) FROM new_sets GROUP BY 2 ORDER BY 2
    ON CONFLICT (version_id, bucket) DO UPDATE SET hosts = package_hosts.hosts | EXCLUDED.hosts;
    RETURN NULL;
END $$;
CREATE TRIGGER host_sets_join AFTER INSERT ON host_sets REFERENCING NEW TABLE AS new_sets
    FOR EACH STATEMENT EXECUTE FUNCTION host_sets_join();

-- A host's set gone takes it out of its range's rows, entry 0's last.
CREATE OR REPLACE FUNCTION host_sets_forget() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    WITH locked AS (
        SELECT p.version_id FROM package_hosts p JOIN unnest(OLD.ids) AS u(id) ON p.version_id = u.id
        WHERE p.bucket = posting_bucket(OLD.host_id) ORDER BY p.version_id FOR UPDATE OF p
    )
    UPDATE package_hosts p SET hosts = p.hosts & ~posting_bit(OLD.host_id)
    FROM locked WHERE p.version_id = locked.version_id AND p.bucket = posting_bucket(OLD.host_id);
    UPDATE package_hosts SET hosts = hosts & ~posting_bit(OLD.host_id)
    WHERE version_id = 0 AND bucket = posting_bucket(OLD.host_id);
    RETURN OLD;
END $$;

-- The union of the rows of some entries (ids, ascending), per range: the ranges whose union is not empty.
-- A broad prefix (thousands of entries) would read every entry's row in every range. Instead:
-- 1. In the first range, `probes` entries spread evenly over the list (sorted by id, it holds one OS
--    image's entries, then the next image's) are read in one statement; those that add hosts are kept
--    until each host is covered twice (a host of another range may lack one of them: another version).
-- 2. Their union in every range (a few rows each), against entry 0's row: the hosts it lacks there.
-- 3. A range that lacks at most `checks` hosts is exact once each of them is checked against its own set
--    (host_sets is the inverse of package_hosts; no host outside entry 0's row has a posting).
-- 4. The other ranges (sparse entries) get their union from every entry's row, as a short list does.
CREATE FUNCTION posting_union(entries int4[], probes int4 DEFAULT 256, checks int4 DEFAULT 40)
RETURNS TABLE (bucket int4, hosts bit(400)) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    n int4 := cardinality(entries);
    zero bit(400) := B'0'::bit(400);
    first_bucket int4;
    useful int4[] := '{}';
    got bit(400) := B'0'::bit(400);
    twice bit(400) := B'0'::bit(400);
    v int4;
    one bit(400);
    r record;
    exact_buckets int4[] := '{}';
    exact_hosts bit(400)[] := '{}';
    lacking int4[] := '{}';
    rest int4[];  -- the ranges whose union comes from every entry's rows; NULL: all of them
BEGIN
    IF n > probes THEN
        SELECT p.bucket INTO first_bucket FROM package_hosts p
            WHERE p.version_id = 0 AND bit_count(p.hosts) > 0 ORDER BY p.bucket LIMIT 1;
        IF NOT FOUND THEN  -- no host has a set
            RETURN;
        END IF;
        FOR v, one IN SELECT p.version_id, p.hosts
                      FROM generate_series(0, probes - 1) AS k
                      JOIN package_hosts p ON p.version_id = entries[1 + (k::int8 * n / probes)::int4]
                                          AND p.bucket = first_bucket
                      ORDER BY k LOOP
            IF one & ~twice <> zero THEN  -- hosts it covers for the first or second time
                twice := twice | (one & got);
                got := got | one;
                useful := useful || v;
            END IF;
        END LOOP;
        -- Unless the entries are sparse (the first range lacks many hosts), the ranges by the useful ones.
        IF bit_count((SELECT p.hosts FROM package_hosts p WHERE p.version_id = 0 AND p.bucket = first_bucket) & ~got)
           <= checks THEN
            rest := '{}';
            FOR r IN SELECT e.bucket, e.hosts AS everyone, coalesce(u.hosts, zero) AS got
                     FROM package_hosts e LEFT JOIN (
                         SELECT p.bucket, bit_or(p.hosts) AS hosts FROM package_hosts p WHERE p.version_id = ANY (useful)
                         GROUP BY p.bucket
                     ) u ON u.bucket = e.bucket
                     WHERE e.version_id = 0 LOOP
                IF bit_count(r.everyone & ~r.got) <= checks THEN
                    exact_buckets := exact_buckets || r.bucket;
                    exact_hosts := exact_hosts || r.got;
                    lacking := lacking || posting_ids(r.bucket, r.everyone & ~r.got);
                ELSE
                    rest := rest || r.bucket;
                END IF;
            END LOOP;
            IF cardinality(exact_buckets) = 0 THEN
                rest := NULL;
            ELSE
                RETURN QUERY SELECT x.b, bit_or(x.h) FROM (
                    SELECT * FROM unnest(exact_buckets, exact_hosts) AS y(b, h)
                    UNION ALL
                    SELECT posting_bucket(s.host_id), posting_bit(s.host_id) FROM host_sets s
                    WHERE s.host_id = ANY (lacking) AND s.ids && entries
                ) x GROUP BY x.b HAVING bit_count(bit_or(x.h)) > 0;
            END IF;
        END IF;
    END IF;
    IF rest IS NULL OR cardinality(rest) > 0 THEN
        -- (bucket + 0: a filter of each entry's rows, not a lookup of every (entry, range) pair)
        RETURN QUERY SELECT p.bucket, bit_or(p.hosts) FROM package_hosts p
            WHERE p.version_id = ANY (entries) AND (rest IS NULL OR p.bucket + 0 = ANY (rest))
            GROUP BY p.bucket HAVING bit_count(bit_or(p.hosts)) > 0;
    END IF;
END $$;
