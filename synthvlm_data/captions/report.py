"""Per-step accounting: every caption a step sees is either kept or dropped, and counted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def _round(v):
    return round(float(v), 6) if isinstance(v, float) else v


@dataclass
class StepReport:
    name: str
    params: dict = field(default_factory=dict)
    max_examples: int = 5
    seen: int = 0
    kept: int = 0
    dropped: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def keep(self, n: int = 1) -> None:
        self.seen += n
        self.kept += n

    def drop(self, row: dict, value=None, reason: str | None = None, note: str | None = None) -> None:
        self.seen += 1
        self.dropped += 1
        if reason:
            self.reasons[reason] += 1
        if len(self.examples) < self.max_examples:
            ex = {"source": row.get("source"), "source_id": row.get("source_id"),
                  "caption": row.get("caption") if isinstance(row.get("caption"), str) else repr(row.get("caption"))[:200]}
            if isinstance(ex["caption"], str) and len(ex["caption"]) > 300:
                ex["caption"] = ex["caption"][:300] + "..."
            if value is not None:
                ex["value"] = _round(value)
            if reason:
                ex["reason"] = reason
            if note:
                ex["note"] = note
            self.examples.append(ex)

    def as_dict(self) -> dict:
        d = {"name": self.name, "seen": self.seen, "kept": self.kept, "dropped": self.dropped,
             "examples": self.examples}
        if self.params:
            d["params"] = self.params
        if self.reasons:
            d["reasons"] = dict(sorted(self.reasons.items()))
        if self.extra:
            d.update({k: _round(v) for k, v in self.extra.items()})
        return d
