"""Pairing an image with the joint angles of the same moment (ROS-free: stamps are float seconds).

The arm moves while the camera exposes; a joint state 50 ms off can move the hand by centimetres.
``JointBuffer`` keeps a short history of joint states and answers "joint angles at time t" by
linear interpolation between the two states around t, or the nearest one within a tolerance;
anything else is refused with a reason that names the parameter to change.
"""
from __future__ import annotations

import bisect
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np


class JointBuffer:
    def __init__(self, joint_names: Sequence[str], tolerance_s: float = 0.05,
                 max_gap_s: float = 0.5, history_s: float = 5.0, jump_back_s: float = 1.0):
        self.joint_names = list(joint_names)
        self.tolerance_s = float(tolerance_s)
        self.max_gap_s = float(max_gap_s)     # interpolate only between states this close
        self.history_s = float(history_s)
        self.jump_back_s = float(jump_back_s)
        self._t: List[float] = []
        self._q: List[np.ndarray] = []
        self.resets = 0                       # times the clock jumped back and we started over

    def __len__(self) -> int:
        return len(self._t)

    @property
    def newest(self) -> Optional[float]:
        return self._t[-1] if self._t else None

    def clear(self) -> None:
        self._t, self._q = [], []

    def add(self, stamp: float, positions: Sequence[float]) -> Optional[str]:
        """Store one state (positions in joint_names order). Returns a note when the clock jumped
        back (bag loop, /clock reset): the history is dropped then, not mixed across the jump."""
        note = None
        stamp = float(stamp)
        if self._t and stamp < self._t[-1] - self.jump_back_s:
            note = ("joint_states time jumped back %.2f s (bag loop or clock reset): history "
                    "cleared" % (self._t[-1] - stamp))
            self.clear()
            self.resets += 1
        q = np.asarray(positions, dtype=float).reshape(len(self.joint_names))
        i = bisect.bisect_right(self._t, stamp)   # out-of-order arrivals are inserted in place
        if i > 0 and self._t[i - 1] == stamp:
            self._q[i - 1] = q
        else:
            self._t.insert(i, stamp)
            self._q.insert(i, q)
        cutoff = self._t[-1] - self.history_s
        k = bisect.bisect_left(self._t, cutoff)
        if k:
            del self._t[:k], self._q[:k]
        return note

    def lookup(self, stamp: float) -> Tuple[Optional[np.ndarray], str]:
        """(positions, "") or (None, reason)."""
        if not self._t:
            return None, "no joint_states received yet"
        stamp = float(stamp)
        i = bisect.bisect_left(self._t, stamp)
        if i < len(self._t) and self._t[i] == stamp:
            return self._q[i].copy(), ""
        if 0 < i < len(self._t):
            t0, t1 = self._t[i - 1], self._t[i]
            if t1 - t0 <= self.max_gap_s:
                a = (stamp - t0) / (t1 - t0)
                return (1 - a) * self._q[i - 1] + a * self._q[i], ""
            near = min(i - 1, i, key=lambda j: abs(self._t[j] - stamp))
            if abs(self._t[near] - stamp) <= self.tolerance_s:
                return self._q[near].copy(), ""
            return None, ("joint_states have a %.3f s gap around the image stamp (tolerance "
                          "%.3f s, ~joint_tolerance_s)" % (t1 - t0, self.tolerance_s))
        if i == len(self._t):
            lag = stamp - self._t[-1]
            if lag <= self.tolerance_s:
                return self._q[-1].copy(), ""
            return None, ("joint_states too old for the image: newest is %.3f s before it "
                          "(tolerance %.3f s, ~joint_tolerance_s)" % (lag, self.tolerance_s))
        lead = self._t[0] - stamp
        if lead <= self.tolerance_s:
            return self._q[0].copy(), ""
        return None, ("image is %.3f s older than the joint_states history (%.1f s kept): "
                      "stale image or clock mismatch" % (lead, self.history_s))

    def waiting_may_help(self, stamp: float) -> bool:
        """True when no state at/after ``stamp`` has arrived yet (a short wait may bring one)."""
        return bool(self._t) and self._t[-1] < float(stamp) and math.isfinite(stamp)
