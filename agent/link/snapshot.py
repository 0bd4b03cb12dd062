"""The hello's state in parts: a node with thousands of containers and images still connects.

Each part stays well under the protocol's message size (``MAX_MESSAGE_BYTES``); there is always at
least one, and the last carries what is not a list (ports host programs hold, the runtime's error).
"""

from __future__ import annotations

import json
from typing import Any

from agent import protocol as p

__all__ = ["PART_BYTES", "snapshot_parts"]

PART_BYTES = p.MAX_MESSAGE_BYTES // 2  # room for the envelope and a margin


def _size(item: Any) -> int:
    return len(json.dumps(p.codec.encode(item), separators=(",", ":"), ensure_ascii=False).encode()) + 1


def snapshot_parts(state: p.Snapshot, part_bytes: int = PART_BYTES) -> list[p.SnapshotPart]:
    """``state`` cut into parts of at most ``part_bytes`` each (an item larger than that goes alone)."""
    parts: list[p.SnapshotPart] = []
    lists: dict[str, list[Any]] = {"containers": [], "images": []}
    used = 0

    def flush() -> None:
        nonlocal used
        parts.append(p.SnapshotPart(part=len(parts),
                                    containers=None if state.containers is None else lists["containers"],
                                    images=None if state.images is None else lists["images"]))
        lists["containers"], lists["images"], used = [], [], 0

    for key, items in (("containers", state.containers), ("images", state.images)):
        for item in items or ():
            size = _size(item)
            if used and used + size > part_bytes:
                flush()
            lists[key].append(item)
            used += size
    flush()
    last = parts[-1]
    parts[-1] = p.SnapshotPart(part=last.part, containers=last.containers, images=last.images,
                               listening=state.listening, runtime_error=state.runtime_error)
    return parts


def merge_parts(parts: list[p.SnapshotPart]) -> p.Snapshot:
    """The state the parts were cut from (dmd's side). A list no part reports stays None (not
    reported: the runtime could not be read), which is not an empty inventory."""
    containers = [c for part in parts for c in part.containers or ()]
    images = [i for part in parts for i in part.images or ()]
    last = parts[-1] if parts else p.SnapshotPart(part=0)
    return p.Snapshot(containers=containers if any(x.containers is not None for x in parts) else None,
                      images=images if any(x.images is not None for x in parts) else None,
                      listening=last.listening, runtime_error=last.runtime_error)
