import pytest
import torch
from torch import nn

from siamese.config import HEADS
from siamese.model import EMBEDDING_DIM, SiameseNet, Tower


def head_linear(model: SiameseNet) -> nn.Linear:
    """The relu2 / logit heads' one linear layer (`Head` itself declares none)."""
    linear = model.head.linear
    assert isinstance(linear, nn.Linear)
    return linear


def test_tower_flatten_size_is_derived_from_the_input_shape() -> None:
    model = SiameseNet("sq", dropout=0.0)
    assert model.tower.fc.in_features == 19200  # 64 x 15 x 20 for 40x50 inputs
    assert model.tower.fc.out_features == EMBEDDING_DIM


@pytest.mark.parametrize("size", [(40, 50), (41, 57), (28, 28), (64, 33), (17, 16)])
def test_the_flatten_size_from_the_layers_matches_a_forward_pass(size: tuple[int, int]) -> None:
    # Odd sizes too: the pooling floors, and a wrong formula is off by a row there.
    tower = Tower(dropout=0.0, height=size[0], width=size[1])
    with torch.no_grad():
        flat = tower.features(torch.zeros(1, 1, *size)).flatten(1).shape[1]
    assert tower.fc.in_features == flat
    tower(torch.zeros(3, 1, *size))  # and the fc layer takes it


def test_an_image_too_small_for_the_tower_is_refused_by_size() -> None:
    with pytest.raises(ValueError, match="a 8x8 image is too small"):
        Tower(dropout=0.0, height=8, width=8)


@pytest.mark.parametrize("head", HEADS)
def test_every_head_gives_outputs_losses_and_probabilities(head: str) -> None:
    torch.manual_seed(0)
    model = SiameseNet(head, dropout=0.3)
    left, right = torch.rand(6, 40, 50), torch.rand(6, 40, 50)
    same = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    out = model(left, right)
    assert out.shape == ((6, 2) if head == "relu2" else (6,))
    loss = model.loss(out, same)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    assert model.tower.fc.weight.grad is not None
    probs = model.prob_same(out)
    assert probs.shape == (6,) and bool(((probs >= 0) & (probs <= 1)).all())


def test_relu2_head_can_never_say_different() -> None:
    """The original bug: sigmoid(ReLU(x)) >= 0.5 whatever the weights."""
    model = SiameseNet("relu2", dropout=0.0)
    with torch.no_grad():
        head_linear(model).bias.fill_(-5.0)
        probs = model.prob_same(model(torch.rand(8, 40, 50), torch.rand(8, 40, 50)))
    assert torch.allclose(probs, torch.full_like(probs, 0.5))


def test_identical_inputs_give_the_same_output_for_every_pair() -> None:
    model = SiameseNet("sq", dropout=0.0).eval()
    images = torch.rand(5, 40, 50)
    probs = model.prob_same(model(images, images))
    assert float(probs.detach().std()) < 1e-6


def test_normalization_is_part_of_the_model_state() -> None:
    model = SiameseNet("abs", dropout=0.0)
    model.set_normalization(0.25, 0.5)
    state = model.state_dict()
    assert float(state["pixel_mean"]) == 0.25 and float(state["pixel_std"]) == 0.5


@pytest.mark.parametrize("head", HEADS)
def test_each_head_says_which_outputs_sit_at_a_relu_zero(head: str) -> None:
    model = SiameseNet(head, dropout=0.0)
    left, right = torch.rand(4, 40, 50), torch.rand(4, 40, 50)
    if head != "relu2":
        assert model.head.zero_output_mask(model(left, right)) is None
        return
    with torch.no_grad():
        head_linear(model).weight.zero_()
        head_linear(model).bias.copy_(torch.tensor([-1.0, 1.0]))  # "same" at 0, "different" not
        dead = model.head.zero_output_mask(model(left, right))
        head_linear(model).bias.copy_(torch.tensor([1.0, -1.0]))
        alive = model.head.zero_output_mask(model(left, right))
    assert dead is not None and dead.tolist() == [True] * 4
    assert alive is not None and alive.tolist() == [False] * 4


def test_the_tower_names_its_layers() -> None:
    tower = SiameseNet("sq", dropout=0.0).tower
    names = {name.split(".")[0] for name, _ in tower.named_parameters()}
    assert names == {"conv1", "conv2", "conv3", "conv4", "fc"}
    assert isinstance(tower.pool, torch.nn.MaxPool2d)
