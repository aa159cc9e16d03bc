"""Templates (jinja2, autoescape always on) and the display filters the pages share."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

APP_DIR = Path(__file__).resolve().parent.parent
TEMPLATES = APP_DIR / "templates"
STATIC = APP_DIR / "static"
# Our own key, so another capability's jinja2 environment (e.g. an API reference page) cannot clash.
JINJA = web.AppKey("dashboard_jinja", jinja2.Environment)


def duration(seconds) -> str:
    if seconds is None or isinstance(seconds, jinja2.Undefined):
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def when(value) -> str:
    if value is None or value == "" or isinstance(value, jinja2.Undefined):
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def ago(value) -> str:
    if value is None or isinstance(value, jinja2.Undefined):
        return "never"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return duration((datetime.now(UTC) - value).total_seconds()) + " ago"


def size(value) -> str:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def epoch(value):
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return value


def setup_templates(app: web.Application) -> None:
    aiohttp_jinja2.setup(
        app,
        app_key=JINJA,
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        # Host-supplied strings are stored raw: everything is escaped when rendered, never before.
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        filters={"duration": duration, "when": when, "ago": ago, "epoch": epoch, "size": size},
    )
