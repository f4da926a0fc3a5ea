"""The GPU set a worker owns: declared with `--gpus`, found by NVML, or none (a CPU node)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from common.fleet.packing import table_distance


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
    # How close each pair of GPUs is, from NVML's topology: ((a, b, level), ...), lower is
    # closer (common_ancestor_level; NVLink-joined pairs lowest). Empty: declared GPUs.
    topology: tuple[tuple[int, int, int], ...] = ()

    def distance(self):
        """The packing's distance between two GPUs, or None (adjacent indices are close)."""
        if not self.topology:
            return None
        return table_distance({(a, b): level for a, b, level in self.topology})

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
    """`0,1` -> GPUs 0 and 1; `0-3` -> 0 to 3; `none` or `` -> a CPU node."""
    text = text.strip()
    if text.lower() in ("", "none", "cpu"):
        return GpuSet((), "none")
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise GpuSpecError(f"--gpus: {part!r} is not a GPU index (expected e.g. 0,1 or 0-3)")
        if dash and int(last) < int(first):
            raise GpuSpecError(f"--gpus: {part!r} is an empty range")
        for index in range(int(first), int(last if dash else first) + 1):
            if index in indices:
                raise GpuSpecError(f"--gpus: GPU {index} given twice")
            indices.append(index)
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
            _topology(pynvml, count),
        )
    finally:
        pynvml.nvmlShutdown()


# Lower is closer: NVLink between the pair, then NVML's common-ancestor levels (one board,
# one PCIe switch, several switches, one host bridge, one socket, across sockets).
NVLINK_LEVEL = 0


def _topology(pynvml, count: int) -> tuple[tuple[int, int, int], ...]:
    """Each pair's closeness as NVML sees it; empty when NVML cannot say."""
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        linked = _nvlinked(pynvml, handles)
        pairs = []
        for a, b in combinations(range(count), 2):
            level = int(pynvml.nvmlDeviceGetTopologyCommonAncestor(handles[a], handles[b]))
            pairs.append((a, b, NVLINK_LEVEL if (a, b) in linked else level))
        return tuple(pairs)
    except pynvml.NVMLError:
        return ()


def _nvlinked(pynvml, handles) -> set[tuple[int, int]]:
    """The pairs joined by an active NVLink (by PCI bus id of each link's far end)."""
    bus = {}
    for i, handle in enumerate(handles):
        bus[_text(pynvml.nvmlDeviceGetPciInfo(handle).busId)] = i
    linked = set()
    for i, handle in enumerate(handles):
        for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
            try:
                if not pynvml.nvmlDeviceGetNvLinkState(handle, link):
                    continue
                far = bus.get(_text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId))
            except pynvml.NVMLError:
                break  # no such link (or no NVLink at all)
            if far is not None and far != i:
                linked.add((min(i, far), max(i, far)))
    return linked


def _text(value) -> str:
    return (value.decode() if isinstance(value, bytes) else value).lower()


def resolve_gpu_set(spec: str | None) -> GpuSet:
    return parse_gpus(spec) if spec is not None else discover_gpus()
