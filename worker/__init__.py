"""GPU-pinned Celery workers: claim a run, stage it, run its command, store its results."""
