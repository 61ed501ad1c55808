"""Dataset items → batch (DESIGN.md): tensors stacked, `bad` records concatenated."""
from __future__ import annotations

from torch.utils.data import default_collate


def collate(items: list[dict]) -> dict:
    """Stack every tensor field over the batch (clip → (B, 3, T, S, S) uint8 in
    channels_last_3d memory, target (B,), audio (B, 512), audio_weight (B,), video_index
    (B,)) and concatenate the `bad` lists, so the training loop can count replaced samples.
    """
    # default_collate stacks straight into shared memory inside a worker, saving the copy
    # that sending the batch to the main process would otherwise make.
    batch = {key: default_collate([item[key] for item in items])
             for key in items[0] if key not in ("bad", "clip")}
    # Items hold their clip as a (3, T, S, S) view of (T, S, S, 3) memory, the resize
    # kernel's channels_last output. Stacking in that memory order is a plain copy (a
    # contiguous (B, 3, T, S, S) stack would transpose every clip, a fifth of a worker's
    # time), and the batch arrives in the layout the student runs in on the GPU.
    clips = default_collate([item["clip"].permute(1, 2, 3, 0) for item in items])
    batch["clip"] = clips.permute(0, 4, 1, 2, 3)
    batch["bad"] = [record for item in items for record in item.get("bad", [])]
    return batch
