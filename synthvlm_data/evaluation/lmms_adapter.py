"""The lmms-eval model adapter for checkpoints `train/` writes (imports lmms_eval: the `[eval]` extra).

Simple protocol (`is_simple = True`): lmms-eval hands over the prompt text and a `doc_to_visual`;
the checkpoint's own processor applies its chat template with the images first, as in training.

Under `accelerate launch` (or torchrun) each rank loads the model on its own GPU and answers only
its share of the requests, as lmms-eval's `llava_hf` does: the adapter reports the launch's rank and
world size (`rank`, `world_size`), lmms-eval's evaluator splits every task's documents by them and
gathers the answers on rank 0, which alone computes and returns the metrics.
"""

from __future__ import annotations

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from synthvlm_data.evaluation.checkpoint import CheckpointModel, eval_placement


class SynthVLMLlava(lmms):
    is_simple = True

    def __init__(self, pretrained: str, device: str | None = None, dtype: str | None = None, batch_size: int = 1,
                 max_new_tokens: int = 32, **kwargs) -> None:
        super().__init__()
        import os

        from accelerate import Accelerator

        # The launch's ranks as lmms-eval's evaluator reads them (it splits documents by RANK and
        # WORLD_SIZE); the Accelerator joins their process group, which it gathers over: NCCL on
        # GPUs, gloo when the model runs on CPUs (accelerate needs `cpu=True` to form that group).
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._device, self.dtype = eval_placement(device, dtype, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                                                  num_processes=world_size)
        self.accelerator = Accelerator(cpu=self._device == "cpu" and world_size > 1)
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.checkpoint = CheckpointModel(pretrained, dtype=self.dtype, device=self._device)
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    @property
    def device(self) -> str:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

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
