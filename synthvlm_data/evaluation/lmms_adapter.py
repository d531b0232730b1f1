"""The lmms-eval model adapter for checkpoints `train/` writes (imports lmms_eval: the `[eval]` extra).

Simple protocol (`is_simple = True`): lmms-eval hands over the prompt text and a `doc_to_visual`;
the checkpoint's own processor applies its chat template with the images first, as in training.
"""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from synthvlm_data.evaluation.checkpoint import CheckpointModel


class SynthVLMLlava(lmms):
    is_simple = True

    def __init__(self, pretrained: str, device: str = "cpu", dtype: str = "float32", batch_size: int = 1,
                 max_new_tokens: int = 32, **kwargs) -> None:
        super().__init__()
        self.checkpoint = CheckpointModel(pretrained, dtype=dtype, device=device)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            images = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
            text = self.checkpoint.generate(images, context,
                                            max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))
            until = gen_kwargs.get("until") or []
            for stop in [until] if isinstance(until, str) else until:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
        return out

    def loglikelihood(self, requests: list[Instance]):
        raise NotImplementedError("synthvlm_llava scores generate_until tasks (the LLaVA-1.5 suite is all "
                                  "generate_until); multiple-choice loglikelihood is not implemented")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("synthvlm_llava: multi-round generation is not implemented")
