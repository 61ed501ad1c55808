"""Video datasets (DESIGN.md `datasets/`): HDF5 clips, temporal/spatial transforms, audio."""
from .annotation import (TESTING, TRAINING, VALIDATION, Annotation, Sample, check_audio_classes,
                         check_n_classes, classes_without_audio_folder, load_annotation,
                         require_video_folder, resolve_samples)
from .audio import AUDIO_DIM
from .collate import collate
from .hdf5_clip import BadSampleError
from .loader import build_loader
from .samplers import OrderedDistributedSampler
from .transforms import KINETICS_MEAN, KINETICS_STD, normalization_stats, normalize_clip
from .video_dataset import VideoDataset

__all__ = [
    "AUDIO_DIM", "TESTING", "TRAINING", "VALIDATION", "Annotation", "BadSampleError", "KINETICS_MEAN", "KINETICS_STD",
    "OrderedDistributedSampler", "Sample", "VideoDataset", "build_loader", "check_audio_classes", "check_n_classes",
    "classes_without_audio_folder", "collate", "load_annotation", "normalization_stats", "normalize_clip",
    "require_video_folder", "resolve_samples",
]
