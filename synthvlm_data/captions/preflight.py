"""What the caption stage will load or ask, checked before any stage runs (loads nothing)."""

from __future__ import annotations

from synthvlm_data.captions.config import CaptionsConfig


def model_refs(cfg: CaptionsConfig) -> list[tuple[str, object]]:
    """(role, ModelRef) of every model this config will load."""
    refs = [ref for f in cfg.filters if f.enabled for ref in f.models(cfg)]
    if cfg.judge is not None and cfg.sources and cfg.step_endpoint(cfg.judge) is None:
        refs.append(("captions judge", cfg.judge.model or cfg.lm))
    if cfg.synthesis is not None and cfg.step_endpoint(cfg.synthesis) is None:
        refs.append(("captions synthesis", cfg.synthesis.model or cfg.lm))
    near = cfg.dedup is not None and cfg.dedup.near
    if near or (cfg.synthesis is not None and cfg.synthesis.near_dup_threshold):
        refs.append(("captions embedder", (cfg.dedup.embedder if cfg.dedup and cfg.dedup.embedder else cfg.embedder)))
    if cfg.diversity is not None:
        refs.append(("captions diversity embedder", cfg.diversity.embedder or cfg.embedder))
    return refs


def check_models(cfg: CaptionsConfig) -> None:
    """Preflight for the build: raise ModelUnavailableError (one line) before any stage runs if a
    model of the caption stage cannot be loaded here, or an LLM server it names does not answer
    (one GET /models each, no retries). Loads nothing."""
    from synthvlm_data.models.endpoint import check_endpoint
    from synthvlm_data.models.preflight import check_available

    for role, ref in model_refs(cfg):
        check_available(ref, role)
    for role, ep in endpoints(cfg):
        if ep.tokenizer is not None:
            check_available(ep.tokenizer, f"{role} endpoint.tokenizer")
        check_endpoint(ep, role)


def endpoints(cfg: CaptionsConfig) -> list[tuple[str, object]]:
    """(role, EndpointConfig) of every LLM step this config runs on a server."""
    steps = [("captions judge", cfg.judge if cfg.sources else None), ("captions synthesis", cfg.synthesis)]
    return [(role, ep) for role, step in steps if step is not None and (ep := cfg.step_endpoint(step)) is not None]
