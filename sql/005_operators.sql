-- Operators: scheduled tasks live in `tasks` as rows of type 'scheduled'.
-- A schedule row keeps the kind, target and params of the work it starts; each due run creates an
-- ordinary immediate task (coalesced like any other) that points back at it with schedule_id.

ALTER TABLE tasks
    ADD COLUMN cron        text,
    ADD COLUMN next_run_at timestamptz,
    ADD COLUMN last_run_at timestamptz,
    ADD COLUMN schedule_id bigint REFERENCES tasks (id) ON DELETE SET NULL,
    ADD CONSTRAINT tasks_schedule_shape CHECK (
        (type = 'scheduled') = (cron IS NOT NULL)
        AND (type = 'immediate' OR status IN ('scheduled', 'disabled')));

-- The scheduler's scan: due, enabled schedules.
CREATE INDEX tasks_due_schedules ON tasks (next_run_at) WHERE type = 'scheduled' AND status = 'scheduled';
CREATE INDEX tasks_schedule_runs ON tasks (schedule_id) WHERE schedule_id IS NOT NULL;
-- Listing by status, newest first, and the queues' per-kind counts of the last hour.
CREATE INDEX tasks_status_id ON tasks (status, id DESC);
CREATE INDEX tasks_finished_kind ON tasks (finished_at, kind) WHERE finished_at IS NOT NULL;
