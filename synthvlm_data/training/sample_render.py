"""Render one real-shaped training sample of a stage, exactly as the trainer will see it.

`--validate-only` calls this so that a chat template that does not compile, a second BOS, or a
label mask that trains on nothing (or on the prompt) shows up before any download or GPU time.
The sample goes through the real path: the stage's chat template on a `LlavaProcessor` (image
tokens expanded to the vision tower's count) and TRL's own `DataCollatorForVisionLanguageModeling`
with the loss settings `run.build_sft_config` uses. The tokenizer is the LLM's own when it is on
this machine (local folder, packaged model, Hub cache); for Vicuna, not downloaded yet, a
Llama-family tokenizer built offline (`offline_tokenizer`) stands in: same class and special
tokens, smaller vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

from synthvlm_data.training.config import KNOWN_SHAPES, Stage, TrainConfig
from synthvlm_data.training.errors import TrainConfigError

# Hub LLMs whose tokenizer is a Llama SentencePiece one (Vicuna v1.5 = Llama 2): the offline stand-in fits them.
LLAMA_TOKENIZER_LLMS = frozenset({"lmsys/vicuna-7b-v1.5", "lmsys/vicuna-13b-v1.5"})

SAMPLE_CAPTION = "A red cube on a wooden table next to a blue sphere."
SAMPLE_TURNS = (("What is on the table?", "A red cube and a blue sphere."),
                ("What colour is the cube?", "It is red."))


@dataclass
class RenderedSample:
    template: str
    tokenizer: str
    text: str  # the rendered sequence, the run of image tokens written once as <image>xN
    input_ids: list[int]
    labels: list[int]
    bos_count: int
    trained_text: str
    writes_bos: bool = True  # False: the format has no BOS (ChatML), whatever the tokenizer calls one


    def summary(self) -> str:
        n_trained = sum(label != -100 for label in self.labels)
        bos = f"BOS x{self.bos_count}" if self.writes_bos else "no BOS in this format"
        return (f"sample: {len(self.input_ids)} tokens ({self.tokenizer}), {bos}, loss on "
                f"{n_trained}: {self.trained_text!r}; text {self.text!r}")


def sample_rows(stage: Stage, image_size: int) -> list[dict]:
    """One stage-1 prompt-completion row or one two-turn stage-2 conversation, with an image."""
    from PIL import Image

    from synthvlm_data.training.data import caption_to_prompt_completion
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    image = Image.new("RGB", (image_size, image_size), (122, 116, 104))
    if stage == "pretrain":
        return [{"image": image, **caption_to_prompt_completion(BRIEF_CAPTION_PROMPTS[0], SAMPLE_CAPTION)}]
    messages = []
    for question, answer in SAMPLE_TURNS:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [{"images": [image], "messages": messages}]


def stand_in_tokenizer(cfg: TrainConfig):
    """(tokenizer, description) for rendering, or (None, why not): never downloads."""
    ref = cfg.model.llm
    try:
        from transformers import AutoTokenizer

        if ref.is_packaged:
            from synthvlm_data.models.text import pretrained_dir

            return AutoTokenizer.from_pretrained(pretrained_dir(ref, "llm")), f"{ref.id}'s tokenizer"
        if ref.is_local:
            return AutoTokenizer.from_pretrained(str(ref.path)), "the LLM's tokenizer"
        if not ref.is_tiny:
            return (AutoTokenizer.from_pretrained(ref.id, revision=ref.revision, local_files_only=True),
                    "the LLM's tokenizer, from the Hub cache")
    except Exception:  # not cached / not loadable here: fall through to the stand-in
        pass
    if ref.id in LLAMA_TOKENIZER_LLMS:
        from synthvlm_data.training.offline_tokenizer import llama_tokenizer

        return llama_tokenizer(), "an offline Llama tokenizer standing in for the LLM's"
    return None, f"no tokenizer of {ref.id} on this machine"


def _vision_config(cfg: TrainConfig):
    from transformers import CLIPVisionConfig

    shape = KNOWN_SHAPES.get(cfg.model.vision_tower.id)
    if shape is None and cfg.model.vision_tower.is_local:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(cfg.model.vision_tower.path))
        return getattr(config, "vision_config", config)
    if shape is None:
        return None
    # only the sizes matter here (the processor's resize and image-token count); one head divides any width
    return CLIPVisionConfig(hidden_size=shape["hidden_size"], num_attention_heads=1, image_size=shape["image_size"],
                            patch_size=shape["patch_size"])


def render_stage_sample(cfg: TrainConfig, stage: Stage, tokenizer, tokenizer_note: str = "") -> RenderedSample:
    """The sample's token ids and labels from TRL's collator, checked: BOS at most once and only
    first, and a non-empty loss span that holds no prompt text. A failure is one TrainConfigError."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.assembly import IMAGE_TOKEN, add_image_token, build_processor
    from synthvlm_data.training.chat_templates import chat_template
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    vision = _vision_config(cfg)
    if vision is None:
        raise TrainConfigError(f"cannot render a sample: the shape of vision tower '{cfg.model.vision_tower.id}' is "
                               "not known offline")
    name = cfg.stage_chat_template(stage)
    image_id = add_image_token(tokenizer)
    model_cfg = cfg.model.model_copy(update={"chat_template": name})
    processor = build_processor(tokenizer, vision, model_cfg, list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))
    targs = cfg.stage(stage).training
    collator = DataCollatorForVisionLanguageModeling(
        processor=processor, max_length=targs.max_length, completion_only_loss=stage == "pretrain",
        **({"assistant_only_loss": True} if stage == "finetune" else {}))
    try:
        batch = collator(sample_rows(stage, vision.image_size))
    except Exception as err:  # jinja TemplateError, tokenizer errors: one line naming the template
        message = " ".join(str(err).split())[:300]
        raise TrainConfigError(f"chat template '{name}' cannot render a {stage} sample: "
                               f"{type(err).__name__}: {message}") from None
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    keep = batch["attention_mask"][0].tolist()
    ids = [i for i, k in zip(ids, keep, strict=True) if k]
    labels = [lab for lab, k in zip(labels, keep, strict=True) if k]
    bos = tokenizer.bos_token_id
    bos_count = ids.count(bos) if bos is not None else 0
    trained_text = tokenizer.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    n_image = ids.count(image_id)
    text = tokenizer.decode(ids).replace(IMAGE_TOKEN * n_image, f"{IMAGE_TOKEN}x{n_image}", 1)
    writes_bos = "bos_token" in chat_template(name)
    sample = RenderedSample(name, tokenizer_note or type(tokenizer).__name__, text, ids, labels, bos_count, trained_text,
                            writes_bos)
    problems = []
    if sample.writes_bos and bos is not None:  # the template writes the BOS (LLaVA's formats): once, first
        if bos_count != 1:
            problems.append(f"BOS appears {bos_count} times")
        elif ids[0] != bos:
            problems.append("BOS is not the first token")
    answers = [SAMPLE_CAPTION] if stage == "pretrain" else [a for _, a in SAMPLE_TURNS]
    prompts = [BRIEF_CAPTION_PROMPTS[0]] if stage == "pretrain" else [q for q, _ in SAMPLE_TURNS]
    if not trained_text.strip():
        problems.append("no token is trained")
    elif not all(a in trained_text for a in answers):
        problems.append("an answer is not trained")
    elif any(p in trained_text for p in prompts):
        problems.append("the prompt is trained")
    if problems:
        raise TrainConfigError(f"chat template '{name}' renders a bad {stage} sample ({'; '.join(problems)}): "
                               f"{sample.summary()}")
    return sample
