"""Task kinds of the fleet domain (thin: app/hosts/ does the work)."""
from __future__ import annotations

from app.hosts import inventory
from app.tasks.kinds import Kind
from workers.runner import handler

# Apply a host's pending inventory reports; a batch job applies many hosts' in one transaction.
handler(Kind.host_diff, batch=inventory.host_diff_batch)(inventory.host_diff)
