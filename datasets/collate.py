"""Dataset items → batch (DESIGN.md): tensors stacked, `bad` records concatenated."""
from __future__ import annotations

from torch.utils.data import default_collate


def collate(items: list[dict]) -> dict:
    """Stack every tensor field over the batch (clip → (B, 3, T, S, S) uint8, target (B,),
    audio (B, 512), audio_weight (B,), video_index (B,)) and concatenate the `bad` lists,
    so the training loop can count replaced samples."""
    # default_collate stacks straight into shared memory inside a worker, saving the copy
    # that sending the batch to the main process would otherwise make.
    batch = {key: default_collate([item[key] for item in items])
             for key in items[0] if key != "bad"}
    batch["bad"] = [record for item in items for record in item.get("bad", [])]
    return batch
