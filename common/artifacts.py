"""Where submitted model zips wait for a worker: a directory shared by API and workers."""

from __future__ import annotations

import os
from pathlib import Path


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, run_id: str, data: bytes) -> str:
        """Store the zip; returns the reference kept on the run."""
        ref = f"{run_id}/model.zip"
        target = self.root / ref
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name("model.zip.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
        return ref

    def path(self, ref: str) -> Path:
        return self.root / ref

    def delete(self, ref: str) -> None:
        target = self.root / ref
        target.unlink(missing_ok=True)
        try:
            target.parent.rmdir()
        except OSError:
            pass
