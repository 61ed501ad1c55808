"""Extract one PANNs audio embedding per WAV file (SPEC §8).

Input `<wav_path>/<label>/<id>.wav` (or `<wav_path>/<id>.wav`), as written by
`generate_video_hdf5.py --audio_dst_path` (32 kHz PCM). Output
`<dst_path>/<label>/<id>.npy`, float32 of shape (D,): the embedding of the whole file (or
of its first `--max_seconds`) by the PANNs network `--model` (default `Cnn14_emb512`,
D = 512, the network of the released UCF features; `Cnn14`, `Cnn14_16k` and `Cnn14_8k`
give D = 2048, `Cnn14_emb128` 128, `Cnn14_emb32` 32, `Cnn10` 512).

- The WAV files must be at the model's sample rate (16 kHz for `Cnn14_16k`, 8 kHz for
  `Cnn14_8k`, 32 kHz for the others). Other rates are refused rather than resampled,
  since a naive resampler would change the features: convert with e.g.
  `ffmpeg -i in.wav -ac 1 -ar 16000 out.wav`. Channels are averaged to mono (what PANNs'
  `librosa.load(mono=True)` does).
- The checkpoint is read with torch's weights-only loader: a file that would need to run
  code to load is refused, never executed.
- The embedding depends on the clip length (mean and max over time), so files are never
  zero-padded: a batch holds only files of exactly the same number of samples, and a
  file whose length no other file shares runs alone.
- Files shorter than the model's minimum (0.31 s for the Cnn14 family, 0.15 s for Cnn10)
  get no feature; the dataset then treats the video as having no audio (SPEC §1). They
  are listed at the end.
- Existing outputs are skipped and outputs are written to a temporary file and renamed,
  so an interrupted run can simply be restarted. All features of a training run must
  have one size, so existing outputs of another shape than (D,) float32 are an error.
"""
import argparse
import os
import sys
import wave
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as `python util_scripts/<name>.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.progress import Progress
from errors import ArgumentParser, UserError
from models.cnn14 import (DEFAULT_MODEL, PANNS_MODELS, PannsCnn, PannsSpec, load_official_state_dict,
                          read_official_state_dict)

# PCM sample width in bytes → (numpy dtype, offset, scale) mapping stored integers to
# [-1, 1), the convention of soundfile/librosa.
_PCM = {1: ("u1", 128, 2.0 ** 7), 2: ("<i2", 0, 2.0 ** 15), 4: ("<i4", 0, 2.0 ** 31)}


class WavError(UserError):
    """A WAV file this tool cannot use as it is."""


@dataclass(frozen=True)
class WavInfo:
    """One input file: `relative` path under --wav_path and the samples to use."""
    relative: Path
    num_samples: int


def list_wavs(wav_path: Path) -> list[Path]:
    """Sorted `.wav` paths relative to `wav_path`: `<label>/<id>.wav` and `<id>.wav`."""
    found = [*wav_path.glob("*.wav"), *wav_path.glob("*/*.wav")]
    return sorted(p.relative_to(wav_path) for p in found if p.is_file())


def wav_num_samples(path: Path, spec: PannsSpec) -> int:
    """Samples per channel in the PCM file `path` at `spec.sample_rate`; WavError if it is
    unusable."""
    try:
        with wave.open(str(path), "rb") as f:
            rate, width, n = f.getframerate(), f.getsampwidth(), f.getnframes()
    except (wave.Error, EOFError, OSError) as e:
        raise WavError(f"{path}: not a readable PCM WAV file ({e})") from None
    if rate != spec.sample_rate:
        raise WavError(f"{path}: {rate} Hz, {spec.name} needs {spec.sample_rate} Hz "
                       f"(convert with `ffmpeg -i IN -ac 1 -ar {spec.sample_rate} OUT.wav`)")
    if width not in _PCM:
        raise WavError(f"{path}: {8 * width}-bit samples are not supported "
                       f"(use 16-bit PCM: `ffmpeg -i IN -c:a pcm_s16le OUT.wav`)")
    return n


def read_wav(path: Path, num_samples: int) -> np.ndarray:
    """The first `num_samples` samples of `path` as float32 (num_samples,) in [-1, 1),
    channels averaged."""
    with wave.open(str(path), "rb") as f:
        channels, width = f.getnchannels(), f.getsampwidth()
        data = f.readframes(num_samples)
    dtype, offset, scale = _PCM[width]
    samples = np.frombuffer(data, dtype=dtype).astype(np.float64)
    if samples.size != num_samples * channels:
        raise WavError(f"{path}: truncated, the header promises {num_samples} samples but "
                       f"the data holds {samples.size // channels}")
    mono = ((samples - offset) / scale).reshape(num_samples, channels).mean(axis=1)
    return mono.astype(np.float32)


def plan_batches(files: list[WavInfo], batch_size: int) -> list[list[WavInfo]]:
    """Batches of at most `batch_size` files that all have the same `num_samples`."""
    by_length: dict[int, list[WavInfo]] = defaultdict(list)
    for info in files:
        by_length[info.num_samples].append(info)
    return [group[i:i + batch_size] for _, group in sorted(by_length.items())
            for i in range(0, len(group), batch_size)]


def feature_problem(path: Path, dim: int) -> str | None:
    """Why the existing output `path` is not a (dim,) float32 feature, or None if it is."""
    try:
        array = np.load(path, mmap_mode="r")
    except Exception as e:  # any damage: np.load fails in many ways
        reason = " ".join([type(e).__name__ + ":"] + str(e).strip().splitlines()[:1])
        return f"{path} is not a readable .npy file ({reason})"
    if array.shape != (dim,) or array.dtype != np.float32:
        return f"{path} has shape {array.shape} {array.dtype}"
    return None


def _save_atomic(path: Path, feature: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as f:
        np.save(f, feature)
    os.replace(temporary, path)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wav_path", type=Path, required=True,
                        help="folder of WAV files at the model's sample rate (32 kHz for most): "
                             "<wav_path>/<label>/<id>.wav")
    parser.add_argument("--dst_path", type=Path, required=True,
                        help="output folder: <dst_path>/<label>/<id>.npy")
    parser.add_argument("--model", choices=tuple(PANNS_MODELS), default=DEFAULT_MODEL,
                        help="PANNs network (default %(default)s, the released UCF features)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the model's official PANNs checkpoint (zenodo record 3987831), "
                             "e.g. Cnn14_emb512_mAP=0.420.pth")
    parser.add_argument("--batch_size", type=int, default=16,
                        help="files per forward pass (only equal-length files are batched)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max_seconds", type=float, default=None,
                        help="use only the first seconds of each file (default: all of it)")
    return parser.parse_args(argv)


def _argument_error(args: argparse.Namespace) -> str | None:
    if not args.wav_path.is_dir():
        return (f"--wav_path {args.wav_path} is not a folder (make the WAV files with "
                f"util_scripts/generate_video_hdf5.py --audio_dst_path)")
    if args.batch_size < 1:
        return f"--batch_size must be positive, got {args.batch_size}"
    if args.max_seconds is not None and args.max_seconds <= 0:
        return f"--max_seconds must be positive, got {args.max_seconds}"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda but no CUDA device is available (use --device cpu)"
    return None


def _pending_files(args: argparse.Namespace,
                   spec: PannsSpec) -> tuple[list[WavInfo], int]:
    """(files still to extract with their sample counts, number already done).

    UserError if an existing output is not a feature of `spec`'s size.
    """
    limit = (None if args.max_seconds is None
             else int(round(args.max_seconds * spec.sample_rate)))
    pending, done = [], 0
    for relative in list_wavs(args.wav_path):
        output = (args.dst_path / relative).with_suffix(".npy")
        if output.exists():
            problem = feature_problem(output, spec.embedding_dim)
            if problem is not None:
                raise UserError(f"--dst_path {args.dst_path} already holds other features: "
                                f"{problem}, but --model {spec.name} writes "
                                f"({spec.embedding_dim},) float32 (a run's audio features "
                                f"must all have one size: use another --dst_path)")
            done += 1
            continue
        n = wav_num_samples(args.wav_path / relative, spec)
        pending.append(WavInfo(relative, n if limit is None else min(n, limit)))
    return pending, done


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit code (2 on a user error)."""
    args = _parse_args(argv)
    try:
        written, done, too_short = _run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{written} features written, {done} already there, {len(too_short)} files too "
          f"short for {args.model} (no feature)", file=sys.stderr)
    for info in too_short:
        print(f"too short: {args.wav_path / info.relative}: {info.num_samples} samples",
              file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> tuple[int, int, list[WavInfo]]:
    """Check everything a user can get wrong, then extract.

    Returns (features written, outputs already there, files too short for the model).
    """
    problem = _argument_error(args)
    if problem is not None:
        raise UserError(problem)
    spec = PANNS_MODELS[args.model]
    pending, done = _pending_files(args, spec)
    if not pending and not done:
        raise UserError(f"no .wav files under {args.wav_path} (<label>/<id>.wav expected)")
    if not pending:
        return 0, done, []
    state = read_official_state_dict(args.checkpoint, spec)
    model = PannsCnn(spec.name)
    load_official_state_dict(model, state, args.checkpoint)
    model.to(args.device).eval()
    too_short = [f for f in pending if f.num_samples < model.min_samples]
    runnable = [f for f in pending if f.num_samples >= model.min_samples]
    return _extract(model, runnable, args), done, too_short


def _extract(model: PannsCnn, files: list[WavInfo], args: argparse.Namespace) -> int:
    """Run `model` over `files` batch by batch and save the embeddings; returns the count."""
    progress = Progress(model.spec.name, total=len(files), unit="file")
    with torch.inference_mode():
        for batch in plan_batches(files, args.batch_size):
            waves = np.stack([read_wav(args.wav_path / f.relative, f.num_samples)
                              for f in batch])
            embedding = model(torch.from_numpy(waves).to(args.device))["embedding"]
            for info, feature in zip(batch, embedding.cpu().numpy()):
                _save_atomic((args.dst_path / info.relative).with_suffix(".npy"), feature)
            progress.update(len(batch))
    progress.close()
    return len(files)


if __name__ == "__main__":
    sys.exit(main())
