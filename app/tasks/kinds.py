"""Every task kind, listed once: schemas, CLI choices, metrics and the worker's registry read it."""
from __future__ import annotations

import enum


class Kind(enum.StrEnum):
    host_diff = "host_diff"              # apply a host's pending inventory reports (hosts/)
    rebuild = "rebuild"                  # render, sign and publish a snapshot (repos/)
    env_point = "env_point"              # point an environment at a snapshot (repos/)
    pool_gc = "pool_gc"                  # delete package files no snapshot uses (repos/)
    snapshot_create = "snapshot_create"  # copy a repository's newest snapshot (repos/)
    retention = "retention"              # delete a repository's old snapshots (repos/)
    mirror = "mirror"                    # sync a mirror repository from its source into a new snapshot (mirrors/)


# Kinds a schedule may start, and the params key their lock target is derived from when none is
# given (None: derived otherwise, see schedules.derive_target).
SCHEDULABLE: dict[str, str | None] = {
    Kind.rebuild.value: "snapshot",        # params {"snapshot": id}
    Kind.snapshot_create.value: "repo",    # params {"repo": id}
    Kind.env_point.value: None,            # params {"env": name, "snapshot": id}: target env:<env>:repo:<repo id>
    Kind.retention.value: "repo",          # params {"repo": id, "keep": n}
    Kind.pool_gc.value: None,
    Kind.mirror.value: "repo",             # params {"repo": id} (and "env": name to point)              # params {} (or {"dry_run": true}): target "pool", one at a time
}

KINDS: tuple[str, ...] = tuple(k.value for k in Kind)
