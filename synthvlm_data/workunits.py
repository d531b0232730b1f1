"""Sample ids, seeds and work units, all fixed before anything runs.

Why: the same recipe and seed must give the same bytes whether one process, 8 GPUs or 20 machines
run it. So nothing here depends on process count or order of execution: ids come from content,
seeds from a stable hash of (recipe seed, sample id, repeat index), and rows are grouped into
fixed shards (and fixed generation batches inside them) before any backend sees them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# LLaVA's brief-caption instructions (llava/data: `conversation` prompts used for LCS-558K
# pretraining). SynthVLM pairs each caption with one chosen at random; we choose by seed.
BRIEF_CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Share a concise interpretation of the image provided.",
    "Present a compact description of the photo's key features.",
    "Relay a brief, clear account of the picture shown.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
    "Create a compact narrative representing the image presented.",
)

SEED_BITS = 63  # torch.Generator.manual_seed takes a signed 64-bit value


def sample_id(source: str, source_id: str, caption: str) -> str:
    """A stable id from a caption's provenance and text (not its position in a file)."""
    h = hashlib.sha256(f"{source}\x1f{source_id}\x1f{caption}".encode()).hexdigest()
    return h[:16]


def stable_hash(*parts: object, sep: str = ":", byteorder: Literal["big", "little"] = "big") -> int:
    """The first 8 bytes of SHA-256(sep.join(parts)) as an unsigned 64-bit integer: the one hash every
    seed of the project comes from, stable across Python versions, platforms and processes.

    Call sites pass their own `sep` and `byteorder` (image seeds: ':' and big-endian; caption
    synthesis and the judge: '\\x1f' and little-endian) because each fixes bytes already written:
    changing one changes a dataset.
    """
    digest = hashlib.sha256(sep.join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], byteorder)


def derive_seed(recipe_seed: int, sid: str, repeat: int | str = 0) -> int:
    """A per-sample seed (63 bits): the generator seed of image `repeat` of sample `sid`."""
    return stable_hash(recipe_seed, sid, repeat) & ((1 << SEED_BITS) - 1)


def choose_prompt(recipe_seed: int, sid: str) -> str:
    return BRIEF_CAPTION_PROMPTS[derive_seed(recipe_seed, sid, "prompt") % len(BRIEF_CAPTION_PROMPTS)]


def chunk(n: int, size: int) -> list[range]:
    """Split range(n) into consecutive fixed-size chunks (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass(frozen=True)
class WorkUnit:
    """One shard of one stage: the unit every backend distributes."""

    stage: str
    index: int
    num_units: int

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.index:05d}-of-{self.num_units:05d}"


def plan_units(stage: str, num_units: int) -> list[WorkUnit]:
    return [WorkUnit(stage, i, num_units) for i in range(num_units)]


def shard_of(units: Sequence[WorkUnit], rank: int, world: int) -> list[WorkUnit]:
    """The units a rank runs: round-robin, so uneven unit costs spread out."""
    return list(units[rank::world])
