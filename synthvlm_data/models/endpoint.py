"""LLM steps through an OpenAI-compatible server (vLLM, SGLang, TGI, `transformers serve`, llama.cpp).

A recipe names the server with an `endpoint` (`EndpointConfig`): on `captions` (the default of the
judge and synthesis) or on one step. The model runs where the server runs (a 70B model with tensor
parallelism over the GPUs of a node); this process sends chat-completion requests, at most
`max_concurrency` at a time, each retried with exponential backoff on transient failures
(connection refused/reset, timeouts, 408/409/429/5xx: the `openai` client's retry policy, honouring
`Retry-After`). The API key comes from the environment variable named by `api_key_env`, never from
the recipe.

`check_endpoint` is the preflight (`synthvlm validate`, the start of `build`): one GET /models with
a short timeout and no retries, so a server that is not up fails at once with one line naming the
URL and how to start one.

Every answer is recorded (`llm_responses.jsonl` in the caption stage's folder, keyed by the
request's SHA-256): a re-run of the stage (resume after a kill) reuses recorded answers instead of
asking the server again, so it is byte-identical even when the server's sampling is not
reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import Field, field_validator

from synthvlm_data.errors import ModelUnavailableError, RecipeError, one_line
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.schema import StrictModel

RECORD_FILE = "llm_responses.jsonl"
START_HINT = ("start one (GPU: `vllm serve MODEL --tensor-parallel-size N --port 8000`; CPU, small models: "
              "`transformers serve FOLDER --port 8000`) or fix the endpoint `url` in the recipe")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EndpointConfig(StrictModel):
    """An OpenAI-compatible server that runs an LLM step (judge, synthesis)."""

    url: str = Field(description="Base URL of the OpenAI API, e.g. http://gpu-node:8000/v1.")
    model: str | None = Field(default=None, description="The served model's name, sent with each request "
                              "(vLLM: the `vllm serve` model id or --served-model-name). None: the first "
                              "model the server lists.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key "
                                    "(never the key itself). None: no key.")
    max_concurrency: int = Field(default=8, ge=1, description="Requests in flight at once (the server batches them).")
    timeout: float = Field(default=300.0, gt=0, description="Seconds per request attempt.")
    max_retries: int = Field(default=5, ge=0, description="Retries of a request on connection errors, "
                             "timeouts, 408/409/429 and 5xx, with exponential backoff (0.5 s doubling to 8 s).")
    top_logprobs: int = Field(default=20, ge=1, le=20, description="Alternatives asked for the judge's answer "
                              "token (p(yes) is read from them).")
    tokenizer: ModelRef | None = Field(default=None, description="The served model's tokenizer (judge only): "
                                       "on a server without logprobs, the judge's one-token answer is restricted "
                                       "to the Yes/No tokens with `logit_bias`, so greedy = the more likely answer.")
    extra_body: dict = Field(default_factory=dict, description="Server-specific fields sent with every request "
                             "(vLLM: `top_k`; llama.cpp: `repeat_penalty`; transformers serve: `generation_config`).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"endpoint url {value!r} must be http(s)://host[:port]/v1")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("api_key_env names an environment variable (e.g. OPENAI_API_KEY), not the key itself")
        return value


def _api_key(cfg: EndpointConfig, role: str) -> str:
    if cfg.api_key_env is None:
        return "EMPTY"  # the client needs a string; servers started without a key ignore it
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise RecipeError(f"{role}: endpoint {cfg.url} needs an API key in ${cfg.api_key_env}, which is not set")
    return key


def _client(cfg: EndpointConfig, role: str, timeout: float | None = None, max_retries: int | None = None):
    try:
        from openai import OpenAI
    except ImportError:
        raise ModelUnavailableError(f"{role}: endpoint {cfg.url} needs the `openai` client: "
                                    "pip install 'synthvlm-data[endpoint]'") from None
    return OpenAI(base_url=cfg.url, api_key=_api_key(cfg, role), timeout=cfg.timeout if timeout is None else timeout,
                  max_retries=cfg.max_retries if max_retries is None else max_retries)


def check_endpoint(cfg: EndpointConfig, role: str, timeout: float = 5.0) -> str:
    """The served model's name, or one line naming the URL when no server answers there (one
    attempt, `timeout` seconds: a preflight does not wait out the retry policy)."""
    import openai

    client = _client(cfg, role, timeout=timeout, max_retries=0)
    try:
        served = [m.id for m in client.models.list()]
    except openai.AuthenticationError as err:
        raise ModelUnavailableError(f"{role}: endpoint {cfg.url} refused the API key ({one_line(err)}); set it in "
                                    f"${cfg.api_key_env or 'an env var named by endpoint.api_key_env'}") from None
    except openai.APIStatusError as err:
        raise ModelUnavailableError(f"{role}: endpoint {cfg.url} answered GET /models with HTTP {err.status_code}: "
                                    f"is it an OpenAI-compatible API? {START_HINT}") from None
    except openai.APIError as err:
        raise ModelUnavailableError(f"{role}: no OpenAI-compatible server answers at {cfg.url} "
                                    f"({one_line(err)}); {START_HINT}") from None
    if cfg.model is None:
        if not served:
            raise RecipeError(f"{role}: endpoint {cfg.url} lists no model; set endpoint.model to the served model's name")
        return served[0]
    if served and cfg.model not in served:
        raise RecipeError(f"{role}: endpoint {cfg.url} serves {', '.join(served[:5])}, not {cfg.model!r}; "
                          "fix endpoint.model")
    return cfg.model


class Endpoint:
    """Chat completions from one server: concurrent, retried, recorded."""

    def __init__(self, cfg: EndpointConfig, role: str, record_dir: Path | None = None):
        self.cfg, self.role = cfg, role
        self.model = check_endpoint(cfg, role, timeout=min(cfg.timeout, 30.0))
        self.name = f"{self.model} @ {cfg.url}"
        self.client = _client(cfg, role)
        self._lock = threading.Lock()
        self.recorded: dict[str, dict] = {}
        self.loaded: set[str] = set()  # keys of answers recorded by an earlier run
        self.record = Path(record_dir) / RECORD_FILE if record_dir is not None else None
        self._newline = False  # the file's last line was cut by a kill: the next record starts a new line
        if self.record is not None and self.record.is_file():
            text = self.record.read_text(encoding="utf-8")
            self._newline = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:  # a line cut by a kill is not a record: that request is asked again
                    item = json.loads(line)
                    self.recorded[item["key"]] = item["response"]
                    self.loaded.add(item["key"])
                except (ValueError, KeyError, TypeError):
                    continue
        self.reused = 0

    def chat(self, requests: list[dict]) -> list[dict]:
        """One response dict (OpenAI chat-completion JSON) per request body, in order."""
        if not requests:
            return []
        with ThreadPoolExecutor(min(self.cfg.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, body: dict) -> dict:
        import openai

        body = {"model": self.model, **body}
        key = hashlib.sha256(json.dumps([body, self.cfg.extra_body], sort_keys=True).encode()).hexdigest()
        with self._lock:
            if key in self.recorded:
                self.reused += key in self.loaded
                return self.recorded[key]
        try:
            resp = self.client.chat.completions.create(**body, extra_body=self.cfg.extra_body or None)
        except openai.APIStatusError as err:
            transient = err.status_code in (408, 409, 429) or err.status_code >= 500
            why = f"still failing after {self.cfg.max_retries} retries" if transient else "rejected the request"
            raise ModelUnavailableError(f"{self.role}: endpoint {self.cfg.url} {why}: HTTP {err.status_code} "
                                        f"{one_line(err, 120)}; answers so far are recorded, re-run to resume") from None
        except openai.APIError as err:
            raise ModelUnavailableError(f"{self.role}: endpoint {self.cfg.url} stopped answering ({one_line(err)}, "
                                        f"after {self.cfg.max_retries} retries); {START_HINT}; answers so far are "
                                        "recorded, re-run to resume") from None
        out = resp.model_dump(mode="json", exclude_none=True)
        with self._lock:
            self.recorded[key] = out
            if self.record is not None:
                with open(self.record, "a", encoding="utf-8") as fh:
                    fh.write(("\n" if self._newline else "") + json.dumps({"key": key, "response": out}, sort_keys=True) + "\n")
                self._newline = False
        return out
