"""LLaVA's modality-grouped sampler (stage 2), against LLaVA's own functions.

`llava_*` below are llava/train/llava_trainer.py (haotian-liu/LLaVA c121f04), ported line by line:
`get_length_grouped_indices`, `split_to_even_chunks`, and `LazySupervisedDataset.modality_lengths`
(llava/train/train.py).
"""

from __future__ import annotations

import random

import pytest
import torch

from synthvlm_data.training.sampling import (
    ModalityLengthGroupedSampler,
    length_grouped_indices,
    modality_length_grouped_indices,
    modality_lengths,
)


def llava_split_to_even_chunks(indices, lengths, num_chunks):
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    num_indices_per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    chunks_lengths = [0 for _ in range(num_chunks)]
    for index in indices:
        shortest_chunk = chunks_lengths.index(min(chunks_lengths))
        chunks[shortest_chunk].append(index)
        chunks_lengths[shortest_chunk] += lengths[index]
        if len(chunks[shortest_chunk]) == num_indices_per_chunk:
            chunks_lengths[shortest_chunk] = float("inf")
    return chunks


def llava_get_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    indices = torch.randperm(len(lengths), generator=generator)
    megabatch_size = world_size * batch_size
    megabatches = [indices[i: i + megabatch_size].tolist() for i in range(0, len(lengths), megabatch_size)]
    megabatches = [sorted(megabatch, key=lambda i: lengths[i], reverse=True) for megabatch in megabatches]
    megabatches = [llava_split_to_even_chunks(megabatch, lengths, world_size) for megabatch in megabatches]
    return [i for megabatch in megabatches for batch in megabatch for i in batch]


def llava_modality_lengths(records):
    out = []
    for sample in records:
        cur_len = sum(len(conv["value"].split()) for conv in sample["conversations"])
        cur_len = cur_len if "image" in sample else -cur_len
        out.append(cur_len)
    return out


def _lengths(n_mm: int, n_lang: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    out = [rng.randint(5, 400) for _ in range(n_mm)] + [-rng.randint(5, 400) for _ in range(n_lang)]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("signs", [1, -1], ids=["images-only", "text-only"])
@pytest.mark.parametrize("world,batch", [(1, 4), (8, 2), (3, 5)])
def test_one_modality_is_llavas_length_grouping(signs, world, batch):
    """One modality: LLaVA's `get_length_grouped_indices` on the signed lengths, same generator."""
    lengths = [signs * abs(n) for n in _lengths(97, 0)]
    ours = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(3))
    theirs = llava_get_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(3))
    assert ours == theirs
    assert length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(3)) == theirs


@pytest.mark.parametrize("world,batch", [(1, 4), (8, 2), (2, 3)])
def test_mixed_modalities_give_single_modality_steps(world, batch):
    lengths = _lengths(130, 61, seed=world)
    order = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    size = world * batch
    steps = [order[i:i + size] for i in range(0, len(order), size)]
    full = len(steps) - 1  # the last one is the two leftovers, mixed (as LLaVA)
    for step in steps[:full]:
        assert len({lengths[i] > 0 for i in step}) == 1
        for device in range(world):  # each device's batch: LLaVA sorts the megabatch longest first
            chunk = [abs(lengths[i]) for i in step[device * batch:(device + 1) * batch]]
            assert len(chunk) == batch
    assert steps[-1] == sorted(steps[-1])
    kinds = [lengths[s[0]] > 0 for s in steps[:full]]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)  # the steps are shuffled


def test_epoch_orders_are_reproducible_and_differ():
    lengths = _lengths(40, 25)
    a = ModalityLengthGroupedSampler(lengths, 2, 2, seed=42)
    b = ModalityLengthGroupedSampler(lengths, 2, 2, seed=42)
    first, second = list(a), list(a)  # without set_epoch: each iteration is the next epoch
    assert first != second
    b.set_epoch(1)  # a resumed run starting at epoch 1 sees epoch 1's order
    assert list(b) == second
    b.set_epoch(0)
    assert list(b) == first
    assert list(ModalityLengthGroupedSampler(lengths, 2, 2, seed=43)) != first


def test_modality_lengths_are_llavas():
    """Our rows keep the image in a column: LLaVA's `<image>` word is counted per image."""
    from datasets import Dataset
    from PIL import Image

    llava = [
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is in the picture?"},
                                             {"from": "gpt", "value": "A cat on a mat."}]},
        {"conversations": [{"from": "human", "value": "Write a poem about the sea."},
                           {"from": "gpt", "value": "Waves   come\nand go."}]},
        {"image": "b.png", "conversations": [{"from": "human", "value": "Describe.\n<image>"},
                                             {"from": "gpt", "value": "Red."}]},
    ]
    img = Image.new("RGB", (4, 4))
    ours = Dataset.from_list([
        {"images": [img], "messages": [{"role": "user", "content": "What is in the picture?"},
                                       {"role": "assistant", "content": "A cat on a mat."}]},
        {"images": [], "messages": [{"role": "user", "content": "Write a poem about the sea."},
                                    {"role": "assistant", "content": "Waves   come\nand go."}]},
        {"images": [img], "messages": [{"role": "user", "content": "Describe."},
                                       {"role": "assistant", "content": "Red."}]},
    ])
    assert modality_lengths(ours) == llava_modality_lengths(llava) == [11, -10, 3]
