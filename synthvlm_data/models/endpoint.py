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
reproducible. A record holds only what the steps read (`pack`: each choice's text and finish
reason, the first token's top-k tokens and logprobs), and a fresh answer is used in that same form
(`replay_view`), so a replayed run cannot differ from the first. On resume the file is streamed
into an index of byte offsets (`ResponseRecord`) and answers are read back from disk when asked
for: a stage of 558K captions does not hold its answers in memory. One thread pool serves an
endpoint for its lifetime (the caption stage's model cache), not one per batch.
"""

from __future__ import annotations

import contextlib
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
    tokenizer: ModelRef | None = Field(default=None, description="The served model's tokenizer (judge only; "
                                       "a path or id, or {id, revision}): "
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

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer(cls, value: object) -> object:
        """`tokenizer: /path/to/folder` (or a Hub id) as well as `tokenizer: {id: ..., revision: ...}`."""
        return {"id": value} if isinstance(value, str) else value

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


def replay_view(response: dict) -> dict:
    """The parts of a chat completion the LLM steps read, in the OpenAI nesting: per choice the
    text (`message.content`), `finish_reason` (synthesis) and the first answer token's
    `top_logprobs` as (token, logprob) pairs (judge); no ids, usage, token byte arrays or later
    tokens. A first token without alternatives reads as no logprobs, as the judge reads it."""
    return unpack(pack(response))


def pack(response: dict) -> list[dict]:
    """A response as stored: per choice `c` (text), `f` (finish reason), `t` ([token, logprob] of
    the first token's alternatives), each only when present."""
    out = []
    for choice in response.get("choices") or []:
        item: dict = {}
        text = (choice.get("message") or {}).get("content")
        if text is not None:
            item["c"] = text
        if choice.get("finish_reason") is not None:
            item["f"] = choice["finish_reason"]
        content = (choice.get("logprobs") or {}).get("content") or []
        tops = (content[0] or {}).get("top_logprobs") if content else None
        if tops is not None:
            item["t"] = [[t["token"], t["logprob"]] for t in tops]
        out.append(item)
    return out


def unpack(packed: list[dict]) -> dict:
    """`pack`'s inverse: the stored answer in the OpenAI nesting the steps read."""
    choices = []
    for item in packed:
        choice: dict = {}
        if "c" in item:
            choice["message"] = {"content": item["c"]}
        if "f" in item:
            choice["finish_reason"] = item["f"]
        if "t" in item:
            choice["logprobs"] = {"content": [{"top_logprobs": [{"token": t, "logprob": lp} for t, lp in item["t"]]}]}
        choices.append(choice)
    return {"choices": choices}


class ResponseRecord:
    """`llm_responses.jsonl`: one `{"answer", "key"}` line per answer (`pack`), appended as answers come.

    Opening it streams the file once and keeps only an index (request key -> byte offset of its
    line, the last line of a key winning); `get` reads that line back. A line cut by a kill is not a
    record (its request is asked again), and the next record starts on a line of its own. Records
    of older versions (whole responses) are read through `replay_view` like new ones.
    """

    def __init__(self, path: Path):
        self.path = path
        self.index: dict[str, int] = {}
        self._newline = False  # the file's last line was cut by a kill: the next record starts a new line
        if path.is_file():
            with open(path, "rb") as fh:
                offset = 0
                for line in fh:
                    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                        item = json.loads(line)
                        if isinstance(item.get("answer"), list) or isinstance(item.get("response"), dict):
                            self.index[item["key"]] = offset
                    offset += len(line)
                    self._newline = not line.endswith(b"\n")
        self.loaded_end = path.stat().st_size if path.is_file() else 0  # records below this offset are old
        self._append = None
        self._read = None

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def is_loaded(self, key: str) -> bool:
        """Whether the answer was recorded by an earlier run (not by this one)."""
        return self.index.get(key, self.loaded_end) < self.loaded_end

    def get(self, key: str) -> dict:
        if self._append is not None:
            self._append.flush()
        if self._read is None:
            self._read = open(self.path, "rb")  # noqa: SIM115 - held for the record's lifetime
        self._read.seek(self.index[key])
        item = json.loads(self._read.readline())
        return unpack(item["answer"]) if "answer" in item else replay_view(item["response"])  # older: whole

    def put(self, key: str, packed: list[dict]) -> None:
        """Append one answer (`pack`ed)."""
        if self._append is None:
            self._append = open(self.path, "ab")  # noqa: SIM115 - held for the record's lifetime
        line = ("\n" if self._newline else "") + json.dumps({"answer": packed, "key": key}, sort_keys=True) + "\n"
        data = line.encode("utf-8")
        start = self._append.seek(0, os.SEEK_END)
        self._append.write(data)
        self._append.flush()  # a kill loses at most the line being written
        self.index[key] = start + (1 if self._newline else 0)
        self._newline = False

    def close(self) -> None:
        for fh in (self._append, self._read):
            if fh is not None:
                fh.close()
        self._append = self._read = None


class Endpoint:
    """Chat completions from one server: concurrent, retried, recorded."""

    def __init__(self, cfg: EndpointConfig, role: str, record_dir: Path | None = None):
        self.cfg, self.role = cfg, role
        self.model = check_endpoint(cfg, role, timeout=min(cfg.timeout, 30.0))
        self.name = f"{self.model} @ {cfg.url}"
        self.client = _client(cfg, role)
        self._lock = threading.Lock()
        self.record = Path(record_dir) / RECORD_FILE if record_dir is not None else None
        # answers by request key: the file's index, or (nothing recorded to disk) a dict in memory
        self.recorded: ResponseRecord | dict[str, dict] = ResponseRecord(self.record) if self.record else {}
        self.reused = 0
        self._pool: ThreadPoolExecutor | None = None

    def chat(self, requests: list[dict]) -> list[dict]:
        """One response dict (the `replay_view` of an OpenAI chat completion) per request body, in order."""
        if not requests:
            return []
        if self._pool is None:  # one pool for the endpoint's lifetime (the stage), not one per batch
            self._pool = ThreadPoolExecutor(self.cfg.max_concurrency, thread_name_prefix="endpoint")
        return list(self._pool.map(self._one, requests))

    def close(self) -> None:
        """Stop the pool's threads and close the record (the stage is over)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if isinstance(self.recorded, ResponseRecord):
            self.recorded.close()

    def _lookup(self, key: str) -> dict | None:
        if key not in self.recorded:
            return None
        if isinstance(self.recorded, ResponseRecord):
            self.reused += self.recorded.is_loaded(key)
            return self.recorded.get(key)
        return self.recorded[key]

    def _one(self, body: dict) -> dict:
        import openai

        body = {"model": self.model, **body}
        key = hashlib.sha256(json.dumps([body, self.cfg.extra_body], sort_keys=True).encode()).hexdigest()
        with self._lock:
            found = self._lookup(key)
        if found is not None:
            return found
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
        packed = pack(resp.model_dump(mode="json", exclude_none=True))
        out = unpack(packed)  # what a replay returns: a fresh answer and its replay are the same input to the step
        with self._lock:
            if isinstance(self.recorded, ResponseRecord):
                self.recorded.put(key, packed)
            else:
                self.recorded[key] = out
        return out
