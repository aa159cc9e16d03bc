"""HTTP client of the Depot API for the `depot` CLI, and table printing.

Where the server and key come from, first found wins: --url/--key flags, DEPOT_URL/DEPOT_API_KEY,
then ~/.config/depot/cli.toml (`url = "..."`, `key = "..."`) or cli.ini (`[depot]` section).
Errors become ClientError with a readable message; callers exit non-zero with it.
"""
from __future__ import annotations

import configparser
import json
import os
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(Exception):
    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "depot"


def read_config(directory: Path | None = None) -> dict:
    directory = directory or config_dir()
    toml_file, ini_file = directory / "cli.toml", directory / "cli.ini"
    try:
        if toml_file.is_file():
            data = tomllib.loads(toml_file.read_text())
            return dict(data.get("depot", data))
        if ini_file.is_file():
            parser = configparser.ConfigParser()
            parser.read(ini_file)
            return dict(parser["depot"]) if parser.has_section("depot") else {}
    except (OSError, tomllib.TOMLDecodeError, configparser.Error) as exc:
        raise ClientError(f"cannot read {toml_file if toml_file.is_file() else ini_file}: {exc}")
    return {}


@dataclass
class Client:
    url: str
    key: str | None
    timeout: float = 30.0

    @classmethod
    def from_args(cls, args) -> Client:
        config: dict = {}
        url = getattr(args, "url", None) or os.environ.get("DEPOT_URL")
        key = getattr(args, "key", None) or os.environ.get("DEPOT_API_KEY")
        if not (url and key):
            config = read_config()
        url = url or config.get("url") or DEFAULT_URL
        key = key or config.get("key")
        return cls(url.rstrip("/"), key)

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> dict:
        url = self._url(path)
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        return self._send(url, method, data, "application/json" if data is not None else None)

    def _url(self, path: str) -> str:
        return f"{self.url}/api/v2/{path.lstrip('/')}"

    def _send(self, url: str, method: str, data: bytes | None, content_type: str | None) -> dict:
        if not self.key:
            raise ClientError("an API key is needed: --key, DEPOT_API_KEY or key in ~/.config/depot/cli.toml")
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.key}", "Accept": "application/json",
            **({"Content-Type": content_type} if content_type else {}),
        })
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _decode(resp.read(), resp.status)
        except urllib.error.HTTPError as exc:
            payload = _decode(exc.read(), exc.code, strict=False)
            raise ClientError(f"{exc.code}: {error_text(payload) or exc.reason}", exc.code, payload) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach {self.url}: {reason}") from None

    def post_file(self, path: str, field: str, filename: str, data: bytes) -> dict:
        """POST one small file as multipart/form-data (a template); the same errors as request()."""
        import secrets

        boundary = f"depot-{secrets.token_hex(12)}"
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return self._send(self._url(path), "POST", body, f"multipart/form-data; boundary={boundary}")

    def get(self, path: str, **query) -> dict:
        return self.request("GET", path, query=query or None)


def _decode(raw: bytes, status: int, strict: bool = True) -> dict:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        if strict:
            raise ClientError(f"{status}: the server did not answer JSON", status)
        return {"message_error": [raw[:200].decode(errors="replace")]}
    return data if isinstance(data, dict) else {"results": data}


def error_text(payload: dict) -> str:
    errors = payload.get("message_error") or []
    parts = [e if isinstance(e, str) else json.dumps(e) for e in errors]
    return "; ".join(parts)


# --- output ---------------------------------------------------------------------------------------


def print_json(data: Any, out=None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]], out=None, empty: str = "(none)") -> None:
    """Print rows as aligned columns: columns = [(key, HEADER), ...]; values are cut at 60 characters."""
    out = out or sys.stdout
    rows = list(rows)
    if not rows:
        out.write(empty + "\n")
        return
    cells = [[_cell(r.get(key)) for key, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(columns)]
    out.write("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)).rstrip() + "\n")
    for c in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip() + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        value = json.dumps(value)
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def progress_bar(percent: int, width: int = 30) -> str:
    percent = max(0, min(100, int(percent or 0)))
    filled = width * percent // 100
    return "[" + "#" * filled + "." * (width - filled) + f"] {percent:3d}%"
