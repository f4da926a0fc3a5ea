"""The GPU set a worker owns: declared with `--gpus`, found by NVML, or none (a CPU node)."""

from __future__ import annotations

from dataclasses import dataclass


class GpuSpecError(ValueError):
    pass


@dataclass(frozen=True)
class GpuSet:
    indices: tuple[int, ...]
    # "declared" (--gpus), "nvml" (found on the machine) or "none" (CPU node).
    source: str
    names: tuple[str, ...] = ()
    uuids: tuple[str, ...] = ()
    memory_bytes: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def label(self) -> str:
        return "gpu" + "-".join(map(str, self.indices)) if self.indices else "cpu"

    def for_run(self, gpu_count: int) -> tuple[int, ...]:
        """The GPUs a run of `gpu_count` GPUs gets on this worker (none on a CPU node)."""
        return self.indices[:gpu_count]

    def describe(self) -> str:
        if not self.indices:
            return "no GPUs: CPU node (runs get an empty CUDA_VISIBLE_DEVICES)"
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"GPUs {','.join(map(str, self.indices))} [{self.source}]{names}"


def parse_gpus(text: str) -> GpuSet:
    """`0,1` -> GPUs 0 and 1; `none` or `` -> a CPU node."""
    text = text.strip()
    if text.lower() in ("", "none", "cpu"):
        return GpuSet((), "none")
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise GpuSpecError(f"--gpus: {part!r} is not a GPU index (expected e.g. 0,1)")
        if int(part) in indices:
            raise GpuSpecError(f"--gpus: GPU {part} given twice")
        indices.append(int(part))
    return GpuSet(tuple(indices), "declared")


def discover_gpus() -> GpuSet:
    """Every GPU NVML reports, or a CPU node when there is no NVML or no GPU."""
    try:
        import pynvml
    except ImportError:
        return GpuSet((), "none")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return GpuSet((), "none")
    try:
        count = pynvml.nvmlDeviceGetCount()
        names, uuids, memory = [], [], []
        for i in range(count):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name, uuid = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)
            names.append(name.decode() if isinstance(name, bytes) else name)
            uuids.append(uuid.decode() if isinstance(uuid, bytes) else uuid)
            memory.append(int(pynvml.nvmlDeviceGetMemoryInfo(handle).total))
        return GpuSet(
            tuple(range(count)),
            "nvml" if count else "none",
            tuple(names),
            tuple(uuids),
            tuple(memory),
        )
    finally:
        pynvml.nvmlShutdown()


def resolve_gpu_set(spec: str | None) -> GpuSet:
    return parse_gpus(spec) if spec is not None else discover_gpus()
