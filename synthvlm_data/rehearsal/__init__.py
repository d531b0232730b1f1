"""Rehearse the full-scale path at real size, without GPUs, weights or a download.

Every full-scale model that a shipped recipe or training config names is built at its real size on
the meta device (shapes, no storage) from an architecture config shipped in `configs/` (copied from
the model's Hub `config.json`) or from the library's own (open_clip's model configs). What can be
checked there is checked: parameter counts against the published ones, the LLaVA assembly through
`training.assembly` (image tokens, projector), the chat template and label masks of a real-shaped
sample through TRL's collator, and a memory plan per GPU (`memory.py`).

- `catalogue.py`: which models each Hub id / open_clip tag stands for, with their published counts.
- `meta.py`: build one component on the meta device.
- `llava.py`: the LLaVA checks of a training config.
- `memory.py`: the memory plan formulas (training under ZeRO, SDXL generation).
- `run.py`: collect the targets, run the checks, print the tables (`synthvlm rehearse`).
"""
