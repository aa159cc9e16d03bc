"""One Settings object, read once from DEPOT_* environment variables; every limit is a setting here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

# The checkout the package was installed from (editable install): `var/` lives here by default,
# so `depot` run from anywhere reaches the same embedded database as `make run`.
PROJECT_DIR = Path(__file__).resolve().parent.parent

MiB = 1024 * 1024


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _str(name: str, default: str | None) -> str | None:
    raw = os.environ.get(name)
    return raw if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    # None means "start the embedded server under var_dir" (app/embedded.py).
    database_url: str | None = None
    redis_url: str | None = None
    var_dir: Path = PROJECT_DIR / "var"
    storage_dir: Path = PROJECT_DIR / "var" / "storage"
    host: str = "127.0.0.1"
    port: int = 8080
    # URLs handed to hosts are built from this, never from the request's Host header.
    base_url: str = "http://127.0.0.1:8080"
    # Name used for the published key file (/repo/gpgkeys/<server_name>.pub) and repo_server.
    server_name: str = "127.0.0.1"
    # Limits are explicit settings (bad input must never become a 500).
    max_body_bytes: int = 32 * MiB
    max_upload_bytes: int = 1024 * MiB
    max_list_items: int = 100_000
    max_per_page: int = 5000
    # An answer asked for whole (no per_page) of more bytes is refused (400: ask for pages): the server
    # process holds it whole, and the reference's old clients ask for everything by default.
    max_answer_bytes: int = 256 * MiB
    # Workers.
    queue_name: str = "depot:queue"
    # Jobs one worker runs at once. arq starts at most this many per poll of the queue (every 50 ms),
    # so it also caps a worker's rate of short jobs (a batch of host diffs is one job).
    worker_max_jobs: int = 16
    # Added to a worker process's niceness when it starts: where servers, PostgreSQL and workers share cores,
    # the requests (and the statements the workers wait on) go first and the workers take the CPU left. 0 leaves
    # it as started.
    worker_nice: int = 10
    # Host diff tasks a server creates within this window go to the workers as one job (app/tasks/batcher.py).
    diff_batch_seconds: float = 0.1
    # During a report storm (this many installed/available reports per second or more, per server
    # process), those jobs are held up to diff_hold_seconds, so the agents' requests are served first.
    # 0 turns it off; capped at reconcile_seconds - 1 (the reconciler would re-send the held tasks).
    diff_hold_seconds: float = 5.0
    diff_hold_rate: float = 200.0
    # The diff worker's cache of the package dictionary (app/hosts/inventory.py), entries per direction,
    # and the hosts whose reports it parses at once (what a burst of first inventories holds in memory).
    inventory_cache_entries: int = 200_000
    # Host diff tasks one batch may run: a batch job takes queued ones beside its own up to this many, and
    # a worker process runs one such batch at a time. A backlog (a fleet's first inventories) is then
    # applied in large batches of neighbouring hosts, each posting-list row rewritten once per batch
    # rather than once per small window's batch.
    diff_batch_max_tasks: int = 400
    inventory_chunk_hosts: int = 50
    # A batch whose hosts bring this many package versions new to the fleet (each a new posting-list row) is
    # written in parts of about that many: its memory stays bounded when the hosts share no version.
    inventory_write_new_entries: int = 30_000
    # Applied reports are deleted; once no diff is queued, no report is pending and host_reports (all of it
    # dead space then) holds this many bytes, a worker vacuums it (a drained queue table then gives its space
    # back at once, rather than at autovacuum's next round). 0 leaves it to autovacuum.
    reports_vacuum_bytes: int = 16 * 1024 * 1024
    # Group commit of host reports (hosts/intake.py): reports per statement, statements at once per process;
    # and the events-history digests each server process remembers (intake.SeenDigests).
    intake_max_group: int = 64
    intake_max_inflight: int = 2
    intake_seen_digests: int = 100_000
    # Each server process's copy of the package dictionary (hosts/known.py): entries kept (0: none, installed
    # reports are then stored as JSON), and seconds between its reads of the entries added since.
    intake_dictionary_entries: int = 200_000
    intake_dictionary_seconds: float = 1.0
    task_heartbeat_seconds: int = 5
    task_stale_seconds: int = 30
    reconcile_seconds: int = 10
    # Finished tasks older than this are deleted by the workers' scheduler step (0 keeps them all).
    task_history_days: int = 30
    # Pool GC: a pool file no row names is removed only once this old (uploads in flight, see app/repos/gc.py).
    pool_gc_grace_seconds: int = 3600
    # Database pool.
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_command_timeout: float = 60.0
    # Bounded waits for a connection (PostgreSQL down, hung or pool exhausted → 503, not a hang).
    db_connect_timeout: float = 5.0
    db_acquire_timeout: float = 10.0
    # Failed authentications per client address before 429 (token bucket refilled over the window).
    auth_fail_limit: int = 20
    auth_fail_window: int = 60
    # Host credentials verified this recently skip the database lookup on report endpoints (0: never).
    host_auth_cache_seconds: float = 60.0
    # Origins allowed to call the API from a browser; empty: no CORS headers at all.
    cors_origins: tuple = ()
    # Reverse proxies (addresses or CIDR blocks) whose X-Forwarded-For names the real client.
    trusted_proxies: tuple = ()
    # Logs and metrics.
    log_format: str = "text"
    log_level: str = "INFO"
    metrics_key: str | None = None
    # Set: /metrics is served on this port only (a private listener), not on the API port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # Set: each worker process serves its own /metrics on metrics_host at this port (off by default).
    worker_metrics_port: int | None = None
    # The agent channel (/ws, app/agents/). A socket that has not authenticated within agent_auth_seconds
    # is closed; there are no pings (an agent running a request reads nothing, so it cannot answer them).
    agent_auth_seconds: float = 30.0
    # Largest agent message: a final update response carries the whole log, twice over for each package.
    agent_max_message_bytes: int = 64 * MiB
    # Each server process beats this often; one silent for agent_server_stale_seconds is gone, and so are
    # the sockets it held (hosts no longer shown connected through it).
    agent_heartbeat_seconds: float = 5.0
    agent_server_stale_seconds: float = 30.0
    # Every frame in and out written to the log (credentials masked): for following one agent by hand.
    agent_frame_log: bool = False
    # Requests to hosts fail when a host stays away this long after the request is made (new), when its
    # agent has not started one this long after it was sent (sent), or not finished it (running).
    agent_request_ttl: float = 900.0
    agent_sent_seconds: float = 600.0
    agent_running_seconds: float = 3600.0
    # `depot run`: a part (server or worker process) that exits within run_start_window seconds of its
    # start failed to start; run_start_failures such failures in a row of one part stop everything.
    run_start_window: float = 10.0
    run_start_failures: int = 5
    # Source repositories and mirrors (app/sources/, app/mirrors/). Upstream URLs that resolve to
    # loopback, link-local or private addresses are refused unless their host or address is listed in
    # mirror_allow_hosts (names, addresses or CIDR blocks).
    source_template_max_bytes: int = 1 * MiB
    mirror_allow_hosts: tuple = ()
    mirror_concurrency: int = 8
    # A package file up to this size is held in memory between its download and its checks (at most twice the
    # concurrency of them at once); a larger one is streamed to a temp file.
    mirror_memory_file_bytes: int = 1 * MiB
    # Largest upstream index (Release, Packages) once decompressed; a larger one fails the mirror.
    mirror_index_max_bytes: int = 512 * MiB
    mirror_connect_timeout: float = 15.0
    # Longest wait for the next bytes of an upstream answer (a drip-feeding upstream fails, not hangs).
    mirror_read_timeout: float = 60.0
    # Retries of a request that failed to connect or got a 429/5xx, the first after about this long, doubling.
    mirror_retries: int = 3
    # An HTTP proxy every mirror request goes through (http://[user:password@]host:port); None: direct.
    mirror_proxy: str | None = None
    # Bytes per second a mirror run may download, all its connections together (0: no limit).
    mirror_rate_limit: int = 0
    mirror_retry_seconds: float = 1.0
    # Files a mirror run downloaded are kept from the pool GC until that mirror's next successful run,
    # or until they are this many days old (a mirror that keeps failing gives its files up then).
    mirror_keep_failed_days: float = 7.0
    # Signing.
    gpg_key_file: str | None = None
    gpg_key_type: str = "RSA"
    gpg_key_length: int = 3072
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        port = _int("DEPOT_PORT", 8080)
        host = _str("DEPOT_HOST", "127.0.0.1")
        var_dir = Path(_str("DEPOT_VAR_DIR", str(PROJECT_DIR / "var"))).resolve()
        base_url = _str("DEPOT_BASE_URL", f"http://{host}:{port}").rstrip("/")
        values = dict(
            database_url=_str("DEPOT_DATABASE_URL", None),
            redis_url=_str("DEPOT_REDIS_URL", None),
            var_dir=var_dir,
            storage_dir=Path(_str("DEPOT_STORAGE_DIR", str(var_dir / "storage"))).resolve(),
            host=host,
            port=port,
            base_url=base_url,
            server_name=_str("DEPOT_SERVER_NAME", urlsplit(base_url).hostname or "localhost"),
            max_body_bytes=_int("DEPOT_MAX_BODY_BYTES", 32 * MiB),
            max_upload_bytes=_int("DEPOT_MAX_UPLOAD_BYTES", 1024 * MiB),
            max_list_items=_int("DEPOT_MAX_LIST_ITEMS", 100_000),
            max_per_page=_int("DEPOT_MAX_PER_PAGE", 5000),
            max_answer_bytes=_int("DEPOT_MAX_ANSWER_BYTES", 256 * MiB),
            queue_name=_str("DEPOT_QUEUE_NAME", "depot:queue"),
            worker_max_jobs=_int("DEPOT_WORKER_MAX_JOBS", 16),
            worker_nice=_int("DEPOT_WORKER_NICE", 10),
            diff_batch_seconds=_float("DEPOT_DIFF_BATCH_SECONDS", 0.1),
            diff_hold_seconds=_float("DEPOT_DIFF_HOLD_SECONDS", 5.0),
            diff_hold_rate=_float("DEPOT_DIFF_HOLD_RATE", 200.0),
            inventory_cache_entries=_int("DEPOT_INVENTORY_CACHE_ENTRIES", 200_000),
            inventory_chunk_hosts=_int("DEPOT_INVENTORY_CHUNK_HOSTS", 50),
            inventory_write_new_entries=max(1, _int("DEPOT_INVENTORY_WRITE_NEW_ENTRIES", 30_000)),
            reports_vacuum_bytes=_int("DEPOT_REPORTS_VACUUM_BYTES", 16 * MiB),
            diff_batch_max_tasks=_int("DEPOT_DIFF_BATCH_MAX_TASKS", 400),
            intake_max_group=_int("DEPOT_INTAKE_MAX_GROUP", 64),
            intake_max_inflight=_int("DEPOT_INTAKE_MAX_INFLIGHT", 2),
            intake_seen_digests=_int("DEPOT_INTAKE_SEEN_DIGESTS", 100_000),
            intake_dictionary_entries=_int("DEPOT_INTAKE_DICTIONARY_ENTRIES", 200_000),
            intake_dictionary_seconds=_float("DEPOT_INTAKE_DICTIONARY_SECONDS", 1.0),
            task_heartbeat_seconds=_int("DEPOT_TASK_HEARTBEAT_SECONDS", 5),
            task_stale_seconds=_int("DEPOT_TASK_STALE_SECONDS", 30),
            reconcile_seconds=_int("DEPOT_RECONCILE_SECONDS", 10),
            task_history_days=_int("DEPOT_TASK_HISTORY_DAYS", 30),
            pool_gc_grace_seconds=_int("DEPOT_POOL_GC_GRACE_SECONDS", 3600),
            db_pool_min=_int("DEPOT_DB_POOL_MIN", 2),
            db_pool_max=_int("DEPOT_DB_POOL_MAX", 10),
            db_command_timeout=_float("DEPOT_DB_COMMAND_TIMEOUT", 60.0),
            db_connect_timeout=_float("DEPOT_DB_CONNECT_TIMEOUT", 5.0),
            db_acquire_timeout=_float("DEPOT_DB_ACQUIRE_TIMEOUT", 10.0),
            auth_fail_limit=_int("DEPOT_AUTH_FAIL_LIMIT", 20),
            auth_fail_window=_int("DEPOT_AUTH_FAIL_WINDOW", 60),
            host_auth_cache_seconds=_float("DEPOT_HOST_AUTH_CACHE_SECONDS", 60.0),
            trusted_proxies=tuple(p.strip() for p in (_str("DEPOT_TRUSTED_PROXIES", "") or "").split(",") if p.strip()),
            cors_origins=tuple(o.strip().rstrip("/") for o in (_str("DEPOT_CORS_ORIGINS", "") or "").split(",") if o.strip()),
            log_format=_str("DEPOT_LOG_FORMAT", "text"),
            log_level=_str("DEPOT_LOG_LEVEL", "INFO"),
            metrics_key=_str("DEPOT_METRICS_KEY", None),
            metrics_port=_int("DEPOT_METRICS_PORT", 0) or None,
            metrics_host=_str("DEPOT_METRICS_HOST", "127.0.0.1"),
            worker_metrics_port=_int("DEPOT_WORKER_METRICS_PORT", 0) or None,
            agent_auth_seconds=_float("DEPOT_AGENT_AUTH_SECONDS", 30.0),
            agent_max_message_bytes=_int("DEPOT_AGENT_MAX_MESSAGE_BYTES", 64 * MiB),
            agent_heartbeat_seconds=_float("DEPOT_AGENT_HEARTBEAT_SECONDS", 5.0),
            agent_server_stale_seconds=_float("DEPOT_AGENT_SERVER_STALE_SECONDS", 30.0),
            agent_frame_log=_str("DEPOT_AGENT_FRAME_LOG", "0") not in ("0", "false", "no"),
            agent_request_ttl=_float("DEPOT_AGENT_REQUEST_TTL", 900.0),
            agent_sent_seconds=_float("DEPOT_AGENT_SENT_SECONDS", 600.0),
            agent_running_seconds=_float("DEPOT_AGENT_RUNNING_SECONDS", 3600.0),
            run_start_window=_float("DEPOT_RUN_START_WINDOW", 10.0),
            run_start_failures=_int("DEPOT_RUN_START_FAILURES", 5),
            source_template_max_bytes=_int("DEPOT_SOURCE_TEMPLATE_MAX_BYTES", 1 * MiB),
            mirror_allow_hosts=tuple(h.strip() for h in (_str("DEPOT_MIRROR_ALLOW_HOSTS", "") or "").split(",")
                                     if h.strip()),
            mirror_concurrency=max(1, _int("DEPOT_MIRROR_CONCURRENCY", 8)),
            mirror_memory_file_bytes=max(0, _int("DEPOT_MIRROR_MEMORY_FILE_BYTES", 1 * MiB)),
            mirror_index_max_bytes=_int("DEPOT_MIRROR_INDEX_MAX_BYTES", 512 * MiB),
            mirror_connect_timeout=_float("DEPOT_MIRROR_CONNECT_TIMEOUT", 15.0),
            mirror_read_timeout=_float("DEPOT_MIRROR_READ_TIMEOUT", 60.0),
            mirror_retries=max(0, _int("DEPOT_MIRROR_RETRIES", 3)),
            mirror_proxy=_str("DEPOT_MIRROR_PROXY", None),
            mirror_rate_limit=max(0, _int("DEPOT_MIRROR_RATE_LIMIT", 0)),
            mirror_retry_seconds=_float("DEPOT_MIRROR_RETRY_SECONDS", 1.0),
            mirror_keep_failed_days=max(0.0, _float("DEPOT_MIRROR_KEEP_FAILED_DAYS", 7.0)),
            gpg_key_file=_str("DEPOT_GPG_KEY_FILE", None),
            gpg_key_type=_str("DEPOT_GPG_KEY_TYPE", "RSA"),
            gpg_key_length=_int("DEPOT_GPG_KEY_LENGTH", 3072),
        )
        values.update(overrides)
        return cls(**values)
