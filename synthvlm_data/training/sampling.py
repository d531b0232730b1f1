"""LLaVA's `group_by_modality_length` sampler for stage 2 (scripts/v1_5/finetune.sh).

LLaVA-665K mixes image conversations with text-only ones (ShareGPT). LLaVA's trainer orders each
epoch so that every optimizer step's batch holds records of one modality only, with similar lengths
inside it, and the step order shuffled; only the one leftover batch mixes. transformers' Trainer
groups by length only (`train_sampling_strategy="group_by_length"`), not by modality, so this is a
port of LLaVA's sampler (llava/train/llava_trainer.py: `get_modality_length_grouped_indices`,
Apache-2.0) behind a small `SFTTrainer` subclass. One change: LLaVA shuffles the two modalities with
the global torch RNG; here one generator, seeded with the run's seed + the epoch (`set_epoch`, which
the Trainer's data loader calls), drives every shuffle, so each epoch's order is reproducible and a
run resumed from a checkpoint sees the order an uninterrupted one does.

Lengths are LLaVA's `modality_lengths`: whitespace-separated words of all turns, the `<image>`
placeholder LLaVA keeps in the first turn counted as one word per image (here the image is a
column, not text), positive for records with an image, negative without. They are computed with
Arrow over the `messages`/`images` columns, without decoding an image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def split_to_even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Split a megabatch into `num_chunks` per-device batches of roughly equal total length."""
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator | None = None) -> list[int]:
    indices = torch.randperm(len(lengths), generator=generator)
    size = world_size * batch_size
    megabatches = [indices[i:i + size].tolist() for i in range(0, len(lengths), size)]
    megabatches = [sorted(m, key=lambda i: lengths[i], reverse=True) for m in megabatches]
    return [i for m in megabatches for batch in split_to_even_chunks(m, lengths, world_size) for i in batch]


def modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                    generator: torch.Generator | None = None) -> list[int]:
    """An epoch's order: megabatches (one optimizer step over all devices) of one modality each,
    shuffled; the two modalities' leftovers form one last mixed megabatch."""
    if any(length == 0 for length in lengths):
        raise ValueError("modality lengths must be non-zero (positive: with image, negative: text-only)")
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        # as LLaVA: the signed lengths (text-only records sort shortest first)
        return length_grouped_indices(list(lengths), batch_size, world_size, generator)
    mm_indices, mm_lengths = zip(*[(i, n) for i, n in enumerate(lengths) if n > 0], strict=True)
    lang_indices, lang_lengths = zip(*[(i, -n) for i, n in enumerate(lengths) if n < 0], strict=True)
    mm_order = [mm_indices[i] for i in length_grouped_indices(mm_lengths, batch_size, world_size, generator)]
    lang_order = [lang_indices[i] for i in length_grouped_indices(lang_lengths, batch_size, world_size, generator)]
    size = world_size * batch_size
    mm_mega = [mm_order[i:i + size] for i in range(0, len(mm_order), size)]
    lang_mega = [lang_order[i:i + size] for i in range(0, len(lang_order), size)]
    leftover = mm_mega[-1] + lang_mega[-1]
    megabatches = mm_mega[:-1] + lang_mega[:-1]
    megabatches = [megabatches[i] for i in torch.randperm(len(megabatches), generator=generator)]
    if leftover:
        megabatches.append(sorted(leftover))
    return [i for m in megabatches for i in m]


class ModalityLengthGroupedSampler(torch.utils.data.Sampler):
    """An epoch's order from `seed + epoch`. The Trainer's data loader calls `set_epoch` before each
    epoch; without it, each iteration is the next epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.epoch = 0
        self._epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._epoch_set = True

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, generator)
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        return iter(order)


def modality_lengths(ds) -> list[int]:
    """LLaVA's `modality_lengths` of a stage-2 {messages, images} dataset, read as Arrow."""
    import numpy as np
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in ds.select_columns(["messages", "images"]).with_format("arrow").iter(batch_size=65536):
        messages = batch.column("messages").combine_chunks()
        contents = pc.list_flatten(messages).field("content")
        words = pc.fill_null(pc.list_value_length(pc.utf8_split_whitespace(contents)), 0).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(messages).to_numpy(zero_copy_only=False)
        per_row = np.bincount(parents, weights=words, minlength=len(messages)).astype(np.int64)
        n_images = pc.fill_null(pc.list_value_length(batch.column("images").combine_chunks()), 0)
        n_images = n_images.to_numpy(zero_copy_only=False).astype(np.int64)
        per_row = np.maximum(per_row + n_images, 1)  # each image: LLaVA's `<image>` word
        out.extend(np.where(n_images > 0, per_row, -per_row).tolist())
    return out


def modality_grouped_trainer(base: type) -> type:
    """`base` (TRL's SFTTrainer) whose training order is LLaVA's modality-grouped one."""

    class ModalityGroupedSFTTrainer(base):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if dataset is None:
                return super()._get_train_sampler(train_dataset)
            # LLaVA: per-device batch, world = processes x accumulation (one optimizer step per megabatch)
            return ModalityLengthGroupedSampler(modality_lengths(dataset), self.args.train_batch_size,
                                                self.args.world_size * self.args.gradient_accumulation_steps,
                                                self.args.seed)

    return ModalityGroupedSFTTrainer
