"""The original Siamese tower and four heads (one of them the original, broken on purpose).

Both images of a pair run through the tower as one batch: one launch sequence instead of
two, which matters on a GPU where this small network is launch-bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siamese.config import IMAGE_HEIGHT, IMAGE_WIDTH, TrainConfig

EMBEDDING_DIM = 100
# The state-dict key of the decision threshold, and its value before any validation pass
# (checkpoints written before it existed load with it too).
THRESHOLD_KEY = "decision_threshold"
DEFAULT_THRESHOLD = 0.5


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _output_size(layer: nn.Conv2d | nn.MaxPool2d, size: tuple[int, int]) -> tuple[int, int]:
    """A conv's or a pooling's output height and width (PyTorch's formula, floor mode)."""
    kernel, stride = _pair(layer.kernel_size), _pair(layer.stride)
    padding, dilation = _pair(layer.padding), _pair(layer.dilation)  # type: ignore[arg-type]
    return (
        (size[0] + 2 * padding[0] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1,
        (size[1] + 2 * padding[1] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1,
    )


class Tower(nn.Module):
    """conv 1->8 k7, 8->16 k5, maxpool 2, 16->32 k3 p1, 32->64 k3 p1, linear -> 100 (ReLUs).

    Named layers, so statistics and state-dict keys say which layer they are, not where."""

    def __init__(
        self, dropout: float, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 7)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv4 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(self.flat_size(height, width), EMBEDDING_DIM)
        self.dropout = nn.Dropout(dropout)

    def flat_size(self, height: int, width: int) -> int:
        """How many numbers `features` gives for one image of this size, from the layers'
        own kernel, padding, stride and dilation. Not from a forward pass on a dummy image:
        a search builds a tower per trial, and that pass is a set of first-time oneDNN calls
        that runs while the writer thread draws the last trial's curves (60 ms a trial)."""
        size = (height, width)
        for layer in (self.conv1, self.conv2, self.pool, self.conv3, self.conv4):
            size = _output_size(layer, size)
            if min(size) < 1:  # two negative sizes would multiply to a positive one
                raise ValueError(f"a {height}x{width} image is too small for the tower")
        return self.conv4.out_channels * size[0] * size[1]

    def features(self, x: Tensor) -> Tensor:
        """The convolutional part: a ReLU after each conv, the pooling after conv2."""
        x = F.relu(self.conv2(F.relu(self._conv1(x))))
        x = self.pool(x)
        return F.relu(self.conv4(F.relu(self.conv3(x))))

    def _conv1(self, x: Tensor) -> Tensor:
        """conv1 in float32 under the CPU's bf16 autocast: with one input channel, oneDNN's
        bf16 kernel takes twice as long as its float32 one (forward and backward: 5.0 against
        2.6 ms a batch, a seventh of a step), while conv2-4 run 1.8-2.9x faster in bf16.
        Elsewhere (CUDA, float32, an export, which traces without autocast) as written."""
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):  # the images are float32 already
                return self.conv1(x)
        return self.conv1(x)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.relu(self.fc(self.features(x).flatten(1)))
        return self.dropout(hidden)


class Head(nn.Module):
    """Turns two embeddings into the head's raw output; knows its loss and its probability."""

    def loss(self, out: Tensor, same: Tensor) -> Tensor:
        raise NotImplementedError

    def prob_same(self, out: Tensor) -> Tensor:
        raise NotImplementedError

    def zero_output_mask(self, out: Tensor) -> Tensor | None:
        """Which pairs' output sits at a ReLU's 0 (no gradient); None where no ReLU outputs."""
        return None


class ReLU2Head(Head):
    """The original: |a-b| -> Linear(100, 2) -> ReLU, BCE-with-logits against [same, different].

    Kept on purpose. sigmoid(ReLU(x)) is never below 0.5, and once the ReLU outputs 0 the
    gradient through it is 0 too: the network prints ~0.5 for every pair and stops learning.
    """

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(EMBEDDING_DIM, 2)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.relu(self.linear((a - b).abs()))

    def loss(self, out: Tensor, same: Tensor) -> Tensor:
        target = torch.stack([same, 1.0 - same], dim=1)
        return F.binary_cross_entropy_with_logits(out.float(), target)

    def prob_same(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out[:, 0].float())

    def zero_output_mask(self, out: Tensor) -> Tensor:
        return out[:, 0] == 0  # the "same" output: sigmoid(0) = 0.5 whatever the pair


class LogitHead(Head):
    """One logit from |a-b| (`abs`) or (a-b)^2 (`sq`), sigmoid + BCE."""

    def __init__(self, squared: bool) -> None:
        super().__init__()
        self.squared = squared
        self.linear = nn.Linear(EMBEDDING_DIM, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        diff = a - b
        return self.linear(diff * diff if self.squared else diff.abs()).squeeze(1)

    def loss(self, out: Tensor, same: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(out.float(), same)

    def prob_same(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out.float())


class ContrastiveHead(Head):
    """Euclidean distance with the contrastive loss (Hadsell et al. 2006).

    Same pairs are pulled together, different pairs pushed beyond `margin`; the probability
    is a logistic on the distance, 0.5 at half the margin, so the score reads like the others.
    The learned distances need not split there: the decision uses the model's threshold,
    chosen on validation pairs (siamese.train.threshold), not 0.5.
    """

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        # eps keeps the gradient of the square root finite when a == b.
        return ((a.float() - b.float()).pow(2).sum(dim=1) + 1e-9).sqrt()

    def loss(self, out: Tensor, same: Tensor) -> Tensor:
        pull = same * out.pow(2)
        push = (1.0 - same) * F.relu(self.margin - out).pow(2)
        return 0.5 * (pull + push).mean()

    def prob_same(self, out: Tensor) -> Tensor:
        return torch.sigmoid((0.5 * self.margin - out) * (8.0 / self.margin))


def make_head(kind: str, margin: float) -> Head:
    if kind == "relu2":
        return ReLU2Head()
    if kind in ("abs", "sq"):
        return LogitHead(squared=kind == "sq")
    return ContrastiveHead(margin)


class SiameseNet(nn.Module):
    """Tower + head. Inputs are raw [0, 1] images; normalisation lives in the model (buffers),
    so a checkpoint scores new images exactly as it was trained."""

    pixel_mean: Tensor
    pixel_std: Tensor
    # "same" iff P(same) >= this; chosen on validation pairs by each full validation pass. A
    # buffer, so state dicts, checkpoints and exported (pt2) models carry it.
    decision_threshold: Tensor

    def __init__(self, head: str, dropout: float, margin: float = 1.0) -> None:
        super().__init__()
        self.tower = Tower(dropout)
        self.head = make_head(head, margin)
        self.register_buffer("pixel_mean", torch.tensor(0.0))
        self.register_buffer("pixel_std", torch.tensor(1.0))
        self.register_buffer(THRESHOLD_KEY, torch.tensor(DEFAULT_THRESHOLD))

    def set_normalization(self, mean: float, std: float) -> None:
        self.pixel_mean.fill_(mean)
        self.pixel_std.fill_(max(std, 1e-6))

    def set_decision_threshold(self, threshold: float) -> None:
        self.decision_threshold.fill_(threshold)

    def embed_pair(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        both = torch.cat([left, right]).unsqueeze(1)
        emb = self.tower((both - self.pixel_mean) / self.pixel_std)
        return emb[: left.shape[0]], emb[left.shape[0] :]

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        return self.head(*self.embed_pair(left, right))

    def loss(self, out: Tensor, same: Tensor) -> Tensor:
        return self.head.loss(out, same)

    def prob_same(self, out: Tensor) -> Tensor:
        return self.head.prob_same(out)


def build_model(config: TrainConfig) -> SiameseNet:
    return SiameseNet(config.head, config.dropout, config.margin)
