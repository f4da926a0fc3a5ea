"""Where a run's files land in its results bucket: every key under `<run-id>/`, spelled once.

    <run-id>/                                  what the command wrote to RESULT_DIR
    <run-id>/_submitted_code/model.zip         the model zip as submitted
    <run-id>/learner-1/training-log.txt        the run's whole log (stdout and stderr, stamped)
    <run-id>/learner-1/load-data.log           what staging did
    <run-id>/learner-1/store-results.log       what storing did
    <run-id>/learner-1/environment-build.log   the environment build's full output (uv's)
    <run-id>/learner-1/metrics.jsonl           every metric point seen (JSON lines)
    <run-id>/learner-1/evaluation-metrics.txt  the program's own metrics file, if it wrote one
    <run-id>/learner-1/log-chunks/<n>          copies of the log while it runs (removed at the end)
    <run-id>/learner-1/tensorboard/<folder>/   the TensorBoard event files the program wrote
                                               (`tensorboard --logdir` over it shows the run)

The worker writes these, the API reads the logs back, the demo and benchmarks look at them.
"""

from __future__ import annotations

LEARNER = "learner-1"
TRAINING_LOG = "training-log.txt"
LOAD_LOG = "load-data.log"
STORE_LOG = "store-results.log"
ENVIRONMENT_LOG = "environment-build.log"
METRICS_FILE = "metrics.jsonl"
# The service's own logs of a run, kept in its LOG_DIR on the worker and stored under learner-1/.
RUN_LOGS = (TRAINING_LOG, LOAD_LOG, STORE_LOG, ENVIRONMENT_LOG, METRICS_FILE)
# What the program may write to LOG_DIR for the service to read (worker/metrics.py); stored
# beside the service's own logs when it is there.
EMETRICS_FILE = "evaluation-metrics.txt"
METRICS_KEY = f"{LEARNER}/{METRICS_FILE}"
# The event files the metrics read (worker/tensorboard.py), each under its series' folder.
TENSORBOARD_FOLDER = "tensorboard"

SUBMITTED_CODE_KEY = "_submitted_code/model.zip"
TRAINING_LOG_KEY = f"{LEARNER}/{TRAINING_LOG}"
# Copies of the log made while the run went on; removed once the whole log is stored.
LOG_CHUNKS_PREFIX = f"{LEARNER}/log-chunks/"


def learner_key(name: str) -> str:
    """A file of the learner's folder, relative to `<run-id>/`."""
    return f"{LEARNER}/{name}"


def run_key(run_id: str, key: str) -> str:
    """A key relative to the run's folder, as stored in the bucket."""
    return f"{run_id}/{key}"
