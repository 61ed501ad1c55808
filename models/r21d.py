"""R(2+1)D student of SPEC §2, module for module the original CCL release's network.

The original derived it from irhum's R2Plus1D-PyTorch; the class and attribute names are
kept so its checkpoints load with `strict=True`. Beware the depth: the original's
`--model_depth 18` builds ONE block per stage (14,391,466 parameters with 51 classes),
not the standard R(2+1)D-18 of two blocks per stage. `r21d` keeps the original layout
(the paper's numbers come from it); `r21d_std` is the standard one.
"""
import math

from torch import Tensor, nn
from torch.nn.modules.utils import _triple

from errors import UserError

# model depth -> blocks per stage (conv2..conv5)
ORIGINAL_LAYOUTS = {18: (1, 1, 1, 1), 34: (3, 4, 6, 3)}
STANDARD_LAYOUTS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
FEATURE_DIM = 512


def intermediate_channels(kernel_size: tuple[int, int, int], in_channels: int,
                          out_channels: int) -> int:
    """M = floor(k_t·k²·N_in·N_out / (k²·N_in + k_t·N_out)) of SPEC §2: the factored conv
    then has about as many parameters as the full k_t×k×k conv it replaces."""
    k_t, k_h, k_w = kernel_size
    return math.floor(k_t * k_h * k_w * in_channels * out_channels
                      / (k_h * k_w * in_channels + k_t * out_channels))


class SpatioTemporalConv(nn.Module):
    """A k_t×k×k conv factored into spatial 1×k×k conv → BN → ReLU → temporal k_t×1×1 conv.

    kernel_size, stride, padding: int or (t, h, w). Input (B, N_in, T, H, W) →
    (B, N_out, T', H', W') with the usual conv arithmetic per axis.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple,
                 stride: int | tuple = 1, padding: int | tuple = 0, bias: bool = False):
        super().__init__()
        k, s, p = _triple(kernel_size), _triple(stride), _triple(padding)
        mid = intermediate_channels(k, in_channels, out_channels)
        self.spatial_conv = nn.Conv3d(in_channels, mid, (1, k[1], k[2]), stride=(1, s[1], s[2]),
                                      padding=(0, p[1], p[2]), bias=bias)
        self.bn = nn.BatchNorm3d(mid)
        self.relu = nn.ReLU()
        self.temporal_conv = nn.Conv3d(mid, out_channels, (k[0], 1, 1), stride=(s[0], 1, 1),
                                       padding=(p[0], 0, 0), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.temporal_conv(self.relu(self.bn(self.spatial_conv(x))))


class SpatioTemporalResBlock(nn.Module):
    """Residual block: conv-BN-ReLU-conv-BN, add shortcut, ReLU.

    With `downsample`, conv1 has stride 2 in time and space and the shortcut is a
    strided 1×1×1 factored conv + BN. (B, N_in, T, H, W) → (B, N_out, T/s, H/s, W/s).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 downsample: bool = False):
        super().__init__()
        self.downsample = downsample
        padding = kernel_size // 2
        stride = 2 if downsample else 1
        if downsample:
            self.downsampleconv = SpatioTemporalConv(in_channels, out_channels, 1, stride=2)
            self.downsamplebn = nn.BatchNorm3d(out_channels)
        self.conv1 = SpatioTemporalConv(in_channels, out_channels, kernel_size,
                                        stride=stride, padding=padding)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = SpatioTemporalConv(out_channels, out_channels, kernel_size, padding=padding)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.outrelu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = self.downsamplebn(self.downsampleconv(x)) if self.downsample else x
        return self.outrelu(shortcut + residual)


class SpatioTemporalResLayer(nn.Module):
    """One stage: `block1` (which may downsample) then `layer_size - 1` plain `blocks`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, layer_size: int,
                 block_type: type[nn.Module] = SpatioTemporalResBlock, downsample: bool = False):
        super().__init__()
        self.block1 = block_type(in_channels, out_channels, kernel_size, downsample)
        self.blocks = nn.ModuleList(block_type(out_channels, out_channels, kernel_size)
                                    for _ in range(layer_size - 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.block1(x)
        for block in self.blocks:
            x = block(x)
        return x


class R2Plus1DNet(nn.Module):
    """R(2+1)D student (SPEC §2): stem, four stages of 64/128/256/512 channels, global
    average pool, `linear` classifier.

    layer_sizes: blocks per stage. The original release's "depth 18" is (1, 1, 1, 1), not
    the standard (2, 2, 2, 2); use `r21d` / `r21d_std` rather than building this directly.
    forward: clip (B, 3, T, H, W) → (logits (B, n_classes), features v (B, 512)).
    Works with contiguous and channels_last_3d inputs.
    """

    HEAD = "linear"

    def __init__(self, layer_sizes: tuple[int, int, int, int], n_classes: int,
                 block_type: type[nn.Module] = SpatioTemporalResBlock):
        super().__init__()
        self.conv1 = SpatioTemporalConv(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU()
        self.conv2 = SpatioTemporalResLayer(64, 64, 3, layer_sizes[0], block_type)
        self.conv3 = SpatioTemporalResLayer(64, 128, 3, layer_sizes[1], block_type, downsample=True)
        self.conv4 = SpatioTemporalResLayer(128, 256, 3, layer_sizes[2], block_type, downsample=True)
        self.conv5 = SpatioTemporalResLayer(256, FEATURE_DIM, 3, layer_sizes[3], block_type,
                                            downsample=True)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.linear = nn.Linear(FEATURE_DIM, n_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.conv5(self.conv4(self.conv3(self.conv2(x))))
        # flatten, not view: the pooled tensor is non-contiguous under channels_last_3d
        features = self.pool(x).flatten(1)
        return self.linear(features), features


def _layout(layouts: dict[int, tuple[int, int, int, int]], name: str, depth: int):
    if depth not in layouts:
        raise UserError(f"--model {name} supports --model_depth {sorted(layouts)}, got {depth}")
    return layouts[depth]


def r21d(depth: int, n_classes: int) -> R2Plus1DNet:
    """The original release's R(2+1)D: depth 18 → ONE block per stage (the paper's network,
    14,391,466 parameters with 51 classes; not the standard R(2+1)D-18), 34 → (3, 4, 6, 3)."""
    return R2Plus1DNet(_layout(ORIGINAL_LAYOUTS, "r21d", depth), n_classes)


def r21d_std(depth: int, n_classes: int) -> R2Plus1DNet:
    """The standard R(2+1)D layout with the original's modules and names:
    depth 18 → two blocks per stage, 34 → (3, 4, 6, 3)."""
    return R2Plus1DNet(_layout(STANDARD_LAYOUTS, "r21d_std", depth), n_classes)
