"""Writes the PyTorch example's data set: three interleaved spiral arms in the plane, with
noise, a classic that a linear model cannot separate and a small MLP can.

    python make_data.py OUT_DIR [--train 6000] [--test 1500] [--seed 7]

It creates OUT_DIR/train.bin and OUT_DIR/test.bin (rows of float32, little-endian: the
features, then the class as a float) and OUT_DIR/meta.json (`features`, `classes`, row
counts). Standard library only, and generated, not downloaded: the machines that run the
demo reach no data hub, and `train.py` needs nothing but torch to read it.
"""

import argparse
import json
import math
import random
import struct
from pathlib import Path

FEATURES, CLASSES = 2, 3


def sample(count: int, rng: random.Random) -> list[tuple[float, float, int]]:
    rows = []
    for _ in range(count):
        arm = rng.randrange(CLASSES)
        t = rng.random()  # 0 at the centre, 1 at the end of the arm
        angle = arm * 2 * math.pi / CLASSES + t * 3.0 * math.pi + rng.gauss(0.0, 0.25)
        radius = 0.1 + t
        rows.append((radius * math.cos(angle), radius * math.sin(angle), arm))
    return rows


def write(path: Path, rows: list[tuple[float, float, int]]) -> None:
    packed = struct.Struct(f"<{FEATURES + 1}f")
    with open(path, "wb") as out:
        for x, y, label in rows:
            out.write(packed.pack(x, y, float(label)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", args.train), ("test", args.test)):
        write(args.out_dir / f"{name}.bin", sample(count, rng))
        print(f"wrote {args.out_dir / f'{name}.bin'}: {count} points")
    meta = {"features": FEATURES, "classes": CLASSES, "train": args.train, "test": args.test}
    (args.out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
