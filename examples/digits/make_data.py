"""Writes the example's data set: seven-segment digits, 8x12 pixels, with jitter and noise.

    python make_data.py OUT_DIR [--train 4000] [--test 1000] [--seed 7]

It creates OUT_DIR/train.npz and OUT_DIR/test.npz (arrays `images`, float32 in [0, 1], and
`labels`, int64). Generated, not downloaded: the machines that run the demo reach no data hub.
"""

import argparse
from pathlib import Path

import numpy as np

H, W = 12, 8
# Segments a..g of a seven-segment display, as (row slice, column slice) on the 12x8 grid.
SEGMENTS = {
    "a": (slice(1, 2), slice(2, 6)),
    "b": (slice(1, 6), slice(6, 7)),
    "c": (slice(6, 11), slice(6, 7)),
    "d": (slice(10, 11), slice(2, 6)),
    "e": (slice(6, 11), slice(1, 2)),
    "f": (slice(1, 6), slice(1, 2)),
    "g": (slice(5, 6), slice(2, 6)),
}
DIGITS = ["abcdef", "bc", "abdeg", "abcdg", "bcfg", "acdfg", "acdefg", "abc", "abcdefg", "abcdfg"]


def glyph(digit: int) -> np.ndarray:
    image = np.zeros((H, W), dtype=np.float32)
    for segment in DIGITS[digit]:
        rows, cols = SEGMENTS[segment]
        image[rows, cols] = 1.0
    return image


def sample(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 10, size=count)
    images = np.empty((count, H, W), dtype=np.float32)
    for i, digit in enumerate(labels):
        image = glyph(int(digit)) * rng.uniform(0.6, 1.0)
        image = np.roll(image, rng.integers(-1, 2), axis=0)
        image = np.roll(image, rng.integers(-1, 2), axis=1)
        # Drop a segment pixel here and there, add speckle: the classes overlap a little.
        image *= rng.random((H, W)) > 0.15
        image += rng.normal(0.0, 0.25, (H, W))
        images[i] = np.clip(image, 0.0, 1.0)
    return images, labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", args.train), ("test", args.test)):
        images, labels = sample(count, rng)
        np.savez_compressed(args.out_dir / f"{name}.npz", images=images, labels=labels)
        print(f"wrote {args.out_dir / f'{name}.npz'}: {count} images")


if __name__ == "__main__":
    main()
