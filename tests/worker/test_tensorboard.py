"""TensorBoard event files as metrics: files written by tensorboard's own writer (the one
torch.utils.tensorboard.SummaryWriter uses), read by worker/tensorboard.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from common.clock import parse_iso
from tests.conftest import ROOT
from worker.tensorboard import TensorBoardSource, event_files, tensorboard_roots

WALL = 1_700_000_000.0


def _simple(tag: str, value: float) -> summary_pb2.Summary:
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])


def _tensor(tag: str, value: float, first: bool) -> summary_pb2.Summary:
    """A scalar as TF2 and Keras write it: a tensor, its plugin named on the first value."""
    item = summary_pb2.Summary.Value(tag=tag, tensor=tensor_util.make_tensor_proto(value))
    if first:
        item.metadata.CopyFrom(scalar_metadata.create_summary_metadata(tag, ""))
    return summary_pb2.Summary(value=[item])


def write_events(folder: Path, summaries: list[tuple[int, summary_pb2.Summary]]) -> Path:
    writer = EventFileWriter(str(folder))
    for step, summary in summaries:
        writer.add_event(event_pb2.Event(wall_time=WALL + step, step=step, summary=summary))
    writer.close()
    (path,) = folder.glob("*tfevents*")
    return path


def points(source: TensorBoardSource) -> list[tuple[str, int, float]]:
    return [(name, step, value) for name, step, value, _, _ in source.read()]


def test_scalars_old_and_new_become_series_by_tag_with_their_step_and_wall_time(tmp_path):
    write_events(
        tmp_path / "tb",
        [(s, _simple("loss", 1 / (s + 1))) for s in range(3)]
        + [(s, _tensor("accuracy", 0.5 + s / 10, s == 0)) for s in range(3)]
        + [(9, _tensor("not/a/scalar", 1.0, False))],  # no plugin named: not a scalar
    )
    source = TensorBoardSource([tmp_path])
    found = list(source.read())
    assert [(n, s, v) for n, s, v, _, _ in found] == [
        ("loss", 0, 1.0), ("loss", 1, 0.5), ("loss", 2, 0.3333333),
        ("accuracy", 0, 0.5), ("accuracy", 1, 0.6), ("accuracy", 2, 0.7),
    ]  # fmt: skip
    assert parse_iso(found[1][3]).timestamp() == WALL + 1
    assert points(source) == []  # new records only, each read


def test_new_records_are_read_as_they_come_and_a_record_not_yet_whole_waits(tmp_path):
    whole = write_events(tmp_path / "written", [(s, _simple("loss", s)) for s in range(4)])
    data = whole.read_bytes()
    live = tmp_path / "live" / whole.name
    live.parent.mkdir()
    cut = len(data) - 5  # the last record without its last bytes
    live.write_bytes(data[:cut])
    source = TensorBoardSource([tmp_path / "live"])
    assert points(source) == [("loss", 0, 0.0), ("loss", 1, 1.0), ("loss", 2, 2.0)]
    with open(live, "ab") as f:
        f.write(data[cut:])
    assert points(source) == [("loss", 3, 3.0)]


def test_a_corrupt_file_costs_its_own_points_only(tmp_path):
    bad = write_events(tmp_path / "bad", [(s, _simple("bad_loss", s)) for s in range(4)])
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a record in the middle no longer matches its CRC
    bad.write_bytes(bytes(data))
    write_events(tmp_path / "good", [(s, _simple("loss", s)) for s in range(3)])
    source = TensorBoardSource([tmp_path], named_root=tmp_path)
    got = points(source)
    assert [p for p in got if p[0] == "good/loss"] == [("good/loss", s, s) for s in range(3)]
    bad_points = [p for p in got if p[0] == "bad/bad_loss"]
    assert bad_points == [("bad/bad_loss", s, s) for s in range(len(bad_points))]
    assert len(bad_points) < 4
    garbage = tmp_path / "garbage" / "events.out.tfevents.1.host"
    garbage.parent.mkdir()
    garbage.write_bytes(os.urandom(300))
    assert points(source) == []  # read, nothing in it, the others go on


def test_non_finite_values_are_dropped(tmp_path):
    values = [1.0, math.nan, math.inf, 2.0]
    write_events(tmp_path, [(s, _simple("loss", v)) for s, v in enumerate(values)])
    assert points(TensorBoardSource([tmp_path])) == [("loss", 0, 1.0), ("loss", 3, 2.0)]


def test_subfolders_prefix_their_series_as_tensorboard_names_its_runs(tmp_path):
    logs = tmp_path / "log"
    write_events(logs / "tb" / "train", [(0, _simple("loss", 1.0))])
    write_events(logs / "tb" / "validation", [(0, _simple("loss", 2.0))])
    roots, named = tensorboard_roots("$LOG_DIR/tb", logs, tmp_path / "result")
    assert roots == [logs / "tb"] and named == logs / "tb"
    source = TensorBoardSource(roots, named)
    assert sorted(points(source)) == [("train/loss", 0, 1.0), ("validation/loss", 0, 2.0)]
    keys = sorted(key for _, key in source.stored_keys())
    assert [k.rsplit("/", 1)[0] for k in keys] == ["tensorboard/train", "tensorboard/validation"]
    # Without `in:`: named relative to the folder they share, when found together...
    roots, named = tensorboard_roots("", logs, tmp_path / "result")
    assert named is None
    unnamed = TensorBoardSource(roots)
    assert sorted(points(unnamed)) == [("train/loss", 0, 1.0), ("validation/loss", 0, 2.0)]
    # ... and a folder found alone keeps bare tags; one found after it is named by its folder.
    later = tmp_path / "later"
    write_events(later / "train", [(0, _simple("loss", 1.0))])
    source = TensorBoardSource([later])
    assert points(source) == [("loss", 0, 1.0)]
    write_events(later / "validation", [(0, _simple("loss", 2.0))])
    assert points(source) == [("validation/loss", 0, 2.0)]


def test_links_are_never_followed(tmp_path):
    outside = write_events(tmp_path / "outside", [(0, _simple("secret", 1.0))])
    run = tmp_path / "run"
    run.mkdir()
    (run / "events.out.tfevents.1.link").symlink_to(outside)
    os.link(outside, run / "events.out.tfevents.2.hardlink")
    (run / "linked-folder").symlink_to(outside.parent, target_is_directory=True)
    assert event_files([run]) == [run / "events.out.tfevents.2.hardlink"]
    source = TensorBoardSource([run])
    assert points(source) == []  # the hard link (another file's inode) is not read either
    assert source.stored_keys() == []


def test_the_look_at_the_folders_is_bounded(tmp_path):
    for number in range(30):
        (tmp_path / f"file-{number:02}").touch()
    write_events(tmp_path / "zz", [(0, _simple("loss", 1.0))])
    assert len(event_files([tmp_path], budget=1000)) == 1
    assert event_files([tmp_path], budget=10) == []


def test_a_flood_of_records_is_read_over_several_polls_and_whole_at_the_end(tmp_path):
    writer = EventFileWriter(str(tmp_path), max_queue_size=1000)
    for step in range(30_000):
        writer.add_event(event_pb2.Event(wall_time=WALL, step=step, summary=_simple("x", step)))
    writer.close()
    source = TensorBoardSource([tmp_path])
    began = time.thread_time()
    first = points(source)
    assert source.unread and 0 < len(first) < 30_000
    assert time.thread_time() - began < 1.0  # the poll's CPU budget (0.2 s), with room
    rest = []
    while source.unread:
        rest += points(source)
    assert [s for _, s, _ in first + rest] == list(range(30_000))


def test_tensorboard_is_not_imported_for_a_run_that_writes_no_event_file(tmp_path):
    (tmp_path / "log.txt").write_text("no events here\n")
    code = (
        "import sys; from pathlib import Path; from worker.tensorboard import TensorBoardSource\n"
        f"s = TensorBoardSource([Path({str(tmp_path)!r})]); list(s.read()); s.stored_keys()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard'))\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"
