"""The caption judge's answers kept on disk, so a killed caption stage resumes without asking again."""

from __future__ import annotations

import json
from pathlib import Path


class CachedJudge:
    """The judge with its answers kept on disk (one JSON line per caption), so a caption stage that
    is killed while judging resumes without asking the judge again about any caption it answered."""

    def __init__(self, judge, path: Path):
        self.judge, self.path = judge, Path(path)
        self.name, self.cfg = judge.name, judge.cfg
        self.cache: dict[str, float] = {}
        self.info: dict[str, dict] = {}  # an endpoint judge's per-answer facts (EndpointJudge.answer_info)
        self.served: set[str] = set()  # the captions asked about in this stage, answered now or from the file
        self._newline = False  # the last line was cut by a kill: start the next answer on a new line
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self._newline = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
                self.cache[rec["key"]] = rec["p_yes"]
                if "info" in rec:
                    self.info[rec["key"]] = rec["info"]

    @staticmethod
    def _key(caption: str) -> str:
        import hashlib

        return hashlib.sha256(caption.encode("utf-8")).hexdigest()

    def p_yes(self, captions: list[str]) -> list[float]:
        keys = [self._key(c) for c in captions]
        todo = list(dict.fromkeys(c for c, k in zip(captions, keys) if k not in self.cache))
        if todo:
            answers = self.judge.p_yes(todo)
            infos = getattr(self.judge, "answer_info", None) or [None] * len(todo)
            with open(self.path, "a", encoding="utf-8") as fh:
                if self._newline:
                    fh.write("\n")
                    self._newline = False
                for c, p, info in zip(todo, answers, infos):
                    key = self._key(c)
                    self.cache[key] = p
                    rec = {"key": key, "p_yes": p}
                    if info is not None:
                        self.info[key] = rec["info"] = info
                    fh.write(json.dumps(rec) + "\n")
        self.served.update(keys)
        return [self.cache[k] for k in keys]

    def decide(self, caption: str, p: float) -> bool:
        return self.judge.decide(caption, p)

    def report_extra(self) -> dict:
        infos = [self.info[k] for k in sorted(self.served) if k in self.info]
        if infos:  # an endpoint judge: counted over every caption judged in the stage, whichever run asked
            return self.judge.report_extra(infos)
        return self.judge.report_extra()
