"""The `datasets` builder for synthvlm-data: one `BuilderConfig` per shipped recipe.

`datasets` >= 4 no longer loads dataset scripts through `load_dataset`, so this builder is used
directly (and is never published as a `.py`):

    from builders import SynthVLM
    builder = SynthVLM(config_name="tiny")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")

"Downloading" runs (or resumes) the recipe's `synthvlm build` into the same work dir and dataset
folder as the CLI, and the examples are the exported rows, read back from that folder's parquet
shards: the builder and `synthvlm build` give the same rows, in the same order, with the same
bytes. The build runs in `download_and_prepare` before `datasets` prepares anything, so its
errors reach the caller as the one-line `SynthVLMError`s they are (`datasets` wraps errors raised
while generating examples in a generic `DatasetGenerationError`), and so `num_proc` can split the
work over the exported shards.

Under `accelerate launch` (`backend="accelerate"`, what `make build-dataset NPROC=N` runs) every
rank runs `download_and_prepare`: all ranks build together (the stages' units are split over
them), then the main process alone prepares the Arrow cache while the others wait, and then they
open the cache it wrote. `datasets` holds a file lock on the cache for the whole of its own
`download_and_prepare`; building inside it made one rank hold the lock while waiting for the other
at the build's first barrier, and the other wait for the lock: a deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import yaml
from datasets.builder import Key

from synthvlm_data.presentation.cards import CITATION, HOMEPAGE
from synthvlm_data.config import RECIPES_PACKAGE, Recipe, load_recipe, shipped_recipes
from synthvlm_data.columns import dataset_features

ROWS_PER_BATCH = 256


@dataclass
class SynthVLMConfig(datasets.BuilderConfig):
    """A recipe to build.

    `recipe`: a shipped recipe name or a path to a recipe YAML (default: the config's name).
    `overrides`: nested keys merged into the recipe, e.g. `{"captions": {"limit": 100}}`.
    """

    recipe: str | None = None
    overrides: dict | None = None

    def load_recipe(self) -> Recipe:
        return load_recipe(self.recipe or self.name, overrides=self.overrides or None)


def _shipped_configs() -> list[SynthVLMConfig]:
    """One config per shipped recipe. Only the description is read here: a recipe is validated when
    its config is used, so one broken recipe cannot make the whole builder unimportable."""
    configs = []
    for name in shipped_recipes():
        try:
            raw = yaml.safe_load((resources.files(RECIPES_PACKAGE) / f"{name}.yaml").read_text(encoding="utf-8"))
            description = " ".join(str(raw.get("description") or "").split())
        except (yaml.YAMLError, AttributeError, OSError):
            description = ""
        configs.append(SynthVLMConfig(name=name, recipe=name, description=description or f"recipe {name}"))
    return configs


def _built_from(folder: Path, recipe: Recipe) -> bool:
    """Whether `folder` is a complete `synthvlm build` export of `recipe` (same fingerprint)."""
    from synthvlm_data.errors import SynthVLMError
    from synthvlm_data.presentation.report import find_recipe

    if not list((folder / "data").glob("train-*.parquet")):
        return False
    try:
        return find_recipe(folder).fingerprint() == recipe.fingerprint()
    except SynthVLMError:
        return False


class SynthVLM(datasets.GeneratorBasedBuilder):
    """Synthetic image-caption pairs (SynthVLM / Synth^2) built from a recipe.

    Extra keyword arguments (not part of the config, so they do not change the cache key):
    `work_dir` (default: the CLI's `runs/<name>-<fingerprint>`), `out_dir` (the exported dataset
    folder; default: the recipe's `export.name`, like `synthvlm build`), `backend`, `progress`,
    `overwrite` (as `synthvlm build --overwrite`: the folder is checked before anything is built).
    """

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = SynthVLMConfig
    BUILDER_CONFIGS = _shipped_configs()
    DEFAULT_CONFIG_NAME = "tiny"

    def __init__(
        self,
        *args,
        work_dir: str | Path | None = None,
        out_dir: str | Path | None = None,
        backend: str = "local",
        progress: bool = True,
        overwrite: bool = False,
        **kwargs,
    ):
        self.overwrite = overwrite
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.backend = backend
        self.progress = progress
        self.build_result = None
        self.main_process = True  # False on the other ranks of a multi-process launch
        self._data_dir: Path | None = None
        super().__init__(*args, **kwargs)

    def _create_builder_config(self, config_name=None, custom_features=None, config_id=None, **config_kwargs):
        """Key the cache by the recipe's fingerprint: a changed recipe never reuses another's Arrow files."""
        builder_config, cid = super()._create_builder_config(
            config_name=config_name, custom_features=custom_features, config_id=config_id, **config_kwargs
        )
        self.recipe = builder_config.load_recipe()
        if config_id is None:
            cid = f"{builder_config.name}-{self.recipe.fingerprint()}"
        return builder_config, cid

    def _info(self) -> datasets.DatasetInfo:
        recipe = self.recipe
        return datasets.DatasetInfo(
            description=recipe.description.strip(),
            features=dataset_features(with_concept=recipe.captions.synthesis is not None,
                                      with_safety=recipe.score.safety is not None),
            homepage=HOMEPAGE,
            license=recipe.export.license,
            citation=CITATION,
        )

    def download_and_prepare(self, *args, **kwargs):
        """Build (or resume) the recipe's dataset folder, then prepare the Arrow cache from it.

        With a multi-process backend every rank calls this: the build is collective, the cache is
        prepared by the main process only (see the module docstring), and the other ranks then open it.
        Decisions and failures of the main process reach every rank by broadcast, so no rank takes
        another path or waits at a barrier the main process will never reach.
        """
        from synthvlm_data.backends import BackendOptions, get_backend
        from synthvlm_data.errors import SynthVLMError

        runner = get_backend(self.backend, BackendOptions.from_env())
        main = self.main_process = runner.is_main_process()
        self._build(runner, main)
        failure = None
        if main:
            try:
                super().download_and_prepare(*args, **kwargs)
            except BaseException as exc:
                failure = exc
        message = runner.broadcast(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if message is not None:
            raise SynthVLMError(f"the main process failed to prepare the Arrow cache ({message}); see its output")
        if not main:  # the cache is complete now: this only reads its info
            super().download_and_prepare(*args, **kwargs)

    def _build(self, runner, main: bool) -> None:
        """Run or resume the build into the export folder, unless it already holds this recipe's dataset.

        The main process decides and every rank follows (a rank reading the folder on its own could
        see it in another state, e.g. on a shared file system while it is being renamed into place).
        """
        from synthvlm_data.build import build

        out_dir = self.out_dir or Path(self.recipe.export.name)
        built = runner.broadcast((self.work_dir is None and _built_from(out_dir, self.recipe)) if main else None)
        if built:
            # A complete export of this very recipe (exports are renamed into place whole): read it as
            # it is. Rebuilding would regenerate every image when the work dir is not at hand (a copied
            # or cloned folder) and rewrite its card without its quality report.
            if main:
                print(f"synthvlm: {out_dir} already holds this recipe's dataset (fingerprint "
                      f"{self.recipe.fingerprint()}): reading it; delete the folder or pass work_dir= to rebuild",
                      flush=True)
            self._data_dir = out_dir
            return
        self.build_result = build(
            self.recipe, out_dir, work_dir=self.work_dir, backend=self.backend, progress=self.progress,
            overwrite=self.overwrite,
        )
        self._data_dir = Path(self.build_result.out_dir)

    def _split_generators(self, dl_manager):
        data_dir = self._data_dir
        if data_dir is None:
            raise RuntimeError("SynthVLM builds in download_and_prepare(); call that, not _split_generators")
        files = sorted((data_dir / "data").glob("train-*.parquet"))
        # The exported schema is the truth (e.g. whether a `concept` column exists).
        self.info.features = datasets.Features.from_arrow_schema(pq.read_schema(files[0]))
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"files": [str(f) for f in files]})]

    def _generate_shards(self, files: list[str]):
        yield from files

    def _generate_examples(self, files: list[str]):
        for shard_index, path in enumerate(files):
            row_index = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=ROWS_PER_BATCH):
                for row in batch.to_pylist():
                    yield Key(shard_index, row_index), row
                    row_index += 1
