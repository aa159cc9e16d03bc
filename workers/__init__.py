"""arq workers: WorkerSettings, the task runner and the reconciler."""
