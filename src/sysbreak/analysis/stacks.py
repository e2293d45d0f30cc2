"""Stacks of the log as the analysis groups them (``--depth``, ``--group-outside``), and their labels.

:class:`StackGroups` maps the log's stack ids to group ids; :func:`label_from_frames` names a stack by its first
interesting frame (see the ``label`` paragraph of :mod:`sysbreak.analysis.pipeline`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sysbreak.analysis.labels import frame_description, label_from_frames
from sysbreak.capture.schema import Frame, PyFrame
from sysbreak.errors import SysbreakError

__all__ = ["UNKNOWN_STACK", "Group", "StackGroups", "frame_description", "label_from_frames"]

UNKNOWN_STACK = 0  # the id of the stack of events that name none


def _frame_key(f: Frame) -> tuple[Any, ...]:
    if f.module is not None and f.offset is not None:
        return (f.module, f.offset)
    return (f.pc, f.function)


@dataclass
class Group:
    """Stacks equal after folding: ``id`` is the first member's id."""

    id: int
    frames: tuple[Frame, ...]
    python: tuple[PyFrame, ...]
    members: list[int] = field(default_factory=list)


class StackGroups:
    """Raw stack ids -> group ids, applying ``depth`` and ``group_outside``."""

    def __init__(self, depth: int | None, group_outside: str | None) -> None:
        if depth is not None and depth < 1:
            raise SysbreakError(f"--depth must be 1 or more, not {depth}")
        self.depth = depth
        try:
            self.outside = re.compile(group_outside) if group_outside else None
        except re.error as e:
            raise SysbreakError(f"--group-outside {group_outside!r} is not a valid regular expression ({e})") from None
        self.folding = depth is not None or self.outside is not None
        self.group_of: dict[int, int] = {}  # raw id -> group id
        self.groups: dict[int, Group] = {}
        self._by_key: dict[tuple[Any, ...], int] = {}

    def add(self, sid: int, frames: tuple[Frame, ...], python: tuple[PyFrame, ...]) -> None:
        if sid in self.group_of:
            return
        if not self.folding:
            # Records with the same frames are one stack: a log of raw stacks (sysbreak-events/3) keys them by their
            # bytes, so the same call path recorded with other local values comes as another record.
            same: tuple[Any, ...] = (
                (
                    "same",
                    tuple((f.module, f.offset, f.pc if f.offset is None else None, f.function) for f in frames),
                    tuple((p.file, p.line, p.function) for p in python),
                )
                if frames
                else ("raw", sid)
            )
            first = self._by_key.get(same)
            if first is None:
                self._by_key[same] = sid
                self.group_of[sid] = sid
                self.groups[sid] = Group(sid, frames, python, [sid])
            else:
                self.group_of[sid] = first
                self.groups[first].members.append(sid)
            return
        key_frames = frames
        if self.outside is not None:
            key: tuple[Any, ...] = ("raw", sid)  # no frame outside: a group of its own
            for i, f in enumerate(frames):
                if f.module is None or not self.outside.search(f.module):
                    key_frames = frames[i:]
                    key = ("outside", _frame_key(f))
                    break
        else:
            key_frames = frames[: self.depth]
            key = ("depth", *(_frame_key(f) for f in key_frames))
        if self.depth is not None and self.outside is not None:
            key_frames = key_frames[: self.depth]
        gid = self._by_key.get(key)
        if gid is None:
            self._by_key[key] = sid
            self.group_of[sid] = sid
            self.groups[sid] = Group(sid, key_frames, python, [sid])
            return
        g = self.groups[gid]
        self.group_of[sid] = gid
        g.members.append(sid)
        # Keep the frames all members share (from the key frame outwards), and Python frames only if equal.
        n = 0
        for a, b in zip(g.frames, key_frames, strict=False):
            if _frame_key(a) != _frame_key(b):
                break
            n += 1
        g.frames = g.frames[: max(n, 1)]
        if g.python != python:
            g.python = ()

    def gid(self, sid: int | None) -> int:
        if sid is None:
            sid = UNKNOWN_STACK
        g = self.group_of.get(sid)
        if g is None:  # an event whose stack record is missing (damaged line): a stack of its own
            self.group_of[sid] = sid
            self.groups[sid] = Group(sid, (), (), [sid])
            g = sid
        return g

    def group(self, gid: int) -> Group:
        """The group ``gid`` (an empty one for an id never seen)."""
        return self.groups.get(gid) or Group(gid, (), (), [gid])

    def label(self, grp: Group) -> str:
        """The label of a group: :func:`label_from_frames` (``group_outside`` as the libraries to skip)."""
        if grp.id == UNKNOWN_STACK and not grp.frames:
            return "(no stack)"
        if not grp.frames:
            return f"stack {grp.id} (its frames are not in the log)"
        if self.outside is not None:
            return label_from_frames(grp.frames, self.outside)
        return label_from_frames(grp.frames)
