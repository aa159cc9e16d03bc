-- Host diffs go to the workers in batches: one arq job (`run_tasks`) carries the ids of every task
-- a server created within a short window. job_id names that job, so the reconciler can tell whether
-- Redis still holds it; NULL means the task's own job, 'task-<id>-<enqueue_count>'.
ALTER TABLE tasks ADD COLUMN job_id text;
