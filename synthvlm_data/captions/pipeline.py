"""The caption stage: sources -> validation -> filters -> dedup -> judge -> limit, then synthesis.

It is a map and a reduce. The map (`UnitReader` + `Curator`) takes fixed units of source rows
(`unit_size`: `chunk_size` rows, or about `limit` with a limit) through validation, the filters
and the dedup embeddings; a unit's result depends on no other unit, so the build maps units on
every rank and resumes unit by unit (`stages/captions.py`). The reduce (`Reducer`) takes the units
in order through exact and near dedup, the judge and the limit (`_Gate`: caption by caption, a
caption enters the dedup indices only once it is kept), then synthesis and the balance/diversity
report. With a `spill_dir` (the build's caption stage) the ids read, the dedup indices and the kept
rows live in files there (`spill.py`), so memory stays bounded by a unit and a few fixed caches
however many captions pass; without one (a run in this process) they live in memory, with the
same results. Batch composition is fixed by the config. `run_captions(cfg, seed=..., profile=...)` runs both in one process (reading stops
once `limit` captions passed every step) and returns rows `{"source", "source_id", "caption",
"concept"}` in a deterministic order (curated captions in source order, then synthetic captions by
concept-list order), plus a JSON-serialisable report: per step `seen`, `kept`, `dropped` and a few
dropped `examples`, then balance and diversity statistics. With `report_dir`, the report
(`captions_report.json`), the cluster PNG and the timings (`captions_timings.json`, kept apart
because they are not reproducible) are written there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from synthvlm_data.captions import config as C
from synthvlm_data.captions.config import CaptionsConfig
from synthvlm_data.errors import InputDataError
from synthvlm_data.captions.dedup import ExactDedup, NearDedup, digest
from synthvlm_data.captions.filters import BuildContext
from synthvlm_data.captions.judge_cache import CachedJudge
from synthvlm_data.captions.report import StepReport
from synthvlm_data.captions.sources import iter_source
from synthvlm_data.captions.spill import ChainRows, DigestIndex, KeptRows
from synthvlm_data.models.devices import resolve_device, torch_threads
from synthvlm_data.models.text import ModelCache

REPORT_FILE = "captions_report.json"
TIMINGS_FILE = "captions_timings.json"
CLUSTERS_PNG = "caption_clusters.png"


@dataclass
class CaptionsResult:
    rows: list[dict] | ChainRows  # a list in memory; rows read back from the spill files with a spill_dir
    report: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    synthetic: list[dict] = field(default_factory=list)  # the synthetic rows, the end of `rows`


def not_sampling_hint(synthesis, endpoint) -> str:
    """What to change when every request for a concept got the same answer (greedy decoding): the
    duplicates are dropped, so more rounds cannot help."""
    if endpoint is None:
        return ("every request for a concept got the same answer, so the model is hardly sampling: raise "
                f"synthesis.temperature (now {synthesis.temperature}) or top_p (now {synthesis.top_p})")
    return (f"every request for a concept got the same answer, so the server at {endpoint.url} is not sampling "
            f"(synthesis.temperature {synthesis.temperature} is sent with each request): `transformers serve` "
            "samples only when the served folder's generation_config.json has `do_sample: true`; vLLM, SGLang "
            "and llama.cpp follow the request's temperature")


def _validate(row: dict, cfg: CaptionsConfig) -> str | None:
    """Why a row cannot be used as a caption (counted in the report), or None."""
    cap = row["caption"]
    if not isinstance(cap, str):
        return "not_a_string"
    if "\x00" in cap:
        return "nul_bytes"
    cap = cap.strip()
    if not cap:
        return "empty"
    if len(cap) < cfg.min_chars:
        return "too_short"
    if len(cap) > cfg.max_chars:
        return "too_long"
    row["caption"] = cap
    return None


def _build_steps(cfg: CaptionsConfig, models: ModelCache) -> list:
    ctx = BuildContext(captions=cfg, models=models, device=resolve_device(cfg.device))
    return [f.build(ctx) for f in cfg.filters if f.enabled]


def _all_sources(cfg: CaptionsConfig) -> Iterator[dict]:
    """Every source's records in order; a source that holds no record at all is an error (an empty
    file silently building a dataset of the other sources, or of synthesis alone, is a mistake)."""
    for src in cfg.sources:
        n = 0
        for rec in iter_source(src):
            n += 1
            yield rec
        if n == 0:
            where = src.path or src.dataset or src.type
            raise InputDataError(f"caption source '{src.name}' holds no captions ({where} is empty); "
                                 "fix the file or remove the source from the recipe")


def _missing_images_error(step, rows: list[dict], values: list) -> InputDataError:
    missing = [r for r, v in zip(rows, values) if v is None]
    paths = [r["image"] for r in missing if isinstance(r.get("image"), str)]
    no_column = sum(1 for r in missing if r.get("image") is None)
    embedded = len(missing) - len(paths) - no_column  # images stored in the source itself that do not decode
    if paths:
        folders = sorted({str(Path(p).parent) for p in paths})
        where = f"in {folders[0]}" + (f" and {len(folders) - 1} other folder(s)" if len(folders) > 1 else "")
        detail = f"{len(paths)} image file(s) missing or unreadable {where} (e.g. {paths[0]})"
        if no_column:
            detail += f", {no_column} row(s) without an image"
    elif no_column:
        detail = f"{no_column} row(s) without an image (does the source set `image_column`?)"
    else:
        detail = ""
    if embedded:
        detail += (", " if detail else "") + f"{embedded} image(s) stored in the source that do not decode"
    return InputDataError(
        f"{step.cfg.role}: {len(missing)} of {len(rows)} captions have no readable original image: {detail}; "
        "unpack the original images there, or set on_missing_image: keep or drop for this filter")


def _apply_step(step, rows: list[dict], rep: StepReport) -> list[dict]:
    values = step.values(rows)
    if getattr(step.cfg, "on_missing_image", None) == "error" and any(v is None for v in values):
        raise _missing_images_error(step, rows, values)
    out = []
    for row, v in zip(rows, values):
        if v is None:  # image steps: no (readable) original image
            rep.extra["no_image"] = rep.extra.get("no_image", 0) + 1
            if step.cfg.on_missing_image == "keep":
                rep.keep()
                out.append(row)
            else:
                rep.drop(row, reason="no_image")
        elif step.passes(v):
            rep.keep()
            out.append(row)
        else:
            rep.drop(row, v)
    return out


def run_captions(cfg: CaptionsConfig, *, seed: int, profile: str = "full", report_dir: Path | None = None,
                 models: ModelCache | None = None, spill_dir: Path | None = None) -> CaptionsResult:
    """The whole caption stage in this process: every unit mapped in order, reduced as it comes
    (with a `limit`, reading stops once enough captions passed every step). With `spill_dir` (an
    empty folder the caller owns, to be kept until `rows` is read) the growing state lives in files
    there; the rows and report are the same."""
    own = models is None
    models = models if models is not None else ModelCache()
    try:
        return _run_captions(cfg, seed, profile, report_dir, models, spill_dir)
    finally:
        if own:
            models.close()


def _run_captions(cfg: CaptionsConfig, seed: int, profile: str, report_dir: Path | None,
                  models: ModelCache, spill_dir: Path | None) -> CaptionsResult:
    with torch_threads(cfg.num_threads):
        timings: dict[str, float] = {}
        t_all = time.perf_counter()

        def timed(name: str, t0: float) -> None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        t0 = time.perf_counter()
        curator = Curator(cfg, models)
        reducer = Reducer(cfg, seed=seed, profile=profile, models=models, timed=timed, report_dir=report_dir,
                          spill_dir=spill_dir)
        timed("load_models", t0)
        reader = UnitReader(cfg, spill_dir)
        try:
            while (unit := reader.next_unit()) is not None:
                if reducer.add(curator.curate(unit, timed)):
                    break
        finally:
            reader.close()
        return reducer.finish(report_dir, timings, t_all)


def unit_size(cfg: CaptionsConfig) -> int:
    """Source rows per unit: `chunk_size`, or with a `limit` about the limit (at least 16), so that a
    small trial (`--limit`) reads little more than it needs."""
    return cfg.chunk_size if cfg.limit is None else min(cfg.chunk_size, max(cfg.limit, 16))


class UnitReader:
    """The caption sources as fixed units of `unit_size` rows (unit i = rows i*size..(i+1)*size-1 of
    the sources read in order), validated on the way.

    Units are what the caption stage maps over (every rank maps its share, `stages/captions.py`).
    Validation sees every row up to the unit (a repeated (source, id) is dropped wherever it is), so
    a reader jumps forward by reading, and restarts if asked for an earlier unit."""

    def __init__(self, cfg: CaptionsConfig, spill_dir: Path | None = None):
        self.cfg, self.size = cfg, unit_size(cfg)
        self.spill_dir = spill_dir  # where the ids read are indexed (in memory without one)
        self._seen_ids: DigestIndex | None = None
        self._restart()

    def _restart(self) -> None:
        self._stream = _all_sources(self.cfg)
        self._next = 0
        ours = self._seen_ids is not None  # an index this reader made (restarting): replaced
        if ours:
            self._seen_ids.close()
        path = None
        if self.spill_dir is not None:
            path = Path(self.spill_dir) / "ids-read.sqlite"
            if ours:
                path.unlink(missing_ok=True)
            elif path.exists():  # never a file this reader did not write
                raise ValueError(f"{path} exists already: the caption reader needs a spill folder without it")
        self._seen_ids = DigestIndex(path)

    def close(self) -> None:
        if self._seen_ids is not None:
            self._seen_ids.close()

    def next_unit(self) -> dict | None:
        """The next unit (None once the sources are exhausted)."""
        chunk = list(islice(self._stream, self.size))
        if not chunk:
            return None
        self._next += 1
        return self._validate(chunk)

    def unit(self, index: int) -> dict:
        """Unit `index` (an error if the sources hold fewer units)."""
        if index < self._next:
            self._restart()
        while self._next < index:  # rows before the unit: read for their ids only
            chunk = list(islice(self._stream, self.size))
            if not chunk:
                break
            self._next += 1
            keys = [_id_key(row) for row in chunk if _validate(row, self.cfg) is None]
            self._seen_ids.prefetch(keys)
            for key in keys:
                self._seen_ids.put(key, "")
        unit = self.next_unit() if self._next == index else None
        if unit is None:
            raise InputDataError(f"the caption sources hold fewer than {index + 1} units of {self.size} "
                                 "rows: they changed since the caption stage was planned; use a new work dir")
        return unit

    def _validate(self, chunk: list[dict]) -> dict:
        cfg = self.cfg
        rep = StepReport("validate", {"min_chars": cfg.min_chars, "max_chars": cfg.max_chars}, cfg.report_examples)
        rows, counts = [], {}
        whys = [_validate(row, cfg) for row in chunk]
        keys = [_id_key(row) for row in chunk]
        self._seen_ids.prefetch(k for k, why in zip(keys, whys) if why is None)
        for row, why, key in zip(chunk, whys, keys):
            counts[row["source"]] = counts.get(row["source"], 0) + 1
            if why is None and self._seen_ids.get(key) is not None:
                why = "duplicate_id"
            if why:
                rep.drop(row, reason=why)
            else:
                self._seen_ids.put(key, "")
                rep.keep()
                rows.append(row)
        return {"rows": rows, "validate": rep, "sources": counts}


def _id_key(row: dict) -> bytes:
    """A row's (source, id) as the 16-byte key the reader indexes."""
    import hashlib

    return hashlib.blake2b(f"{row['source']}\x1f{row['source_id']}".encode(), digest_size=16).digest()


def count_units(cfg: CaptionsConfig) -> int:
    """How many units the caption sources hold (they are read once; an empty source is an error)."""
    n = sum(1 for _ in _all_sources(cfg))
    return -(-n // unit_size(cfg))


class Curator:
    """The per-caption steps, unit by unit: the filters in order (rules, perplexity, CLIP/BLIP
    against the original image), then the embeddings near dedup needs. Pure per unit: a unit's
    result does not depend on any other unit, so units map over ranks and resume one by one."""

    def __init__(self, cfg: CaptionsConfig, models: ModelCache):
        self.cfg = cfg
        self.steps = _build_steps(cfg, models)
        self.embedder = None
        if cfg.dedup is not None and cfg.dedup.near:
            self.embedder = models.embedder(_dedup_embedder(cfg), "captions embedder", cfg.device)

    def curate(self, unit: dict, timed=None) -> UnitResult:
        """A validated unit (`UnitReader`) through every filter; survivors carry their embedding."""
        timed = timed or (lambda name, t0: None)
        rows = unit["rows"]
        reps = [StepReport(s.label, s.params, self.cfg.report_examples) for s in self.steps]
        for step, rep in zip(self.steps, reps):
            if not rows:
                break
            t0 = time.perf_counter()
            rows = _apply_step(step, rows, rep)
            timed(f"filter:{step.label}", t0)
        if self.embedder is not None and rows:
            t0 = time.perf_counter()
            emb = self.embedder.encode([r["caption"] for r in rows], self.cfg.dedup.batch_size)
            for row, e in zip(rows, emb):
                row["_emb"] = e
            timed("near_dedup", t0)
        out = [{"source": r["source"], "source_id": r["source_id"], "caption": r["caption"],
                **({"_emb": r["_emb"]} if "_emb" in r else {})} for r in rows]
        return UnitResult(out, unit["validate"].as_dict(), [r.as_dict() for r in reps], unit["sources"])


@dataclass
class UnitResult:
    """One unit's surviving captions (with their dedup embedding, if any) and its step counts."""

    rows: list[dict]
    validate: dict
    filters: list[dict]
    sources: dict[str, int]

    META_KEY = b"synthvlm.caption_unit"

    def to_table(self):
        """The unit as a shard (its report in the schema metadata): bytes fixed by the unit."""
        import pyarrow as pa

        cols = {"source": [r["source"] for r in self.rows], "source_id": [str(r["source_id"]) for r in self.rows],
                "caption": [r["caption"] for r in self.rows]}
        fields = [pa.field("source", pa.string()), pa.field("source_id", pa.string()), pa.field("caption", pa.string())]
        if self.rows and "_emb" in self.rows[0]:
            cols["emb"] = [np.asarray(r["_emb"], dtype=np.float32).tolist() for r in self.rows]
            fields.append(pa.field("emb", pa.list_(pa.float32())))
        meta = {"validate": self.validate, "filters": self.filters, "sources": self.sources}
        schema = pa.schema(fields, metadata={self.META_KEY: json.dumps(meta, sort_keys=True, ensure_ascii=False)})
        return pa.table(cols, schema=schema)

    @classmethod
    def from_table(cls, table) -> UnitResult:
        meta = json.loads(table.schema.metadata[cls.META_KEY])
        data = table.to_pydict()
        embs = data.get("emb")
        rows = [{"source": s, "source_id": i, "caption": c,
                 **({"_emb": np.asarray(embs[k], dtype=np.float32)} if embs is not None else {})}
                for k, (s, i, c) in enumerate(zip(data["source"], data["source_id"], data["caption"]))]
        return cls(rows, meta["validate"], meta["filters"], meta["sources"])


def _dedup_embedder(cfg: CaptionsConfig):
    return cfg.dedup.embedder if cfg.dedup and cfg.dedup.embedder else cfg.embedder


class Reducer:
    """The global steps, unit after unit in order: exact and near dedup, the judge and the limit
    (`_Gate`), then synthesis, the balance and diversity report. Runs on one process."""

    def __init__(self, cfg: CaptionsConfig, *, seed: int, profile: str, models: ModelCache, timed=None,
                 judge_cache: Path | None = None, report_dir: Path | None = None, spill_dir: Path | None = None):
        self.cfg, self.seed, self.profile, self.models = cfg, seed, profile, models
        spill = Path(spill_dir) if spill_dir is not None else None  # an empty folder of this reduce's own
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)
            if any(not p.name.startswith(".") for p in spill.iterdir()):  # a marker file may be there
                raise ValueError(f"the caption reduce needs an empty spill folder, and {spill} holds files "
                                 "(a reduce's indices are never reused)")
        self.report_dir = report_dir  # where LLM steps on a server record their answers
        self.timed = timed or (lambda name, t0: None)
        near_threshold = cfg.dedup.threshold if (cfg.dedup and cfg.dedup.near) else None
        self.near_threshold = near_threshold
        judge = None
        if cfg.judge is not None and cfg.sources:
            from synthvlm_data.captions.judge import EndpointJudge, Judge

            if (ep := cfg.step_endpoint(cfg.judge)) is not None:
                judge = EndpointJudge(cfg.judge, models.endpoint(ep, "captions judge", report_dir), seed)
            else:
                judge = Judge(cfg.judge, models.lm(cfg.judge.model or cfg.lm, "captions judge", cfg.device,
                                                   cfg.dtype), seed)
            if judge_cache is not None:
                judge = CachedJudge(judge, judge_cache, spill)
        self.judge = judge
        ex = cfg.report_examples
        self.validate_rep: StepReport | None = None
        self.filter_reps: list[StepReport] | None = None
        self.exact = ExactDedup(spill / "exact.sqlite" if spill else None)
        self.exact_rep = StepReport("exact_dedup", {"normalise": "lower-case, collapse whitespace/punctuation"}, ex)
        self.near = NearDedup(near_threshold, spill / "near" if spill else None) if near_threshold is not None else None
        name = None
        if near_threshold is not None:
            name = getattr(models.embedder(_dedup_embedder(cfg), "captions embedder", cfg.device), "name", None)
        self.near_rep = StepReport("near_dedup", {"embedder": name, "threshold": near_threshold}, ex)
        self.judge_rep = None
        if judge is not None:
            j = cfg.judge
            self.judge_rep = StepReport("judge", {"model": judge.name, "system_prompt": j.system_prompt,
                                                  "prompt": j.prompt, "min_p_yes": j.min_p_yes,
                                                  "temperature": j.temperature, "enforce": j.enforce,
                                                  "max_captions": j.max_captions}, ex)
            self.judge_rep.extra.update({"judged": 0, "answered_yes": 0, "unjudged": 0})
        self.limit_rep = StepReport("limit", {"limit": cfg.limit}, ex)
        self.gate = _Gate(cfg, self.exact if cfg.dedup is not None and cfg.dedup.exact else None, self.near, judge,
                          self.exact_rep, self.near_rep, self.judge_rep, self.limit_rep)
        self.curated = KeptRows(spill / "kept.arrows" if spill else None)
        self.source_counts: dict[str, int] = {}
        self.done = False

    def add(self, unit: UnitResult) -> bool:
        """Take the next unit's survivors; True once the limit is reached (later units are not needed)."""
        ex = self.cfg.report_examples
        if self.validate_rep is None:
            self.validate_rep = StepReport("validate", unit.validate.get("params", {}), ex)
            self.filter_reps = [StepReport(d["name"], d.get("params", {}), ex) for d in unit.filters]
        _merge(self.validate_rep, unit.validate)
        for rep, d in zip(self.filter_reps, unit.filters):
            _merge(rep, d)
        for src, n in unit.sources.items():
            self.source_counts[src] = self.source_counts.get(src, 0) + n
        if unit.rows and self.gate.run(unit.rows, self.curated, self.timed):
            self.done = True
        return self.done

    def finish(self, report_dir: Path | None, timings: dict | None = None, t_all: float | None = None,
               write_report: bool = True) -> CaptionsResult:
        """The global steps over every unit added; writes the cluster plot and the timings into
        `report_dir`, and the report too unless the caller writes its own (`write_report=False`: the
        build's caption stage completes it and writes one report into the work dir)."""
        cfg, seed, models, timed = self.cfg, self.seed, self.models, self.timed
        timings = timings if timings is not None else {}
        if report_dir is not None:
            report_dir = Path(report_dir)
            report_dir.mkdir(parents=True, exist_ok=True)
        if self.validate_rep is None:  # no unit at all (synthesis only): the steps, each having seen nothing
            ex = cfg.report_examples
            self.validate_rep = StepReport("validate", {"min_chars": cfg.min_chars, "max_chars": cfg.max_chars}, ex)
            self.filter_reps = [StepReport(st.label, st.params, ex) for st in _build_steps(cfg, models)]
        step_dicts = [self.validate_rep.as_dict()] + [r.as_dict() for r in self.filter_reps]
        if cfg.dedup is not None and cfg.dedup.exact:
            step_dicts.append(self.exact_rep.as_dict())
        if self.near is not None:
            step_dicts.append(self.near_rep.as_dict())
        if self.judge_rep is not None:
            self.judge_rep.extra.update(self.judge.report_extra())
            step_dicts.append(self.judge_rep.as_dict())
            if isinstance(self.judge, CachedJudge):
                self.judge.close()
        if cfg.limit is not None:
            step_dicts.append(self.limit_rep.as_dict())

        curated = self.curated
        curated.close()
        report: dict = {"profile": self.profile, "seed": seed, "sources": self.source_counts}
        synthetic: list[dict] = []
        near_threshold = self.near_threshold
        emb_ref = _dedup_embedder(cfg)
        if cfg.synthesis is not None:
            from synthvlm_data.captions.filters.base import RuleFilter
            from synthvlm_data.captions.synthesis import synthesize

            t0 = time.perf_counter()
            s = cfg.synthesis
            ep = cfg.step_endpoint(s)
            lm = (models.endpoint(ep, "captions synthesis", report_dir or self.report_dir) if ep is not None
                  else models.lm(s.model or cfg.lm, "captions synthesis", cfg.device, cfg.dtype))
            syn_near = s.near_dup_threshold or near_threshold
            syn_emb = models.embedder(emb_ref, "captions embedder", cfg.device) if syn_near else None
            rules = []
            if s.apply_rule_filters:
                ctx = BuildContext(captions=cfg, models=models, device=resolve_device(cfg.device))
                rules = [f.build(ctx) for f in cfg.filters if f.enabled and isinstance(f, RuleFilter)]
            synthetic, syn_rep = synthesize(
                s, lm, seed=seed, embedder=syn_emb,
                near_threshold=s.near_dup_threshold or near_threshold,
                rule_steps=rules, exact=self.exact, min_chars=cfg.min_chars, max_chars=cfg.max_chars,
                max_examples=cfg.report_examples)
            step_dicts.append(syn_rep)
            timed("synthesis", t0)
            if syn_rep["shortfall"] and s.on_shortfall == "error":
                from synthvlm_data.errors import SynthVLMError

                raise SynthVLMError(
                    f"caption synthesis kept fewer than {s.n_per_concept} captions for "
                    f"{len(syn_rep['shortfall'])} concept(s) ({', '.join(list(syn_rep['shortfall'])[:5])}) after "
                    f"{s.max_rounds} rounds; " + (not_sampling_hint(s, ep) if syn_rep.get("identical_answers") else
                                                   "raise synthesis.max_rounds/oversample or set on_shortfall: warn")
                )
        report["steps"] = step_dicts
        report["counts"] = {"curated": len(curated), "synthetic": len(synthetic),
                            "total": len(curated) + len(synthetic)}

        if cfg.diversity is not None:
            t0 = time.perf_counter()
            div_ref = cfg.diversity.embedder or cfg.embedder
            div_embedder = models.embedder(div_ref, "captions diversity embedder", cfg.device)
            # dedup embeddings (row["_emb"]) are reused when the embedder is the same
            reuse_emb = div_ref == emb_ref
            report.update(_diversity(cfg, curated, synthetic, div_embedder, reuse_emb, seed, report_dir))
            timed("diversity", t0)
        report["summary"] = _summary(report)

        self.exact.close()
        out = [{"source": r["source"], "source_id": r["source_id"], "caption": r["caption"], "concept": r.get("concept")}
               for r in synthetic]
        if curated.path is None:
            rows = [{"source": r["source"], "source_id": r["source_id"], "caption": r["caption"], "concept": None}
                    for r in curated] + out
        else:
            rows = ChainRows(_WithConcept(curated), out)
        if t_all is not None:
            timings["total"] = time.perf_counter() - t_all
        timings = {k: round(v, 3) for k, v in timings.items()}
        if report_dir is not None:
            if write_report:
                (report_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
            (report_dir / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
        return CaptionsResult(rows=rows, report=report, timings=timings, synthetic=out)


def _merge(rep: StepReport, d: dict) -> None:
    """Add one unit's counts (a `StepReport.as_dict`) to the stage's: units are merged in order, so
    the first examples are the ones one process would have kept."""
    rep.seen += d["seen"]
    rep.kept += d["kept"]
    rep.dropped += d["dropped"]
    rep.reasons.update(d.get("reasons", {}))
    rep.examples.extend(d["examples"][: max(0, rep.max_examples - len(rep.examples))])
    for k, v in d.items():
        if k not in ("name", "seen", "kept", "dropped", "reasons", "examples", "params"):
            rep.extra[k] = rep.extra.get(k, 0) + v


class _Gate:
    """Exact dedup -> near dedup -> judge -> limit, decided caption by caption in input order.

    A caption enters the dedup indices only once it passed all four, so no caption is dropped as a
    duplicate of one that the judge or the limit left out (nor is a synthetic caption rejected as a
    copy of an absent curated one: synthesis shares the exact index). The model work stays batched
    per chunk: embeddings and p_yes are per caption and do not depend on the batch."""

    def __init__(self, cfg: CaptionsConfig, exact, near, judge, exact_rep, near_rep, judge_rep, limit_rep):
        self.cfg, self.exact, self.near, self.judge = cfg, exact, near, judge
        self.exact_rep, self.near_rep, self.judge_rep, self.limit_rep = exact_rep, near_rep, judge_rep, limit_rep

    def run(self, rows: list[dict], curated: list[dict], timed) -> bool:
        """Append the kept rows to `curated`; True once the limit is reached."""
        t0 = time.perf_counter()
        digests = [digest(r["caption"]) for r in rows]  # once per row: prefetch, find, add and the judge's batch
        if self.exact is not None:
            self.exact.prefetch(digests)
        timed("exact_dedup", t0)
        t0 = time.perf_counter()
        emb = np.stack([r["_emb"] for r in rows]) if self.near else None  # computed per unit (Curator)
        batch = self.near.batch(emb) if self.near else None
        timed("near_dedup", t0)
        t0 = time.perf_counter()
        probs = self._prejudge(rows, batch, digests)
        timed("judge", t0)
        t0 = time.perf_counter()
        limit = self.cfg.limit
        for i, row in enumerate(rows):
            if not self._unique(row, i, batch, digests[i]) or not self._judged_yes(row, probs.get(i)):
                continue
            if limit is not None and len(curated) >= limit:
                self.limit_rep.drop(row, reason="over_limit")
                continue
            self.limit_rep.keep()
            ident = f"{row['source']}:{row['source_id']}"
            if self.exact is not None:
                self.exact.add(row["caption"], ident, digests[i])
            if batch is not None:
                batch.add(i, ident)
            curated.append(row)
        timed("dedup_judge_limit", t0)  # the per-row decisions (and any p_yes scored on its own)
        return limit is not None and len(curated) >= limit

    def _unique(self, row: dict, i: int, batch, d: bytes) -> bool:
        if self.exact is not None:
            dup = self.exact.find(row["caption"], d)
            if dup is not None:
                self.exact_rep.drop(row, note=f"same as {dup}")
                return False
            self.exact_rep.keep()
        if batch is not None:
            hit = batch.check(i)
            if hit is not None:
                self.near_rep.drop(row, hit[0], note=f"near {hit[1]}")
                return False
            self.near_rep.keep()
        return True

    def _prejudge(self, rows: list[dict], batch, digests: list[bytes]) -> dict[int, float]:
        """p_yes, in one batched call, of the rows likely to reach the judge: not duplicates of a
        caption kept before this chunk nor exact copies of an earlier row of the chunk, within the
        max_captions budget. Any other row that does reach the judge is scored on its own."""
        if self.judge is None:
            return {}
        j = self.cfg.judge
        room = len(rows) if j.max_captions is None else max(0, j.max_captions - self.judge_rep.extra["judged"])
        todo, seen = [], set()
        for i, row in enumerate(rows):
            if len(todo) >= room:
                break
            d = digests[i]
            if d in seen or (self.exact is not None and self.exact.find(row["caption"], d) is not None):
                continue
            if batch is not None and batch.check(i) is not None:
                continue
            seen.add(d)
            todo.append(i)
        probs = self.judge.p_yes([rows[i]["caption"] for i in todo]) if todo else []
        return dict(zip(todo, probs))

    def _judged_yes(self, row: dict, p: float | None) -> bool:
        """The judge's decision on one row (always True without a judge, past max_captions, or
        when not enforced: then a No is only counted as would_drop)."""
        if self.judge is None:
            return True
        rep, j = self.judge_rep, self.cfg.judge
        if j.max_captions is not None and rep.extra["judged"] >= j.max_captions:
            rep.extra["unjudged"] += 1
            rep.keep()
            return True
        if p is None:
            p = self.judge.p_yes([row["caption"]])[0]
        rep.extra["judged"] += 1
        yes = self.judge.decide(row["caption"], p)
        rep.extra["answered_yes"] += yes
        if yes:
            rep.keep()
            return True
        if not j.enforce:
            rep.keep()
            rep.extra["would_drop"] = rep.extra.get("would_drop", 0) + 1
            if len(rep.examples) < rep.max_examples:
                rep.examples.append({"source": row["source"], "source_id": row["source_id"],
                                     "caption": row["caption"], "value": round(p, 6),
                                     "note": "answered No (not enforced)"})
            return True
        rep.drop(row, p)
        return False


def _diversity(cfg, curated, synthetic, embedder, reuse_emb: bool, seed: int, report_dir: Path | None) -> dict:
    from synthvlm_data.captions.synthesis import concepts_of
    from synthvlm_data.captions.concepts import balance, load_concepts
    from synthvlm_data.clustering import cluster_report, subsample
    from synthvlm_data.presentation.plots import plot_caption_clusters

    d = cfg.diversity
    if cfg.synthesis is not None:
        concepts = concepts_of(cfg.synthesis)
    else:
        concepts = load_concepts(C.SynthesisConfig.model_fields["concepts_file"].default)
    bal = {}
    if len(curated):
        bal["curated"] = balance(curated.captions(), concepts)
    if synthetic:
        bal["synthetic"] = balance([r["caption"] for r in synthetic], concepts, [r["concept"] for r in synthetic])
    sets = {}  # each set's embeddings at the subsample's rows (the whole set is never held)
    if len(curated):
        index = subsample(len(curated), d.max_points)
        if reuse_emb and curated.has_emb:
            sets["curated"] = curated.embeddings_at(index)
        else:
            sets["curated"] = _embed_at(curated.captions(), index, embedder, d.batch_size)
    if synthetic:
        index = subsample(len(synthetic), d.max_points)
        have = [r.get("_emb") for r in synthetic] if reuse_emb else [None]
        if all(e is not None for e in have):
            sets["synthetic"] = np.stack(have)[index]
        else:
            sets["synthetic"] = _embed_at((r["caption"] for r in synthetic), index, embedder, d.batch_size)
    clusters = cluster_report(sets, d.k, seed if d.seed is None else d.seed, None)
    clusters["embedder"] = embedder.name
    if report_dir is not None and plot_caption_clusters(clusters, Path(report_dir) / CLUSTERS_PNG):
        clusters["png"] = CLUSTERS_PNG
    return {"balance": bal, "diversity": clusters}


def _embed_at(captions: Iterator[str], index: np.ndarray, embedder, batch_size: int) -> np.ndarray:
    """The embeddings of the captions at the ascending positions `index` (only those are encoded)."""
    wanted = set(index.tolist())
    return embedder.encode([c for i, c in enumerate(captions) if i in wanted], batch_size)


class _WithConcept:
    """Kept curated rows as the stage's output rows (`concept` None), iterable more than once."""

    def __init__(self, kept: KeptRows):
        self.kept = kept

    def __len__(self) -> int:
        return len(self.kept)

    def __iter__(self):
        for r in self.kept:
            yield {"source": r["source"], "source_id": r["source_id"], "caption": r["caption"], "concept": None}


def _summary(report: dict) -> dict:
    """Scalar headline figures (for the dataset card): counts, and per set the concept balance and
    cluster occupancy entropies, so curated and synthetic captions compare at a glance."""
    out = {f"{k}_captions": v for k, v in report["counts"].items()}
    for name, b in (report.get("balance") or {}).items():
        out[f"{name}_concept_entropy"] = b["normalised_entropy"]
        out[f"{name}_concept_coverage"] = b["coverage"]
        if b["max_min_ratio"] is not None:
            out[f"{name}_concept_max_min_ratio"] = b["max_min_ratio"]
    for name, c in ((report.get("diversity") or {}).get("sets") or {}).items():
        out[f"{name}_cluster_entropy"] = c["normalised_entropy"]
        out[f"{name}_cluster_coverage"] = c["coverage"]
    return out
