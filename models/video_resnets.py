"""torchvision's 18-layer video ResNets as CCL students (DESIGN: forward → (logits, features)).

The student subclasses torchvision's `VideoResNet`, so its state-dict names are
torchvision's and a Kinetics checkpoint of the same architecture loads as is
(`models.factory.load_pretrained`). Nothing is ever downloaded.
"""
from torch import Tensor
from torchvision.models.video.resnet import (BasicBlock, BasicStem, Conv2Plus1D,
                                             Conv3DNoTemporal, Conv3DSimple, R2Plus1dStem,
                                             VideoResNet)

from errors import UserError

# name -> (conv maker per stage, stem); all three are BasicBlock with (2, 2, 2, 2) blocks,
# as in torchvision.models.video.{r3d_18, mc3_18, r2plus1d_18}
ARCHITECTURES = {
    "r3d_18": ([Conv3DSimple] * 4, BasicStem),
    "mc3_18": ([Conv3DSimple] + [Conv3DNoTemporal] * 3, BasicStem),
    "r2plus1d_18": ([Conv2Plus1D] * 4, R2Plus1dStem),
}


class VideoResNetStudent(VideoResNet):
    """torchvision video ResNet whose forward also returns the pooled feature.

    forward: clip (B, 3, T, H, W) → (logits (B, n_classes), features (B, 512)), the
    features being the global average pool before `fc`.
    """

    HEAD = "fc"

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        features = self.avgpool(x).flatten(1)
        return self.fc(features), features


def video_resnet_student(name: str, depth: int, n_classes: int) -> VideoResNetStudent:
    """Randomly initialised `r3d_18`, `mc3_18` or `r2plus1d_18` with an n_classes head.

    depth: must be 18 (the only depth torchvision provides for these).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown torchvision student {name!r}; choices: {sorted(ARCHITECTURES)}")
    if depth != 18:
        raise UserError(f"--model {name} supports only --model_depth 18, got {depth}")
    conv_makers, stem = ARCHITECTURES[name]
    return VideoResNetStudent(BasicBlock, conv_makers, [2, 2, 2, 2], stem, num_classes=n_classes)
