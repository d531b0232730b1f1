"""Datasets for the two stages, in the forms TRL's SFTTrainer trains on.

Stage 1 rows become prompt-completion pairs: {image, prompt: [user: brief-caption instruction],
completion: [assistant: caption]}; TRL inserts the image before the instruction and computes the
loss on the completion only (LLaVA stage 1). The conversion is a lazy `with_transform`, so a
100K-image dataset is never copied to the datasets cache.

Stage 2 sources (synthetic captions, TRL-style `messages` datasets, LLaVA JSON) are normalised to
one schema {messages: [{role, content}], images: [Image]} and mixed with `interleave_datasets`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from synthvlm_data.models.refs import hub_offline
from synthvlm_data.training.config import DataSource
from synthvlm_data.training.errors import InputDataError

CAPTION_COLUMNS = ("image", "caption")  # `prompt` too, but it can be derived (see _prompt_for)


# --------------------------------------------------------------------------- loading


def load_source(src: DataSource, stage: str = "finetune"):
    """`load_dataset` on a folder or Hub id (or a LLaVA JSON file), with errors a user can act on."""
    from datasets import load_dataset

    if src.format == "llava_json":
        ds = llava_json_captions(src) if stage == "pretrain" else load_llava_json(src.dataset, src.image_folder or ".")
    else:
        path = Path(src.dataset).expanduser()
        if not path.exists() and ("/" not in src.dataset or src.dataset.startswith((".", "/", "~"))):
            raise InputDataError(
                f"dataset '{src.dataset}' not found: no such folder (build it with `synthvlm build`, or pass "
                "--dataset PATH) and not a Hub id (owner/name)"
            )
        if not path.exists() and hub_offline():
            raise InputDataError(f"dataset '{src.dataset}' is not a local folder and HF_HUB_OFFLINE is set")
        try:
            ds = load_dataset(str(path) if path.exists() else src.dataset, name=src.subset, split=src.split,
                              revision=src.revision)
        except Exception as err:  # FileNotFoundError, DatasetNotFoundError, unknown split, network errors
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise InputDataError(f"cannot load dataset '{src.dataset}' (split '{src.split}'): "
                                 f"{type(err).__name__}: {first}") from None
    if len(ds) == 0:
        raise InputDataError(f"dataset '{src.dataset}' (split '{src.split}') has no rows")
    if src.max_samples is not None:
        ds = ds.select(range(min(src.max_samples, len(ds))))
    return ds


def require_columns(ds, columns, where: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise InputDataError(
            f"dataset {where} lacks column(s) {', '.join(missing)} (it has: {', '.join(ds.column_names)})"
        )


def split_eval(ds, eval_ratio: float, seed: int):
    """Deterministic held-out split: (train, eval or None). Index-only, no data is copied."""
    if eval_ratio <= 0:
        return ds, None
    n_eval = max(1, round(len(ds) * eval_ratio))
    if n_eval >= len(ds):
        raise InputDataError(f"eval_ratio {eval_ratio} leaves no training rows out of {len(ds)}")
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


# --------------------------------------------------------------------------- stage 1


def _prompt_for(row_id: str) -> str:
    """An instruction for datasets without a `prompt` column: LLaVA's list, chosen by a stable hash."""
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS, stable_hash

    return BRIEF_CAPTION_PROMPTS[stable_hash(row_id) % len(BRIEF_CAPTION_PROMPTS)]


def caption_to_prompt_completion(prompt: str, caption: str) -> dict[str, list[dict[str, Any]]]:
    """One stage-1 example (TRL conversational prompt-completion; the image part is added by TRL)."""
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "completion": [{"role": "assistant", "content": caption.strip()}],
    }


def _prompt_completion_batch(batch: dict[str, list]) -> dict[str, list]:
    prompts = batch.get("prompt") or [_prompt_for(i) for i in batch["id"]]
    rows = [caption_to_prompt_completion(p, c) for p, c in zip(prompts, batch["caption"], strict=True)]
    return {
        "image": batch["image"],
        "prompt": [r["prompt"] for r in rows],
        "completion": [r["completion"] for r in rows],
    }


def pretrain_dataset(src: DataSource, latents=None):
    """Load a synthvlm caption dataset (or a LLaVA JSON file of image-caption records, LCS-558K) and
    present it lazily as prompt-completion rows. With `latents` (the config's `model.latents`) the
    rows carry the `latent` column of a latent-mode build instead of `image`."""
    ds = load_source(src, "pretrain")
    where = f"'{src.dataset}'"
    pixels, stored = "image" in ds.column_names, "latent" in ds.column_names
    if latents is not None and not stored:
        raise InputDataError(f"dataset {where} has no 'latent' column: model.latents trains on a latent-mode build "
                             "(generate.output: latents); remove model.latents to train on its images")
    if latents is None and stored and not pixels:
        raise InputDataError(f"dataset {where} holds VAE latents, not images: train it with model.latents "
                             "(train/configs/tiny-latent.yaml), or decode it first with `synthvlm decode`")
    image_col = "latent" if latents is not None else "image"
    require_columns(ds, (image_col, "caption"), where)
    if latents is not None:
        from synthvlm_data.training.latent import check_latent_shape

        check_latent_shape(ds, latents, where)
    if "prompt" not in ds.column_names:
        require_columns(ds, ("id",), f"{where} (without a 'prompt' column)")
    keep = [c for c in (image_col, "caption", "prompt", "id") if c in ds.column_names]
    return ds.select_columns(keep)


def _latent_prompt_completion_batch(batch: dict[str, list]) -> dict[str, list]:
    from synthvlm_data.training.latent import latent_batch

    return _prompt_completion_batch(latent_batch(batch))


def as_prompt_completion(ds):
    """Prompt-completion rows; a latent dataset's `latent` becomes the row's `image` tensor (no decode)."""
    if "latent" in ds.column_names:
        return ds.with_transform(_latent_prompt_completion_batch)
    return ds.with_transform(_prompt_completion_batch)


# --------------------------------------------------------------------------- stage 2


def messages_features():
    from datasets import Features, Image, List, Value

    return Features({
        "messages": List({"role": Value("string"), "content": Value("string")}),
        "images": List(Image()),
    })


def _strip_image_tag(text: str) -> str:
    return text.replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "").strip()


def _text_of(content) -> str:
    if isinstance(content, str):
        return _strip_image_tag(content)
    return "".join(p.get("text") or "" for p in content if p.get("type") == "text").strip()


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _record_error(path: str, index: int, rec: Any, problem: str, fix: str) -> InputDataError:
    rid = f" (id {rec.get('id')!r})" if isinstance(rec, dict) and rec.get("id") is not None else ""
    return InputDataError(f"{path}: record {index}{rid}: {problem}; {fix}")


def read_llava_json(path: str, image_folder: str, *, require_image: bool = False) -> list[dict[str, Any]]:
    """LLaVA's JSON records, checked one by one: [{id, image (path relative to image_folder) or
    None, messages: [{role, content}]}].

    The LCS-558K (`blip_laion_cc_sbu_558k.json`) and LLaVA-665K (`llava_v1_5_mix665k.json`) shape:
    `conversations` alternate human/gpt turns, the first human turn holds `<image>` when the record
    has an image; 665K has text-only records (no `image` key), which `require_image` (stage 1)
    refuses. Every image file is checked to exist, so a run never fails hours in on a missing file.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputDataError(f"LLaVA JSON file {path} does not exist (data.dataset names the .json file)")
    try:
        records = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputDataError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(records, list):
        raise InputDataError(f"{path}: a LLaVA JSON file is a list of records, found a {type(records).__name__}")
    root = Path(image_folder).expanduser()
    if not root.is_dir():
        raise InputDataError(f"{path}: image_folder {image_folder} is not a directory; set data.image_folder "
                             "to the folder the records' `image` paths are relative to")
    fix_conv = "each record needs `conversations`: a list of {\"from\": \"human\"|\"gpt\", \"value\": text} turns"
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
            raise _record_error(path, i, rec, "no `conversations` list", fix_conv)
        turns = []
        for j, turn in enumerate(rec["conversations"]):
            if not isinstance(turn, dict):
                raise _record_error(path, i, rec, f"turn {j} is not an object", fix_conv)
            role = _ROLES.get(turn.get("from", turn.get("role", "")))
            text = turn.get("value", turn.get("content"))
            if role is None or not isinstance(text, str):
                raise _record_error(path, i, rec, f"turn {j} has speaker {turn.get('from')!r} and value "
                                    f"{type(text).__name__}", fix_conv)
            turns.append({"role": role, "content": _strip_image_tag(text)})
        if not any(t["role"] == "assistant" for t in turns):
            raise _record_error(path, i, rec, "no gpt turn to train on", "add the answer or drop the record")
        image = rec.get("image")
        if image is None and require_image:
            raise _record_error(path, i, rec, "no `image` (a text-only record)",
                                "stage 1 trains on image-caption pairs; drop it or use the file in stage 2")
        if image is not None:
            if not isinstance(image, str) or not image:
                raise _record_error(path, i, rec, f"`image` is {image!r}, not a relative path", "fix the record")
            if not (root / image).is_file():
                raise _record_error(path, i, rec, f"image {image} not found under image_folder {image_folder}",
                                    "fetch the image or point data.image_folder at the folder the paths are relative to")
        out.append({"id": str(rec.get("id", i)), "image": image, "messages": turns})
    if not out:
        raise InputDataError(f"{path} holds no records")
    return out


def check_llava_json(src: DataSource, stage: str) -> int:
    """What training checks of a LLaVA JSON source before its first step, and a bit more: every
    record parsed as the stage reads it (`read_llava_json`: a list, conversations, image files
    present; stage 1: one instruction and one caption each) and every image decodes, so a
    truncated file fails here, not hours into a run. Returns the number of records.

    JPEGs decode at reduced scale (`draft`): the whole file is still read, so truncation shows."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    if stage == "pretrain":
        llava_json_captions(src)  # the stage-1 record shape (turn count) on top of read_llava_json
    records = read_llava_json(src.dataset, src.image_folder or ".", require_image=stage == "pretrain")
    root = Path(src.image_folder or ".").expanduser()
    # A library may have switched PIL to accept truncated files process-wide (lmms-eval does, at
    # import): the check decodes strictly whatever the flag says.
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        for i, rec in enumerate(records):
            if rec["image"] is None:
                continue
            try:
                with Image.open(root / rec["image"]) as im:
                    im.draft(im.mode, (64, 64))
                    im.load()
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
                raise _record_error(src.dataset, i, rec, f"image {rec['image']} does not decode ({type(err).__name__}: "
                                    f"{(str(err).splitlines() or [''])[0][:120]})",
                                    "replace the file or drop the record") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    return len(records)


def load_llava_json(path: str, image_folder: str):
    """LLaVA's JSON ({id, image?, conversations}) as a stage-2 {messages, images} Dataset; images are
    referenced, not copied."""
    from datasets import Dataset

    root = Path(image_folder).expanduser()
    records = read_llava_json(path, image_folder)
    rows = {
        "messages": [r["messages"] for r in records],
        "images": [[{"path": str(root / r["image"]), "bytes": None}] if r["image"] else [] for r in records],
    }
    return Dataset.from_dict(rows, features=messages_features())


def llava_json_captions(src: DataSource):
    """A LLaVA JSON file as stage-1 caption rows {id, image, prompt, caption} (LCS-558K: one human
    instruction + `<image>`, one gpt caption per record)."""
    from datasets import Dataset, Features, Image, Value

    root = Path(src.image_folder or ".").expanduser()
    records = read_llava_json(src.dataset, src.image_folder or ".", require_image=True)
    rows: dict[str, list] = {"id": [], "image": [], "prompt": [], "caption": []}
    for i, r in enumerate(records):
        roles = [t["role"] for t in r["messages"] if t["role"] != "system"]
        if roles != ["user", "assistant"]:
            raise _record_error(src.dataset, i, r, f"{len(roles)} turns ({', '.join(roles)})",
                                "stage 1 takes one human instruction and one gpt caption per record (LCS-558K); "
                                "multi-turn records (LLaVA-665K) belong in stage 2 (finetune.data)")
        user, answer = (t["content"] for t in r["messages"] if t["role"] != "system")
        rows["id"].append(r["id"])
        rows["image"].append({"path": str(root / r["image"]), "bytes": None})
        rows["prompt"].append(user or _prompt_for(r["id"]))
        rows["caption"].append(answer)
    features = Features({"id": Value("string"), "image": Image(), "prompt": Value("string"), "caption": Value("string")})
    return Dataset.from_dict(rows, features=features)


def _captions_to_messages(batch: dict[str, list]) -> dict[str, list]:
    prompts = batch.get("prompt") or [_prompt_for(i) for i in batch["id"]]
    return {
        "messages": [
            [{"role": "user", "content": p}, {"role": "assistant", "content": c.strip()}]
            for p, c in zip(prompts, batch["caption"], strict=True)
        ],
        "images": [[img] for img in batch["image"]],
    }


def _messages_to_messages(batch: dict[str, list]) -> dict[str, list]:
    out = []
    for conv in batch["messages"]:
        out.append([{"role": m["role"], "content": _text_of(m["content"])} for m in conv])
    images = batch.get("images") or [[] for _ in out]
    return {"messages": out, "images": images}


def finetune_source(src: DataSource):
    """One stage-2 source normalised to {messages, images} (image bytes are passed, not decoded)."""
    from datasets import Image

    ds = load_source(src)
    if src.format == "llava_json":
        return ds
    if src.format == "captions":
        require_columns(ds, CAPTION_COLUMNS, f"'{src.dataset}'")
        ds = ds.cast_column("image", Image(decode=False))
        fn, cols = _captions_to_messages, [c for c in ("image", "caption", "prompt", "id") if c in ds.column_names]
    else:
        require_columns(ds, ("messages",), f"'{src.dataset}'")
        if "images" in ds.column_names:
            ds = ds.cast_column("images", _undecoded_images(ds.features["images"]))
        elif "image" in ds.column_names:
            ds = ds.map(lambda b: {"images": [[i] for i in b["image"]]}, batched=True,
                        remove_columns=["image"], features=None)
        fn, cols = _messages_to_messages, [c for c in ("messages", "images") if c in ds.column_names]
    ds = ds.select_columns(cols)
    return ds.map(fn, batched=True, remove_columns=cols, features=messages_features(),
                  desc=f"formatting {src.dataset}")


def _undecoded_images(feature):
    from datasets import Image, List

    return List(Image(decode=False)) if isinstance(feature, List) else feature


def mix_sources(datasets: list, probabilities: list[float] | None, seed: int, stopping_strategy: str):
    from datasets import concatenate_datasets, interleave_datasets

    if len(datasets) == 1:
        return datasets[0]
    if probabilities is None:  # LLaVA-1.5 simply concatenates its sources (the trainer shuffles)
        return concatenate_datasets(datasets)
    return interleave_datasets(datasets, probabilities=probabilities, seed=seed, stopping_strategy=stopping_strategy)


def finetune_dataset(sources: list[DataSource], seed: int, stopping_strategy: str):
    parts = [finetune_source(s) for s in sources]
    probs = [s.probability for s in sources] if sources[0].probability is not None else None
    return mix_sources(parts, probs, seed, stopping_strategy)
