"""The demo's image teacher: its concepts are distinct, its image set is separate from the
student's videos, its trainer is deterministic and takes the SGD steps it documents, its file is
a resnet18 state dict."""
import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from demo import data as demo_data, image_teacher, textures

MICRO = image_teacher.TeacherSettings(images_per_concept=4, held_out_per_concept=1, epochs=1,
                                      batch_size=32, learning_rate=0.05, seed=5)   # 2 steps


def naive_variants(tile: np.ndarray) -> list[np.ndarray]:
    """Shifts × horizontal flip × complement, by explicit index arithmetic."""
    n = tile.shape[0]
    out = []
    for flip in (False, True):
        for complement in (False, True):
            for dy in range(n):
                for dx in range(n):
                    v = np.array([[tile[(i - dy) % n][(n - 1 - (j - dx) % n) if flip else (j - dx) % n]
                                   for j in range(n)] for i in range(n)])
                    out.append(1 - v if complement else v)
    return out


def test_concepts_are_far_apart_under_phase_flip_and_colour_swap():
    tiles = textures.concept_tiles()
    assert tiles.shape == (textures.N_CONCEPTS, textures.TILE, textures.TILE)
    for i in range(len(tiles)):
        for j in range(i):
            nearest = min(int((v != tiles[i]).sum()) for v in naive_variants(tiles[j]))
            assert nearest >= textures.MIN_DISTANCE, (i, j)


def test_scene_has_the_video_frame_shape():   # smoke test
    rng = np.random.default_rng(0)
    frames = textures.render_scene(3, rng, 2)
    assert frames.shape == (2, textures.HEIGHT, textures.WIDTH, 3) and frames.dtype == np.uint8


def test_image_set_covers_every_concept_and_is_separate_from_the_videos():
    images, labels = image_teacher.image_set(3, seed=0, split=0)
    assert np.bincount(labels).tolist() == [3] * textures.N_CONCEPTS
    assert set(textures.STUDENT_CONCEPTS) < set(labels.tolist())
    held_out, _ = image_teacher.image_set(3, seed=0, split=1)
    video_rng = np.random.default_rng([0, demo_data.VIDEO_STREAM])      # the videos' stream
    videos = [demo_data.render_video(label, video_rng) for label in range(len(demo_data.CLASSES))]
    frames = {f.tobytes() for v in videos for f in v}
    assert not frames & {i.tobytes() for i in images}
    assert not {i.tobytes() for i in held_out} & {i.tobytes() for i in images}


def test_trainer_is_deterministic():
    first, accuracy = image_teacher.train_teacher(MICRO)
    second, again = image_teacher.train_teacher(MICRO)
    assert accuracy == again
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]), name


def test_trainer_takes_the_documented_sgd_steps():
    """MICRO's two steps written out: the trainer's own data and augmentation draws (global
    seed, then the generator's order and crops), the update rule by hand. SGD: d = g + 1e-4 p,
    buffer b = d at the first step and 0.9 b + d after, p ← p − lr_t b; cosine rate lr_t =
    lr (1 + cos(π t / T)) / 2 over T = 2 steps. Two steps of a fresh network amplify no
    rounding, so the bounds hold on any CPU and thread count (how well a longer training
    does is for benchmarks/demo_teacher_probe.py: its accuracy moves with rounding as with
    the seed)."""
    trained, _ = image_teacher.train_teacher(MICRO)
    torch.manual_seed(MICRO.seed)
    generator = torch.Generator().manual_seed(MICRO.seed)
    images, labels = image_teacher.image_set(MICRO.images_per_concept, MICRO.seed, split=0)
    x, y = image_teacher.to_batch(images), torch.from_numpy(labels)
    network = torchvision.models.resnet18(num_classes=textures.N_CONCEPTS).train()
    initial = {name: p.detach().clone() for name, p in network.named_parameters()}
    order = torch.randperm(len(y), generator=generator).split(MICRO.batch_size)
    assert len(order) == 2
    buffers = {}
    for t, batch in enumerate(order):
        clips = image_teacher.augment(x[batch], generator)
        loss = F.cross_entropy(network(clips), y[batch])
        gradients = torch.autograd.grad(loss, list(network.parameters()))
        rate = MICRO.learning_rate * (1 + math.cos(math.pi * t / len(order))) / 2
        with torch.no_grad():
            for (name, p), g in zip(network.named_parameters(), gradients, strict=True):
                d = g + 1e-4 * p
                buffers[name] = d if t == 0 else 0.9 * buffers[name] + d
                p -= rate * buffers[name]
        if t == 0:
            # The step lowers the loss of the batch it was taken on (2.88 → 2.43 here).
            with torch.no_grad():
                after = F.cross_entropy(copy.deepcopy(network)(clips), y[batch])
            assert after < loss.detach() - 0.2, (float(loss), float(after))
    assert not trained.training
    got = dict(trained.named_parameters())
    for name, p in network.named_parameters():
        want, update = p.detach(), p.detach() - initial[name]
        assert (got[name].detach() - want).norm() <= 1e-3 * update.norm(), name
    for name, buffer in network.named_buffers():   # BatchNorm statistics of the same forwards
        torch.testing.assert_close(dict(trained.named_buffers())[name], buffer, rtol=1e-4, atol=1e-5)


def test_weights_file_is_a_strict_resnet18_state_dict_and_is_reused(tmp_path):
    path = image_teacher.demo_teacher_weights(tmp_path, MICRO)
    state = torch.load(path, weights_only=True)
    torchvision.models.resnet18(num_classes=textures.N_CONCEPTS).load_state_dict(state, strict=True)
    assert "fc.weight" in state
    stamp = path.stat().st_mtime_ns
    assert image_teacher.demo_teacher_weights(tmp_path, MICRO) == path
    assert path.stat().st_mtime_ns == stamp
    record = (tmp_path / image_teacher.RECORD_FILE).read_text()
    assert '"held_out_top1"' in record


def test_student_concepts_pair_up_by_colour():
    pairs = [c % len(textures.PALETTE) for c in textures.STUDENT_CONCEPTS]
    assert sorted(pairs) == [0, 0, 1, 1, 2, 2]
