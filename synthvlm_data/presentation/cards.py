"""Dataset cards: YAML metadata the Hub and `load_dataset` read, plus a body rendered from
`cards/dataset_card.md.j2` (`presentation.templates`).

The YAML is produced by `huggingface_hub.DatasetCardData` + `datasets`' own `MetadataConfigs` and
`DatasetInfosDict` serialisers, so `load_dataset(folder)` and the Hub read exactly what we wrote
(`configs:` tells them which files form which split, `dataset_info:` gives features and sizes).
The body is presentation only: everything in it comes from the recipe (`presentation.describe`),
the build statistics, the quality report's data when there is one (`presentation.report`), and the
plots found in the folder. Nothing secret is ever part of the context.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from synthvlm_data.dataset_dir import QUALITY_MD, DatasetDir
from synthvlm_data.presentation import describe
from synthvlm_data.presentation.templates import DATASET_CARD, render


# Library versions recorded in the card (distribution names; missing ones are skipped).
VERSIONED_LIBRARIES = (
    "synthvlm-data", "datasets", "huggingface_hub", "diffusers", "transformers", "torch", "open_clip_torch",
    "pyarrow", "pillow",
)

# Caption-filter steps whose dropped examples are not quoted in a public card (offensive words).
WITHHELD_EXAMPLE_STEPS = ("flagged", "nsfw", "toxic")

SYNTHVLM_BIBTEX = """@article{liu2024synthvlm,
  title   = {SynthVLM: Towards High-Quality and Efficient Synthesis of Image-Caption Datasets for Vision-Language Models},
  author  = {Liu, Zheng and Liang, Hao and Li, Bozhou and Xiong, Wentao and Chen, Chong and He, Conghui and Zhang, Wentao and Cui, Bin},
  journal = {arXiv preprint arXiv:2407.20756},
  note    = {ACM Multimedia 2025},
  year    = {2024}
}"""
SYNTH2_BIBTEX = """@inproceedings{sharifzadeh2024synth2,
  title     = {Synth$^2$: Boosting Visual-Language Models with Synthetic Captions and Image Embeddings},
  author    = {Sharifzadeh, Sahand and Kaplanis, Christos and Pathak, Shreya and Kumaran, Dharshan and Ilic, Anastasija and Mitrovic, Jovana and Blundell, Charles and Banino, Andrea},
  booktitle = {International Conference on Machine Learning (ICML)},
  note      = {arXiv:2403.07750},
  year      = {2024}
}"""
CITATION = f"{SYNTHVLM_BIBTEX}\n{SYNTH2_BIBTEX}"
HOMEPAGE = "https://arxiv.org/abs/2407.20756"  # the SynthVLM paper (the method these datasets follow)


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


def set_row_count(card_path: Path, rows: int, num_bytes: int) -> None:
    """Record a new train-split size in a card's YAML (rows removed from the data files); a folder
    without a card is left without one."""
    if not Path(card_path).is_file():
        return
    card = DatasetCard.load(card_path)
    info = card.data.dataset_info
    if isinstance(info, dict):
        for split in info.get("splits", []):
            if split.get("name") == "train":
                split["num_examples"], split["num_bytes"] = rows, num_bytes
        info["dataset_size"] = num_bytes
        card.data.size_categories = [size_category(rows)]
    card.save(card_path)


def dataset_card_data(
    *, recipe, features: datasets.Features, num_rows: int, num_bytes: int, num_shards: int
) -> DatasetCardData:
    """The card's YAML: license, task, size, `configs:` (data files) and `dataset_info:`."""
    exp = recipe.export
    card_data = DatasetCardData(
        license=exp.license,
        language=list(exp.language),
        task_categories=["image-to-text", "text-to-image"],
        size_categories=[size_category(num_rows)],
        annotations_creators=["machine-generated"],
        tags=list(exp.tags) + {"full": [], "tiny": ["tiny-random-models"], "world": ["miniature-world"]}[recipe.profile],
        pretty_name=exp.pretty_name or exp.name,
    )
    MetadataConfigs({"default": {"data_files": [{"split": "train", "path": "data/train-*.parquet"}]}}).to_dataset_card_data(card_data)
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=num_bytes, num_examples=num_rows))
    info = DatasetInfo(features=features, splits=splits, dataset_size=num_bytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return card_data


# --------------------------------------------------------------------------- body context


def library_versions() -> dict[str, str]:
    out = {}
    for dist in VERSIONED_LIBRARIES:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment_line() -> str:
    """The card's Environment entry: the lock file the environment was installed from (its SHA-256
    names the exact package set that rebuilds the data) and any package that has drifted from it."""
    from synthvlm_data.environment import LOCK_FILE, lock_status

    status = lock_status()
    if status is None:
        return f"not installed from the project's `{LOCK_FILE}` (the library versions above are what ran)"
    return status.describe()


def find_plots(folder: Path) -> list[dict]:
    """PNG files in the dataset folder (outside `data/`), e.g. the quality report's plots."""
    folder = Path(folder)
    plots = []
    for path in sorted(folder.rglob("*.png")):
        rel = path.relative_to(folder)
        if rel.parts[0] == "data" or any(p.startswith(".") for p in rel.parts):
            continue
        title = re.sub(r"[_-]+", " ", path.stem).strip().capitalize()
        plots.append({"title": title, "path": rel.as_posix()})
    return plots


def diversity_figures(stats: dict) -> list[tuple[str, object]]:
    """Cluster-balance metrics of a diversity-aware selection, when the build made one."""
    metrics = (stats.get("diversity") or {}).get("metrics") or {}
    out = []
    for name, values in sorted(metrics.items()):
        if isinstance(values, dict):
            out.extend((f"{name}.{k}", round(v, 4) if isinstance(v, float) else v)
                       for k, v in sorted(values.items()) if isinstance(v, (int, float)))
    return out[:16]


def caption_steps(stats: dict, max_examples: int = 3) -> list[dict]:
    """The caption filter report as table rows, with a few dropped examples per step."""
    report = stats.get("caption_report") or {}
    rows = []
    for step in report.get("steps") or []:
        seen, kept = step.get("seen") or 0, step.get("kept") or 0
        dropped = step.get("dropped", seen - kept) or 0
        name = str(step.get("name", "?"))
        withheld = any(w in name.lower() for w in WITHHELD_EXAMPLE_STEPS)
        examples = []
        for ex in (step.get("examples") or [])[:max_examples]:
            if not isinstance(ex, dict):
                ex = {"caption": ex}
            detail = ", ".join(f"{k} {ex[k]}" for k in ("value", "reason") if ex.get(k) is not None)
            examples.append({"caption": ex.get("caption", ""), "detail": detail, "source": ex.get("source") or ""})
        rows.append({
            "name": name, "seen": seen, "kept": kept, "dropped": dropped,
            "drop_pct": 100.0 * dropped / seen if seen else 0.0,
            "params": _short_params(step.get("params") or {}),
            "reasons": dict(sorted((step.get("reasons") or {}).items())),
            "examples": [] if withheld else examples, "withheld": withheld and bool(step.get("examples")),
            "note": _filter_note(step) if dropped else "",
        })
    return rows


def _filter_note(step: dict) -> str:
    """What a reader should know about a filter that dropped captions (its class's `card_note`)."""
    from synthvlm_data.captions.filters import FILTERS

    cls = FILTERS.get(str((step.get("params") or {}).get("type") or step.get("name")))
    return getattr(cls, "card_note", "") if cls is not None else ""


def _short_params(params: dict, max_len: int = 40) -> dict:
    """A step's scalar settings, sorted (the card must not depend on whether stats come from memory
    or from the JSON file); prompts, lists and the like are in the recipe block."""
    out = {}
    for key, value in sorted(params.items()):
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= max_len):
            out[key] = value
    return out


# What a Hub reader is told each caption-report figure means (anything else keeps its key).
FIGURE_LABELS = {
    "counts.curated": "captions kept from the sources",
    "counts.synthetic": "captions written by the LLM (Synth^2)",
    "captions_out": "captions sent to image generation",
    "duplicate_ids_dropped": "rows dropped as a repeated (source, id, caption)",
    "summary.curated_concept_entropy": "concept balance of curated captions (normalised entropy, 1 = even)",
    "summary.synthetic_concept_entropy": "concept balance of LLM captions (normalised entropy, 1 = even)",
    "summary.curated_concept_coverage": "share of the concept list the curated captions name",
    "summary.synthetic_concept_coverage": "share of the concept list the LLM captions name",
    "summary.curated_concept_max_min_ratio": "most / least frequent concept among curated captions",
    "summary.synthetic_concept_max_min_ratio": "most / least frequent concept among LLM captions",
    "summary.curated_cluster_entropy": "cluster occupancy of curated captions (normalised entropy)",
    "summary.synthetic_cluster_entropy": "cluster occupancy of LLM captions (normalised entropy)",
    "summary.curated_cluster_coverage": "share of caption clusters the curated captions fill",
    "summary.synthetic_cluster_coverage": "share of caption clusters the LLM captions fill",
}
# shown elsewhere in the card, or repeats of another figure
_SKIPPED_FIGURES = {"profile", "seed", "counts.total", "summary.curated_captions", "summary.synthetic_captions",
                    "summary.total_captions"}


def caption_figures(stats: dict, limit: int = 24) -> list[tuple[str, object]]:
    """The caption report's other figures (sources, counts, balance) as (what it means, value)."""
    report = stats.get("caption_report") or {}
    flat: list[tuple[str, object]] = []
    for key, value in sorted(report.items()):
        if key == "steps":
            continue
        if isinstance(value, (int, float, str, bool)):
            flat.append((key, value))
        elif isinstance(value, dict):
            flat.extend((f"{key}.{k}", v) for k, v in sorted(value.items()) if isinstance(v, (int, float, str, bool)))
    out = []
    for key, value in flat:
        if key in _SKIPPED_FIGURES:
            continue
        label = f"captions read from source '{key[len('sources.'):]}'" if key.startswith("sources.") else FIGURE_LABELS.get(key, key)
        out.append((label, round(value, 4) if isinstance(value, float) else value))
    return out[:limit]


def score_rows(stats: dict) -> list[tuple[str, dict]]:
    rows = []
    for label, key in (("selected", "selected_scores"), ("rejected pool", "rejected_scores")):
        if stats.get(key):
            rows.append((label, stats[key]))
    return rows


def quality_section(report: dict, report_dir: Path, folder: Path) -> dict:
    """What the card shows of a quality report: its table rows, notes and a link to report.md."""
    from synthvlm_data.presentation.report import table_rows

    markdown = Path(report_dir) / QUALITY_MD
    return {
        "rows": table_rows(report),
        "notes": [str(n) for n in report.get("notes") or []],
        "world": report.get("world"),
        "markdown": markdown.resolve().relative_to(Path(folder).resolve()).as_posix() if markdown.is_file() else None,
    }


def contamination_section(folder: Path, stats: dict) -> dict | None:
    """The card's contamination report: `synthvlm decontaminate`'s file in the folder, and the
    caption stage's `decontaminate` filter steps (sets checked, captions removed)."""
    check = DatasetDir(folder).contamination()
    filters = [
        {"name": str(step.get("name")), "checked": str((step.get("params") or {}).get("checked", "")),
         "seen": step.get("seen") or 0, "removed": step.get("dropped") or 0}
        for step in (stats.get("caption_report") or {}).get("steps") or []
        if (step.get("params") or {}).get("type") == "decontaminate"
    ]
    if check is None and not filters:
        return None
    return {"check": check, "filters": filters}


def quality_of(folder: Path, report_dir: Path | None = None) -> dict | None:
    """The card's quality section from the report in `report_dir` (default `<folder>/plots`), if any."""
    folder = Path(folder)
    report_dir = Path(report_dir) if report_dir is not None else DatasetDir(folder).quality_dir
    report = DatasetDir(folder).quality(report_dir)
    return quality_section(report, report_dir, folder) if report is not None else None


def body_context(folder: Path, *, recipe, stats: dict, quality: dict | None = None, **context) -> dict:
    """Everything the template needs; explicit `context` entries win over the derived ones.
    `quality`: `quality_section` of a quality report; by default the one in the folder's plots/."""
    derived = {
        "recipe": recipe,
        "stats": stats,
        "recipe_yaml": describe.recipe_yaml(recipe),
        "fingerprint": recipe.fingerprint(),
        "score_rows": score_rows(stats),
        "caption_steps": caption_steps(stats),
        "caption_figures": caption_figures(stats),
        "models": describe.models(recipe),
        "ssim": describe.ssim(recipe.score.ssim),
        "plots": find_plots(folder),
        "quality": quality if quality is not None else quality_of(folder),
        "diversity": diversity_figures(stats),
        "contamination": contamination_section(folder, stats),
        "train_configs": describe.train_configs(recipe),
        "has_concept": False,
        "synthvlm_bibtex": SYNTHVLM_BIBTEX,
        "synth2_bibtex": SYNTH2_BIBTEX,
    }
    versions = {**library_versions(), **context.pop("versions", {})}
    derived["environment"] = context.pop("environment", None) or environment_line()
    derived.update(context)
    derived["versions"] = versions
    derived["has_concept"] = "concept" in derived.get("columns", [])
    return derived


def render_dataset_card(folder: Path, card_data: DatasetCardData, **context) -> str:
    body = render(DATASET_CARD, **body_context(Path(folder), **context))
    return f"---\n{card_data.to_yaml()}\n---\n\n{body}"


def write_dataset_card(out_dir: Path, card_data: DatasetCardData, **context) -> Path:
    """Render `cards/dataset_card.md.j2` with the YAML header and write `out_dir/README.md`.

    Call it once every file the card describes is in `out_dir` (plots are linked when present).
    Required context: `recipe`, `stats`, `num_rows`, `num_shards`, `columns`.
    """
    card = DatasetCard(render_dataset_card(out_dir, card_data, **context))
    path = DatasetDir(out_dir).card
    card.save(path)
    return path


def refresh_dataset_card(folder: Path, recipe=None, quality_dir: Path | None = None) -> Path:
    """Re-render an exported folder's card in place from every part the folder holds (the build
    statistics, the quality report in `quality_dir` (default plots/) and its plots, the contamination
    check), e.g. after `synthvlm report` or `synthvlm decontaminate` added theirs. `recipe`: default the
    one recorded in the folder.

    Keeps the YAML header as it is (it describes the data files, which did not change).
    """
    folder = Path(folder)
    d = DatasetDir(folder)
    card = DatasetCard.load(d.card)
    info = card.data.dataset_info or {}
    features = [f["name"] for f in info.get("features", [])] if isinstance(info, dict) else []
    splits = info.get("splits", []) if isinstance(info, dict) else []
    num_rows = sum(s.get("num_examples", 0) for s in splits)
    return write_dataset_card(folder, card.data, recipe=recipe if recipe is not None else d.recipe(), stats=d.stats(),
                              quality=quality_of(folder, quality_dir), num_rows=num_rows, num_shards=len(d.shards()),
                              columns=features)


def refresh_if_dataset(folder: Path, recipe=None, quality_dir: Path | None = None) -> Path | None:
    """`refresh_dataset_card` when the folder is a dataset this package wrote and has its card;
    another folder's card is not this package's to re-render (None)."""
    from synthvlm_data.outdir import owner_kind

    if owner_kind(Path(folder)) != "dataset" or not DatasetDir(folder).card.is_file():
        return None
    return refresh_dataset_card(folder, recipe, quality_dir)


__all__ = [
    "CITATION",
    "dataset_card_data",
    "quality_section",
    "quality_of",
    "refresh_dataset_card",
    "refresh_if_dataset",
    "set_row_count",
    "render_dataset_card",
    "size_category",
    "write_dataset_card",
]
