"""The progress sender's batching (worker/monitors.py): pure logic; Flower seeing the reports
it sends is tested against a real Flower in tests/e2e/test_watch.py."""

from __future__ import annotations

from worker.monitors import merged


def test_reports_told_meanwhile_become_one_per_task_the_later_fields_over_the_earlier():
    told = [
        ("t1", "w@a", {"run_id": "r1", "phase": "downloading", "bytes": 10}),
        ("t2", "w@b", {"run_id": "r2", "run_state": "PROCESSING"}),
        ("t1", "w@a", {"run_id": "r1", "run_state": "PROCESSING", "message": "running"}),
        ("t1", "w@a", {"run_id": "r1", "bytes": 20}),
    ]
    assert merged(told) == {
        ("t1", "w@a"): {
            "run_id": "r1",
            "phase": "downloading",
            "bytes": 20,
            "run_state": "PROCESSING",
            "message": "running",
        },
        ("t2", "w@b"): {"run_id": "r2", "run_state": "PROCESSING"},
    }
    assert list(merged(told)) == [("t1", "w@a"), ("t2", "w@b")]  # in the order first told
    assert merged([]) == {}
