"""A run's attempts, read from its history: each claim starts one (on its node), the next
PENDING (queued again, handed back) or end state ends it; with the checkpoint each was given
back (the run's `resumed` record)."""

from __future__ import annotations

from common.run import HistoryEntry
from common.states import RunState

CLAIMED = "claimed by "


def attempts(history: list[HistoryEntry], resumed: dict) -> list[dict]:
    out: list[dict] = []
    for entry in history:
        if entry.state is RunState.DOWNLOADING and entry.message.startswith(CLAIMED):
            number = len(out) + 1
            out.append(
                {
                    "attempt": number,
                    "node": entry.message.removeprefix(CLAIMED),
                    "started_at": entry.at,
                    "ended_at": None,
                    "ended": None,
                    "resumed_from": resumed.get(str(number)),
                }
            )
        elif out and out[-1]["ended_at"] is None:
            if entry.state is RunState.PENDING or entry.state.terminal:
                out[-1]["ended_at"] = entry.at
                why = entry.message
                out[-1]["ended"] = f"{entry.state.value}: {why}" if why else entry.state.value
    return out
