"""Recipe schema of caption sources (where captions come from).

Its own module, apart from `captions.config`, because caption filters use it too (the
`decontaminate` filter's evaluation sets are sources) and `captions.config` imports the filters.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from synthvlm_data.schema import StrictModel


class WorldPool(StrictModel):
    """The miniature world's caption pool (`synthvlm_data.world.pool`): true captions of held-out
    renders plus captions damaged in known ways, each with its original render."""

    n_clean: int = Field(default=160, ge=0, description="True captions.")
    n_per_corruption: int = Field(default=16, ge=0, description="Captions per corruption kind "
                                  "(repeated words/characters, URL spam, flagged word, gibberish, shuffled, wrong attribute).")
    seed: int = Field(default=0, description="Order and wording of the pool (the scenes are the world's `pool` split).")

    @model_validator(mode="after")
    def _not_empty(self) -> WorldPool:
        if self.n_clean + self.n_per_corruption == 0:
            raise ValueError("world pool is empty: set n_clean or n_per_corruption above 0")
        return self


class CaptionSource(StrictModel):
    """One place captions come from. Every caption keeps `source` and its original id."""

    # Offline errors suggest the `tiny` recipe (False where the source is not part of a recipe).
    offers_tiny_recipe: ClassVar[bool] = True

    name: str = Field(min_length=1, description="Provenance label stored in the `source` column.")
    type: Literal["file", "hub", "llava", "world"] = Field(
        default="file",
        description="`file`: local json/jsonl/csv/parquet/txt; `hub`: a `datasets` dataset "
        "(Hub id with pinned revision, or a local dataset folder), streamed; `llava`: "
        "LLaVA-Pretrain JSON (id, image, conversations), caption = first gpt turn; `world`: the "
        "miniature world's caption pool (`world` settings), with original renders.",
    )
    path: str | None = Field(
        default=None,
        description="Local file (json/jsonl/csv/parquet/txt). `package://NAME` is a file shipped "
        "in synthvlm_data/data/. With `dataset` (type file/llava): a file inside that Hub dataset repo.",
    )
    dataset: str | None = Field(default=None, description="Hub dataset id (type: hub), or the Hub "
                                "dataset repo holding `path` (type: file/llava).")
    revision: str | None = Field(default=None, description="Pinned Hub revision (type: hub).")
    subset: str | None = None
    split: str = "train"
    id_column: str | None = Field(default="id", description="None: the 1-based line/row number.")
    caption_column: str = "caption"
    image_column: str | None = Field(
        default=None,
        description="Column holding the caption's original image (a path relative to "
        "`image_root`, or a `datasets` Image). Needed by the clip_similarity / blip_itm filters. "
        "type: llava uses `image` unless set.",
    )
    image_root: str | None = Field(
        default=None, description="Folder image paths are relative to (default: the file's folder)."
    )
    limit: int | None = Field(default=None, ge=1, description="Read at most this many rows.")
    world: WorldPool | None = Field(default=None, description="type: world only: the pool's size and seed "
                                    "(default: WorldPool's defaults).")

    @property
    def world_pool(self) -> WorldPool:
        """The world pool's settings of a `type: world` source (its defaults when not set)."""
        return self.world or WorldPool()

    @model_validator(mode="after")
    def _where(self) -> CaptionSource:
        if self.type == "world":
            if self.path or self.dataset:
                raise ValueError(f"source '{self.name}': type world generates its captions; remove `path`/`dataset`")
            return self
        if self.world is not None:
            raise ValueError(f"source '{self.name}': `world` settings need type: world")
        if self.type == "hub" and not self.dataset:
            raise ValueError(f"source '{self.name}': type hub needs `dataset`")
        if self.type != "hub" and not self.path:
            raise ValueError(f"source '{self.name}': type {self.type} needs `path` (with `dataset`: "
                             "the file inside that Hub dataset repo)")
        if self.dataset and not self.revision and not self.dataset.startswith((".", "/", "~")):
            raise ValueError(
                f"source '{self.name}': set `revision` for Hub dataset '{self.dataset}' (a commit sha "
                "pins it; a branch name is recorded but not reproducible)"
            )
        return self
