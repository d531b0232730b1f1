"""The published dataset folder: one owner for its layout.

    <dataset>/README.md              the card (`presentation.cards` renders it from the files below)
    <dataset>/data/*.parquet         the rows (`stages.export` writes them)
    <dataset>/synthvlm_stats.json    the build's statistics (export)
    <dataset>/plots/report.json|md   the quality report and its plots (`synthvlm report`)
    <dataset>/decontamination.json   the contamination check (`synthvlm decontaminate`)

Each command writes only its own part; the card reads every part that is there when it is
rendered, so no writer needs to know another. Staging and the atomic replace of the whole folder
are `outdir.staging_dir` / `outdir.replace_dir`; which files the package wrote is the folder's marker.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from synthvlm_data.errors import InputDataError, RecipeError

CARD = "README.md"
DATA_DIR = "data"
SHARD_GLOB = f"{DATA_DIR}/*.parquet"
STATS_FILE = "synthvlm_stats.json"
CONTAMINATION_FILE = "decontamination.json"
QUALITY_DIR = "plots"
QUALITY_JSON = "report.json"
QUALITY_MD = "report.md"
# Files later commands add to a finished dataset folder (besides QUALITY_DIR); a re-export keeps them
# when the rows are the same bytes.
LATER_FILES = (CONTAMINATION_FILE,)


@dataclass(frozen=True)
class DatasetDir:
    """A dataset folder written by `synthvlm build` (read-only helpers; writers name its parts)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def card(self) -> Path:
        return self.root / CARD

    @property
    def stats_file(self) -> Path:
        return self.root / STATS_FILE

    @property
    def contamination_file(self) -> Path:
        return self.root / CONTAMINATION_FILE

    @property
    def quality_dir(self) -> Path:
        return self.root / QUALITY_DIR

    @property
    def quality_file(self) -> Path:
        return self.quality_dir / QUALITY_JSON

    def shards(self) -> list[Path]:
        return sorted(self.root.glob(SHARD_GLOB))

    def require_shards(self) -> list[Path]:
        """The parquet shards, or one line saying this is not a dataset folder."""
        files = self.shards()
        if not files:
            raise InputDataError(f"{self.root} has no {SHARD_GLOB}: pass a dataset folder written by `synthvlm build`")
        return files

    def stats(self) -> dict:
        """The build statistics (empty when the folder has none)."""
        return json.loads(self.stats_file.read_text(encoding="utf-8")) if self.stats_file.is_file() else {}

    def contamination(self) -> dict | None:
        f = self.contamination_file
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None

    def quality(self, report_dir: Path | None = None) -> dict | None:
        """The quality report `synthvlm report` left in `report_dir` (default `plots/`); None when
        there is none or it is not one (a file of that name the user wrote is not read as a report)."""
        path = Path(report_dir) / QUALITY_JSON if report_dir is not None else self.quality_file
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) and {"recipe", "table", "files"} <= set(report) else None

    def recipe(self, work_dir: Path | None = None):
        """The recipe that built the folder: `<dataset>/recipe.yaml`, the YAML block of the card, or
        the work dir's `recipe.yaml`, in that order. The work dir comes last because several selection
        rules can share one work dir (it is keyed by what the expensive stages depend on), so its
        recipe.yaml may carry another selection rule."""
        import yaml

        from synthvlm_data.config import recipe_from_dict
        from synthvlm_data.workdir import RECIPE_FILE, WorkDir

        candidates: list[tuple[str, str]] = []
        if (self.root / "recipe.yaml").is_file():
            candidates.append(((self.root / "recipe.yaml").read_text(encoding="utf-8"), str(self.root / "recipe.yaml")))
        if self.card.is_file():
            for block in re.findall(r"```ya?ml\n(.*?)\n```", self.card.read_text(encoding="utf-8"), flags=re.S):
                candidates.append((block, f"{self.card} (recipe block)"))
        if work_dir is not None and WorkDir(work_dir).has_recipe():
            work = WorkDir(work_dir)
            candidates.append((work.recipe_text(), str(work.root / RECIPE_FILE)))
        for text, where in candidates:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and "generate" in data and "name" in data:
                return recipe_from_dict(data, where)
        raise RecipeError(
            f"cannot find the recipe of {self.root}: no recipe.yaml there, no recipe block in its {CARD}"
            + (f", and none in {work_dir}" if work_dir else "")
            + "; pass --work-dir with the build's work directory"
        )


def find_recipe(dataset_dir: Path, work_dir: Path | None = None):
    """`DatasetDir(dataset_dir).recipe(work_dir)`."""
    return DatasetDir(dataset_dir).recipe(work_dir)
