"""Static batch shapes for captured or compiled forward passes: pad each batch up to the next bucket size."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import torch


def run_in_buckets(batch: torch.Tensor, batch_sizes: Sequence[int],
                   run_bucket: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Outputs for `batch`, computed by `run_bucket(size, images)` on buckets of `batch_sizes` (sorted).

    `run_bucket` gets at most `size` images and returns outputs for a full bucket; only the real rows are kept.
    Batches above the largest bucket run bucket by bucket.
    """
    largest = batch_sizes[-1]
    if batch.shape[0] > largest:
        return torch.cat([run_in_buckets(chunk, batch_sizes, run_bucket) for chunk in batch.split(largest)])
    count = batch.shape[0]
    size = batch_sizes[bisect.bisect_left(batch_sizes, count)]
    return run_bucket(size, batch)[:count]


def pad_to(batch: torch.Tensor, size: int) -> torch.Tensor:
    """`batch` with zero images appended up to `size` rows."""
    missing = size - batch.shape[0]
    if missing == 0:
        return batch
    return torch.cat([batch, batch.new_zeros((missing, *batch.shape[1:]))])
