-- Which repositories a profile hands to its hosts (PUT /api/v2/profile/<p>/repos).
CREATE TABLE profile_repos (
    profile_id bigint NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    repo_id    bigint NOT NULL REFERENCES repos (id) ON DELETE CASCADE,
    position   integer NOT NULL DEFAULT 0,      -- the order given in the PUT
    PRIMARY KEY (profile_id, repo_id)
);
CREATE INDEX profile_repos_repo ON profile_repos (repo_id);
