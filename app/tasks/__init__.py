"""The task system: a `tasks` row is the truth, an arq job only carries its id to a worker.

- kinds.py      every task kind, once; what a schedule may start
- rows.py       every change of a task row: the state machine
- dispatch.py   create a task (or join the queued one) and send its job
- batcher.py    the tasks a server creates within a short window, sent as one job
- schedules.py  cron schedules and the scheduler step
- listing.py    tasks as operators see them (wire rows, pages)
- status.py     queue depth and workers
"""
