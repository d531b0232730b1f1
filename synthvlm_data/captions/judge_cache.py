"""The caption judge's answers kept on disk, so a killed caption stage resumes without asking again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from synthvlm_data.captions.spill import DigestIndex


class CachedJudge:
    """The judge with its answers kept on disk (one JSON line per caption), so a caption stage that
    is killed while judging resumes without asking the judge again about any caption it answered.

    The answers are looked up in a `DigestIndex`: in memory, or with `index_dir` in SQLite files
    there (the build's caption stage), so memory does not grow with the number of captions judged.
    The report counts each caption asked about in this stage once, whichever run answered it."""

    def __init__(self, judge, path: Path, index_dir: Path | None = None):
        self.judge, self.path = judge, Path(path)
        self.name, self.cfg = judge.name, judge.cfg
        d = Path(index_dir) if index_dir is not None else None
        self.answers = DigestIndex(d / "judge-answers.sqlite" if d else None)  # key -> [p_yes, info]
        self.served = DigestIndex(d / "judge-served.sqlite" if d else None)  # the captions asked about in this stage
        self._from: set[str] = set()  # an endpoint judge's answer facts (EndpointJudge.answer_info), over `served`
        self._odd = 0
        self._newline = False  # the last line was cut by a kill: start the next answer on a new line
        if self.path.is_file():
            self.answers.put_many(self._read_log())

    def _read_log(self):
        """(key, [p_yes, info]) of each answer line, in order (a later line for a caption asked again
        after a kill gives the same answer; the first is kept)."""
        with open(self.path, encoding="utf-8") as fh:
            last = ""
            for line in fh:
                last = line
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                yield bytes.fromhex(rec["key"]), json.dumps([rec["p_yes"], rec.get("info")])
            self._newline = bool(last) and not last.endswith("\n")

    @staticmethod
    def _key(caption: str) -> bytes:
        return hashlib.sha256(caption.encode("utf-8")).digest()

    def p_yes(self, captions: list[str]) -> list[float]:
        keys = [self._key(c) for c in captions]
        self.answers.prefetch(keys)
        todo = list(dict.fromkeys(c for c, k in zip(captions, keys) if self.answers.get(k) is None))
        if todo:
            answers = self.judge.p_yes(todo)
            infos = getattr(self.judge, "answer_info", None) or [None] * len(todo)
            with open(self.path, "a", encoding="utf-8") as fh:
                if self._newline:
                    fh.write("\n")
                    self._newline = False
                for c, p, info in zip(todo, answers, infos):
                    key = self._key(c)
                    self.answers.put(key, json.dumps([p, info]))
                    rec = {"key": key.hex(), "p_yes": p}
                    if info is not None:
                        rec["info"] = info
                    fh.write(json.dumps(rec) + "\n")
        out = []
        self.served.prefetch(keys)
        for k in keys:
            p, info = json.loads(self.answers.get(k))
            if self.served.get(k) is None:
                self.served.put(k, "")
                if info is not None:
                    self._from.add(info["from"])
                    self._odd += bool(info["not_yes_no"])
            out.append(p)
        return out

    def decide(self, caption: str, p: float) -> bool:
        return self.judge.decide(caption, p)

    def report_extra(self) -> dict:
        if self._from:  # an endpoint judge: counted over every caption judged in the stage, whichever run asked
            return self.judge.report_extra({"from": sorted(self._from), "not_yes_no": self._odd})
        return self.judge.report_extra()

    def close(self) -> None:
        self.answers.close()
        self.served.close()
