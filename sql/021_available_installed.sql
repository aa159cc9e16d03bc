-- Beside each available update, the version of that package the host runs now (NULL: none), kept by the
-- diff worker whenever either side changes: outdated hosts and a host's updates are then read without
-- looking each name up in the host's set.
ALTER TABLE host_available ADD COLUMN installed text;

-- The existing rows: each host's set intersected with the entries of its available names.
UPDATE host_available a SET installed = v.version
FROM host_sets s
CROSS JOIN LATERAL unnest(s.ids & coalesce((
    SELECT array_agg(v2.id) FROM host_available a2
    JOIN package_versions v2 ON v2.name = a2.name AND v2.arch = a2.arch WHERE a2.host_id = s.host_id), '{}')) AS i(id)
JOIN package_versions v ON v.id = i.id
WHERE a.host_id = s.host_id AND a.name = v.name AND a.arch = v.arch;
