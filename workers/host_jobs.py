"""Task kinds of the fleet domain (thin: app/hosts/ does the work)."""
from __future__ import annotations

from app.hosts import inventory
from app.tasks.kinds import Kind
from workers.runner import handler

# Apply a host's pending inventory reports; a batch job applies many hosts' in one transaction. A backlog is
# claimed a range of package_hosts at a time: a batch writes each posting row of its hosts' ranges once,
# and a batch that fills one range writes half the rows of one that straddles two.
handler(Kind.host_diff, batch=inventory.host_diff_batch, group=inventory.POSTING_BUCKET)(inventory.host_diff)
