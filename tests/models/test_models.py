"""Model registry, the seed's custom CNN, weights loading (local files only) and regimes."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models import (
    apply_regime,
    count_parameters,
    factory,
    get_model,
    list_models,
    model_info,
    model_parameter_count,
    weights,
)
from leukaug.models.custom_cnn import CustomCNN
from leukaug.models.custom_resnet import CustomResNet, SkipConv
from leukaug.models.torchvision_models import build_torchvision_model

SEED_PARAMETERS_AT_256 = 16_421_185  # the seed notebook's model.summary()
# + 1x1 projections 3*32+32 + 32*64+64 + 64*128+128 + 128*256+256
SKIP_PARAMETERS = 43_584


# The big torchvision models take seconds to initialise on a busy CPU.
MODEL_PARAMS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("resnet50", "inception_v3") else name
    for name in list_models()
]


def small_size(name: str) -> int:
    return max(model_info(name).min_input_size, 64)


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may download: an empty hub cache and downloads forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")


def test_registry_lists_the_models_with_their_input_settings():
    assert list_models() == ["custom_cnn", "custom_resnet", "inception_v3", "resnet18", "resnet50"]
    assert model_info("custom_cnn").input_size == 256
    assert (model_info("custom_cnn").mean, model_info("custom_cnn").std) == ((0, 0, 0), (1, 1, 1))
    assert model_info("resnet50").input_size == 224 and model_info("resnet18").input_size == 224
    assert model_info("inception_v3").input_size == 299
    assert model_info("resnet50").mean == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match="Did you mean 'resnet50'"):
        model_info("resnet5")


@pytest.mark.parametrize("name", MODEL_PARAMS)
def test_every_model_returns_one_logit_and_has_a_head(name):
    torch.manual_seed(0)
    size = small_size(name)
    model = get_model(name, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    assert isinstance(model.head, nn.Module) and count_parameters(model.head) > 0


@pytest.mark.parametrize("name", list_models())
def test_too_small_input_names_the_minimum(name):
    minimum = model_info(name).min_input_size
    with pytest.raises(ConfigError, match=f"at least {minimum} px"):
        get_model(name, image_size=minimum - 1)


def test_custom_cnn_matches_the_seed_parameter_count():
    model = CustomCNN(256)
    assert count_parameters(model) == SEED_PARAMETERS_AT_256
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 256, 256)).shape == (1,)
    assert model_parameter_count("custom_cnn") == SEED_PARAMETERS_AT_256


def test_custom_cnn_layers_follow_the_seed_keras_indices():
    layers = CustomCNN(256).layers
    assert len(layers) == 25
    convs = {i: layers[i].out_channels for i in (0, 3, 6, 9)}
    assert convs == {0: 32, 3: 64, 6: 128, 9: 256}
    assert all(layers[i].padding == (0, 0) for i in convs)
    assert [layers[i].kernel_size for i in (2, 5, 8)] == [2, 3, 3]
    assert [layers[i].stride for i in (2, 5, 8)] == [2, 3, 3]  # Keras: stride = pool size
    assert [layers[i].p for i in (11, 15, 18, 21)] == [0.6, 0.8, 0.8, 0.7]
    assert isinstance(layers[12], nn.Flatten) and layers[13].in_features == 11 * 11 * 256
    dense = {i: layers[i].out_features for i in (13, 16, 19, 22, 23)}
    assert dense == {13: 512, 16: 256, 19: 128, 22: 64, 23: 1}
    assert all(isinstance(layers[i], nn.SELU) for i in (1, 4, 7, 10, 14, 17, 20))
    assert isinstance(layers[24], nn.Identity)  # the sigmoid's slot: BCEWithLogits applies it
    assert CustomCNN(256).head is not None


def test_custom_cnn_other_sizes_and_wrong_input():
    model = CustomCNN(96).eval()
    assert model.layers[13].in_features == 256 * 2 * 2  # 96 > 94 > 47 > 45 > 15 > 13 > 4 > 2
    assert model(torch.rand(1, 3, 96, 96)).shape == (1,)
    with pytest.raises(ConfigError, match="image_size=128"):
        model(torch.rand(1, 3, 128, 128))


def test_custom_cnn_lecun_uniform_init():
    torch.manual_seed(0)
    model = CustomCNN(96).requires_grad_(False)
    for layer in model.layers:
        if isinstance(layer, nn.Conv2d | nn.Linear):
            limit = math.sqrt(3.0 / layer.weight[0].numel())
            assert float(layer.weight.abs().max()) <= limit
            assert float(layer.weight.abs().max()) > 0.9 * limit
            assert torch.count_nonzero(layer.bias) == 0


def test_custom_cnn_pool_before_selu_is_exact():
    torch.manual_seed(0)
    model = CustomCNN(96).eval()  # eval: no dropout, so both passes see the same network
    images = torch.rand(2, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    reordered = model(images)
    reordered.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    keras_order = model.layers(images).squeeze(-1)  # the seed's order, SELU before pool
    keras_order.sum().backward()
    assert torch.equal(reordered, keras_order)
    for grad, param in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(grad, param.grad)


def test_seed_head_for_torchvision_models():
    model = get_model("resnet18", head="seed", image_size=64)
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [1024, 512, 1]
    assert linears[0].in_features == 512 * 2 * 2  # the un-pooled 2x2 feature map at 64 px
    assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.3, 0.3]
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1,)
    with pytest.raises(ConfigError, match="head"):
        get_model("custom_cnn", head="seed")
    with pytest.raises(ConfigError, match="valid heads"):
        get_model("resnet18", head="mlp")


def test_local_imagenet_weights_file_is_loaded(tmp_path):
    reference = torchvision.models.resnet18()  # random weights in torchvision's format
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = get_model("resnet18", weights_path=str(path))
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight, rtol=0, atol=0)
    assert model.head.out_features == 1
    with pytest.raises(WeightsError, match="do not fit"):
        get_model("resnet50", weights_path=str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        get_model("resnet18", weights_path=str(tmp_path / "missing.pth"))


def test_custom_cnn_weights_file_is_loaded(tmp_path):
    reference = CustomCNN(96)
    path = tmp_path / "cnn.pth"
    torch.save(reference.state_dict(), path)
    model = get_model("custom_cnn", weights_path=str(path), image_size=96)
    assert torch.equal(model.layers[19].weight, reference.layers[19].weight)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        get_model("custom_cnn", pretrained=True)


def test_missing_weights_offline_say_where_and_how():
    with pytest.raises(WeightsError) as error:
        get_model("resnet50", pretrained=True)
    message = str(error.value)
    assert str(factory.expected_path("resnet50")) in message
    assert "hub" in message and "resnet50-11ad3fa6.pth" in message
    assert "leukaug weights fetch resnet50" in message and "weights_path" in message


def test_failed_download_says_where_and_how(monkeypatch):
    monkeypatch.delenv(weights.OFFLINE_ENV)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsError, match="leukaug weights fetch resnet18") as error:
        get_model("resnet18", pretrained=True)
    assert "Name or service not known" in str(error.value)


def test_cached_weights_load_without_network():
    reference = torchvision.models.resnet18()
    path = factory.expected_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = get_model("resnet18", pretrained=True)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_inception_drops_aux_logits_and_transforms_input_with_weights():
    with torch.device("meta"):  # structure only: no memory, no initialisation cost
        imagenet = torchvision.models.inception_v3(aux_logits=True, init_weights=False)
        plain = build_torchvision_model("inception_v3", 299)
        pretrained = build_torchvision_model("inception_v3", 299, state_dict=imagenet.state_dict())
    assert plain.backbone.AuxLogits is None and not plain.backbone.transform_input
    # Google's weights expect [-1, 1] inputs: the model remaps ImageNet-normalised ones.
    assert pretrained.backbone.AuxLogits is None and pretrained.backbone.transform_input


def test_regime_freeze_first_19_trains_dense128_onward():
    model = CustomCNN(96)
    trainable = apply_regime(model, "freeze_first", freeze_first=19)
    expected = [p for i in (19, 22, 23) for p in model.layers[i].parameters()]
    assert [id(p) for p in trainable] == [id(p) for p in expected]
    assert sum(p.numel() for p in trainable) == 128 * 256 + 128 + 64 * 128 + 64 + 64 + 1
    assert not any(p.requires_grad for p in model.layers[:19].parameters())


@pytest.mark.parametrize(
    ("name", "regime", "freeze_first", "match"),
    [
        ("resnet18", "freeze_first", 3, "custom_cnn, custom_resnet and timm"),
        ("custom_resnet", "freeze_first", 24, "between 1 and 23"),
        ("custom_cnn", "full", 19, "only applies"),
        ("custom_cnn", "freeze_first", 0, "between 1 and 23"),
        ("custom_cnn", "freeze_first", 24, "between 1 and 23"),
        ("custom_cnn", "finetune", 0, "valid regimes"),
    ],
)
def test_invalid_regimes(name, regime, freeze_first, match):
    model = get_model(name, image_size=small_size(name))
    with pytest.raises(ConfigError, match=match):
        apply_regime(model, regime, freeze_first=freeze_first)


def test_freeze_backbone_keeps_backbone_and_its_statistics_fixed():
    torch.manual_seed(0)
    model = get_model("resnet18", image_size=64)
    trainable = apply_regime(model, "freeze_backbone")
    assert {id(p) for p in trainable} == {id(p) for p in model.head.parameters()}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.weight.clone()
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    model.train()
    loss = model(torch.rand(4, 3, 64, 64)).square().mean()
    loss.backward()
    optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(head_before, model.head.weight)


def test_full_regime_trains_everything():
    model = CustomCNN(96)
    apply_regime(model, "freeze_first", freeze_first=19)
    assert len(apply_regime(model, "full")) == len(list(model.parameters()))


def test_custom_resnet_is_the_seed_cnn_plus_projection_shortcuts():
    model = CustomResNet(256)
    assert count_parameters(model) == SEED_PARAMETERS_AT_256 + SKIP_PARAMETERS == 16_464_769
    assert model_parameter_count("custom_resnet") == 16_464_769
    assert [type(model.layers[i]) for i in (0, 3, 6, 9)] == [SkipConv] * 4
    seed = CustomCNN(256)
    for index in range(25):  # same layer list, same indices, same widths
        if index not in (0, 3, 6, 9):
            assert type(model.layers[index]) is type(seed.layers[index])
    assert model.layers[13].in_features == seed.layers[13].in_features == 11 * 11 * 256


def test_skip_conv_adds_the_projected_centre_crop():
    torch.manual_seed(0)
    unit = SkipConv(3, 8)
    x = torch.rand(2, 3, 10, 10)
    expected = unit.conv(x) + unit.shortcut(x[..., 1:-1, 1:-1])
    torch.testing.assert_close(unit(x), expected)
    with torch.no_grad():
        unit.conv.weight.zero_()
        unit.conv.bias.zero_()
    assert unit(x).abs().sum() > 0  # the shortcut alone carries the signal: a real skip path


def test_custom_resnet_trains_and_supports_the_seed_regime(tmp_path):
    torch.manual_seed(0)
    model = get_model("custom_resnet", image_size=72)
    trainable = apply_regime(model, "freeze_first", freeze_first=19)
    assert sum(p.numel() for p in trainable) == 128 * 256 + 128 + 64 * 128 + 64 + 64 + 1
    apply_regime(model, "full")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, labels = torch.rand(4, 3, 72, 72), torch.tensor([0.0, 1.0, 0.0, 1.0])
    before = model.layers[0].shortcut.weight.clone()
    loss = nn.functional.binary_cross_entropy_with_logits(model.train()(images), labels)
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.layers[0].shortcut.weight)
    path = tmp_path / "resnet.pth"
    torch.save(model.state_dict(), path)
    loaded = get_model("custom_resnet", weights_path=str(path), image_size=72)
    assert torch.equal(loaded.layers[9].shortcut.weight, model.layers[9].shortcut.weight)
    with pytest.raises(WeightsError, match="do not fit custom_cnn"):
        get_model("custom_cnn", weights_path=str(path), image_size=72)


def test_every_model_states_what_freeze_first_counts():
    assert "Keras layers" in model_info("custom_resnet").freeze_first_units
    assert model_info("resnet18").freeze_first_units is None
