"""Counts for the hostile-input suite: inputs tried, crashes (an exception that is not a UserError
with a message), lost items (a good item neither imported nor reported)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Tally:
    tried: int = 0
    crashes: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.tried} inputs tried, {len(self.crashes)} crashes, {len(self.lost)} lost"


TALLY = Tally()
