"""Benchmark: `llm_responses.jsonl` records, whole responses (before) vs packed answers (now).

    python bench/bench_endpoint_records.py [--n 100000]

Writes --n judge answers as a vLLM server returns them for the shipped judge request (max_tokens 1,
logprobs, top_logprobs 20; `model_dump(exclude_none=True)`: ids, usage, token byte arrays) in both
record formats, then measures bytes per record and what a resume costs: the old loader (read the
file whole, keep every response in a dict) against `ResponseRecord` (stream the file, keep an
index of byte offsets). Peak memory is tracemalloc's peak of Python allocations during a load
(a second, untraced load gives the time).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from synthvlm_data.models.endpoint import ResponseRecord, pack, replay_view

ANSWERS = ["Yes", "No", " Yes", " No", "yes", "no", "The", "YES", "NO", "I", "Based", "This", "A", "Caption", "**",
           "Answer", "It", "\n", "Sure", "In", "There"]


def vllm_judge_response(i: int, top_k: int = 20, seed: int = 0) -> dict:
    """A chat completion as vLLM returns it for a one-token judge answer with top_logprobs."""
    rng = random.Random(seed * 1_000_003 + i)
    alts = rng.sample(ANSWERS, top_k)
    lps = sorted((-abs(rng.gauss(0, 4)) for _ in alts), reverse=True)
    tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in zip(alts, lps)]
    return {
        "id": f"chatcmpl-{hashlib.md5(str(i).encode()).hexdigest()}", "object": "chat.completion",
        "created": 1733550000 + i, "model": "meta-llama/Meta-Llama-3-70B-Instruct",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": alts[0], "tool_calls": []},
                     "logprobs": {"content": [{**tops[0], "top_logprobs": tops}]}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 90 + i % 40, "total_tokens": 91 + i % 40, "completion_tokens": 1},
    }


def key_of(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def write(path: Path, n: int, packed: bool) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            resp = vllm_judge_response(i)
            item = {"answer": pack(resp)} if packed else {"response": resp}
            fh.write(json.dumps({**item, "key": key_of(i)}, sort_keys=True) + "\n")


def old_load(path: Path) -> dict:
    """The loader before: the whole file as text, every response kept in memory."""
    recorded = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        recorded[item["key"]] = item["response"]
    return recorded


def measure(load, path: Path) -> tuple[float, float, object]:
    t0 = time.perf_counter()
    out = load(path)
    seconds = time.perf_counter() - t0
    del out
    tracemalloc.start()
    out = load(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Path(tmp) / "old.jsonl", Path(tmp) / "new.jsonl"
        write(old, n, packed=False)
        write(new, n, packed=True)
        s_old, m_old, loaded = measure(old_load, old)
        del loaded
        s_new, m_new, record = measure(ResponseRecord, new)
        probe = random.Random(1).sample(range(n), min(n, 1000))
        t0 = time.perf_counter()
        assert all(record.get(key_of(i)) == replay_view(vllm_judge_response(i)) for i in probe)
        per_get = (time.perf_counter() - t0) / len(probe) * 1e6
        record.close()
        print(f"{n} judge records (top_logprobs 20)")
        print(f"bytes/record: whole response {old.stat().st_size / n:.0f}, packed answer {new.stat().st_size / n:.0f}")
        print(f"file: {old.stat().st_size / 2**20:.1f} MiB -> {new.stat().st_size / 2**20:.1f} MiB")
        print(f"resume load: read whole + dict {s_old:.2f} s, peak {m_old:.0f} MiB; "
              f"streamed index {s_new:.2f} s, peak {m_new:.0f} MiB; a replayed answer read back in {per_get:.0f} us")


if __name__ == "__main__":
    main()
