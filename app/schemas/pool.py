"""Request schema of the package pool endpoint (also feeds OpenAPI)."""
from __future__ import annotations

from app.schemas.common import PhpBool, ReferenceBody, says


class PoolGcRequest(ReferenceBody):
    dry_run = PhpBool(load_default=False, error_messages=says("Invalid dry_run value"),
                      metadata={"description": "only count what would be removed"})
