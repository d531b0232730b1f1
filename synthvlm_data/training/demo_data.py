"""A small real-image caption dataset in the exact layout `synthvlm build` exports.

Why: training needs a dataset folder before the tiny synthetic one exists, and tests need one that
is cheap and deterministic. Images are scikit-image's bundled samples (no download) resized small,
captions are hand-written; every published column (`synthvlm_data.columns`) is present, with the
export's types.

    python -m synthvlm_data.training.demo_data outputs/demo-captions outputs/demo-instruct
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

SOURCE = "skimage.data"

# (skimage.data function, caption)
DEMO_CAPTIONS: tuple[tuple[str, str], ...] = (
    ("astronaut", "An astronaut in a white spacesuit smiles in front of an American flag."),
    ("camera", "A black and white photo of a man with a camera on a tripod in a park."),
    ("chelsea", "A tabby cat with green eyes looks to the side."),
    ("coffee", "A cup of coffee with latte art on a saucer with a spoon."),
    ("coins", "Rows of old coins on a grey background."),
    ("horse", "The black silhouette of a horse standing on a white background."),
    ("moon", "A grey close-up of the cratered surface of the moon."),
    ("page", "A scanned page of printed text in black and white."),
    ("rocket", "A rocket stands on the launch pad under a blue sky."),
    ("text", "Black handwritten text on a light grey background."),
    ("clock", "A round wall clock with black hands, photographed at an angle."),
    ("colorwheel", "A circular colour wheel showing every hue from red to violet."),
    ("logo", "The scikit-image logo: a snake drawn over a coloured square."),
    ("hubble_deep_field", "Hundreds of distant galaxies scattered across a black sky."),
    ("immunohistochemistry", "A microscope image of stained tissue in brown and blue."),
    ("brick", "A close-up of a grey brick wall with mortar lines."),
    ("checkerboard", "A black and white checkerboard pattern."),
    ("retina", "A photo of the back of a human eye showing red blood vessels."),
    ("gravel", "A grey texture of small stones and gravel."),
    ("grass", "A grey texture of dense grass blades."),
)


# (skimage.data function, question, answer): a tiny visual-instruction set in TRL's `messages` layout
DEMO_QA: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "What is the person wearing?", "A white spacesuit."),
    ("camera", "What is the man holding?", "A camera on a tripod."),
    ("chelsea", "What animal is this?", "A tabby cat."),
    ("coffee", "What drink is in the cup?", "Coffee with latte art."),
    ("coins", "What objects are shown?", "Old coins arranged in rows."),
    ("horse", "Which animal does the silhouette show?", "A horse."),
    ("moon", "What celestial body is this?", "The moon."),
    ("rocket", "Where is the rocket?", "On the launch pad."),
    ("clock", "What shape is the clock?", "It is round."),
    ("colorwheel", "How many colours does the wheel show?", "Every hue, from red to violet."),
    ("hubble_deep_field", "What are the small bright spots?", "Distant galaxies."),
    ("checkerboard", "What colours are the squares?", "Black and white."),
)


def _image(name: str, size: int):
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    arr = getattr(skdata, name)()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    img = Image.fromarray(arr)
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    return img


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def demo_rows(size: int = 96, repeats: int = 1, seed: int = 0) -> dict[str, list]:
    """Every published column (`synthvlm_data.columns.dataset_features`), ids and instructions
    derived the way a build derives them; the scores are placeholders (real photos are not scored)."""
    from synthvlm_data.columns import dataset_features
    from synthvlm_data.workunits import choose_prompt, derive_seed, sample_id

    rows: dict[str, list] = {k: [] for k in dataset_features(with_concept=False)}
    for r in range(repeats):
        for name, caption in DEMO_CAPTIONS:
            source_id = name if r == 0 else f"{name}-{r}"
            sid = sample_id(SOURCE, source_id, caption)
            rows["id"].append(sid)
            rows["image"].append({"bytes": _png(_image(name, size)), "path": f"{name}.png"})
            rows["caption"].append(caption)
            rows["prompt"].append(choose_prompt(seed, sid))
            rows["clip_score"].append(0.0)
            rows["ssim"].append(1.0)
            rows["score"].append(0.5)
            rows["seed"].append(derive_seed(seed, sid, 0))
            rows["repeat"].append(0)
            rows["source"].append(SOURCE)
            rows["source_id"].append(source_id)
            rows["generator"].append("none (real photo)")
    return rows


def _write_folder(folder: Path, ds, title: str, about: str) -> Path:
    """<folder>/data/train-00000-of-00001.parquet + a README.md whose YAML points load_dataset at it."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    (folder / "README.md").write_text(
        "---\nlicense: bsd-3-clause\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        f"    path: data/train-*.parquet\n---\n\n# {title}\n\n{about}\n",
        encoding="utf-8",
    )
    return folder


def write_demo_dataset(folder: str | Path, size: int = 96, repeats: int = 1, seed: int = 0) -> Path:
    """Write <folder>/data/train-00000-of-00001.parquet + README.md; `load_dataset(folder)` reads it."""
    from datasets import Dataset

    from synthvlm_data.columns import dataset_features

    ds = Dataset.from_dict(demo_rows(size, repeats, seed), features=dataset_features(with_concept=False))
    return _write_folder(Path(folder), ds, "Demo captions", "scikit-image sample photos with hand-written captions, "
                         "in the synthvlm export layout (for training smoke runs and tests).")


def write_demo_instructions(folder: str | Path, size: int = 96) -> Path:
    """A `messages` + `images` dataset (the layout of HuggingFaceH4/llava-instruct-mix-vsft)."""
    from datasets import Dataset, Features, Image, List, Value

    features = Features({
        "messages": List({"role": Value("string"),
                          "content": List({"type": Value("string"), "text": Value("string")})}),
        "images": List(Image()),
    })
    rows: dict[str, list] = {"messages": [], "images": []}
    for name, question, answer in DEMO_QA:
        rows["messages"].append([
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ])
        rows["images"].append([{"bytes": _png(_image(name, size)), "path": f"{name}.png"}])
    ds = Dataset.from_dict(rows, features=features)
    return _write_folder(Path(folder), ds, "Demo visual instructions",
                         "Questions and answers about scikit-image sample photos, in TRL's messages + images layout.")


if __name__ == "__main__":
    captions = write_demo_dataset(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo-captions")
    instruct = write_demo_instructions(sys.argv[2] if len(sys.argv) > 2 else "outputs/demo-instruct")
    print(captions, instruct)
