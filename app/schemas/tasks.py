"""Marshmallow schemas of the tasks and queues resources (validation and the OpenAPI description)."""
from __future__ import annotations

from marshmallow import EXCLUDE, INCLUDE, Schema, fields, validate

from app.tasks.kinds import SCHEDULABLE
from app.tasks.rows import TaskStatus


class PageQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=100, validate=validate.Range(min=1, max=5000))
    kind = fields.String(load_default=None, validate=validate.Regexp(r"^[A-Za-z0-9_.:-]{1,64}$"))


class TaskSchema(Schema):
    """One task: Repomanager's row, then Depot's extras."""

    Id = fields.Integer(required=True)
    Type = fields.String(required=True, validate=validate.OneOf(["immediate", "scheduled"]))
    Date = fields.String(required=True)
    Time = fields.String(required=True)
    Raw_params = fields.String(required=True, metadata={"description": "the task's parameters, a JSON string"})
    Pid = fields.Integer(allow_none=True)
    Logfile = fields.String(allow_none=True)
    Duration = fields.String(allow_none=True)
    Status = fields.String(required=True, validate=validate.OneOf([s.value for s in TaskStatus]))
    Kind = fields.String()
    Target = fields.String()
    Progress = fields.Integer()
    Progress_text = fields.String(allow_none=True)
    Error = fields.String(allow_none=True)
    Result = fields.Raw(allow_none=True)
    Requested_by = fields.String(allow_none=True)
    Worker = fields.String(allow_none=True)
    Attempts = fields.Integer()
    Stop_requested = fields.Boolean()
    Created_at = fields.String(allow_none=True)
    Started_at = fields.String(allow_none=True)
    Finished_at = fields.String(allow_none=True)
    Cron = fields.String(allow_none=True)
    Next_run = fields.String(allow_none=True)
    Last_run = fields.String(allow_none=True)
    Schedule_id = fields.Integer(allow_none=True)


class ScheduleRequestSchema(Schema):
    """A recurring task: what to run (kind, target or params) and when (5-field cron, UTC)."""

    class Meta:
        unknown = INCLUDE

    kind = fields.String(required=True, validate=validate.OneOf(list(SCHEDULABLE)))
    cron = fields.String(required=True, validate=validate.Length(min=9, max=200),
                         metadata={"example": "0 3 * * *"})
    target = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
    params = fields.Dict(keys=fields.String(), load_default=dict)
    enabled = fields.Boolean(load_default=True)


class TaskKindCountsSchema(Schema):
    kind = fields.String()
    queued = fields.Integer()
    running = fields.Integer()
    done_last_hour = fields.Integer()
    failed_last_hour = fields.Integer()
    stopped_last_hour = fields.Integer()


class WorkerStateSchema(Schema):
    worker_id = fields.String()
    hostname = fields.String()
    pid = fields.Integer()
    state = fields.String(validate=validate.OneOf(["busy", "idle", "lost", "stopped"]))
    started_at = fields.String()
    last_heartbeat = fields.String()
    heartbeat_age_seconds = fields.Float()
    running_tasks = fields.Integer()


class QueueSchema(Schema):
    name = fields.String()
    depth = fields.Integer(metadata={"description": "jobs waiting in Redis"})
    queued_tasks = fields.Integer(metadata={"description": "tasks queued in PostgreSQL"})
    in_progress = fields.Integer()
    oldest_waiting_seconds = fields.Float(allow_none=True)
    done_last_hour = fields.Integer()
    failed_last_hour = fields.Integer()
    stopped_last_hour = fields.Integer()
    kinds = fields.List(fields.Nested(TaskKindCountsSchema))


class QueuesSchema(Schema):
    queues = fields.List(fields.Nested(QueueSchema))
    workers = fields.List(fields.Nested(WorkerStateSchema))
    redis = fields.String()
