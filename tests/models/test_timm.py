"""`timm:NAME` models: settings from timm's config, heads, offline weights, regimes (no network)."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from leukaug.core.errors import ConfigError, WeightsError
from leukaug.models import apply_regime, count_parameters, factory, get_model, model_info, weights
from leukaug.models.timm_models import TimmWeights, hf_cache_dir

SIZE = 64
TESTED = ["timm:resnet18", "timm:efficientnet_b0", "timm:convnext_tiny"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Empty caches, downloads forbidden (leukaug's switch and the hub's)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")


def test_info_comes_from_timm_pretrained_config():
    info = model_info("timm:efficientnet_b0")
    config = timm.models.get_pretrained_cfg("efficientnet_b0")
    assert info.input_size == config.input_size[-1] == 224
    assert info.mean == config.mean and info.std == config.std
    assert info.imagenet_weights == "hf-hub:timm/efficientnet_b0.ra_in1k"
    assert info.heads == ("linear", "seed") and info.min_input_size == 32
    vit = model_info("timm:vit_tiny_patch16_224")
    assert vit.mean == (0.5, 0.5, 0.5) and vit.min_input_size == 16  # not ImageNet's
    stages = model_info("timm:resnet18").freeze_first_units
    assert stages == "5 timm stages: stem, layer1, layer2, layer3, layer4"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("timm:efficentnet_b0", "Did you mean 'timm:efficientnet_b0'"),
        ("timm:resnet18.nonsense", "valid: resnet18.a1_in1k"),
        ("tim:resnet18", "valid prefixes: timm"),
    ],
)
def test_unknown_names_get_suggestions(name, match):
    with pytest.raises(ConfigError, match=match):
        model_info(name)


@pytest.mark.parametrize(
    "name", [n if n == "timm:resnet18" else pytest.param(n, marks=pytest.mark.slow) for n in TESTED]
)
def test_both_heads_return_one_logit(name):
    torch.manual_seed(0)
    images = torch.rand(2, 3, SIZE, SIZE)
    linear = get_model(name, image_size=SIZE).eval()
    seed = get_model(name, head="seed", image_size=SIZE).eval()
    with torch.no_grad():
        assert linear(images).shape == seed(images).shape == (2,)
    assert (
        isinstance(linear.head, nn.Linear)
        and linear.head.in_features == linear.backbone.num_features
    )
    seed_linears = [m for m in seed.head if isinstance(m, nn.Linear)]
    assert [m.out_features for m in seed_linears] == [1024, 512, 1]
    # the un-pooled map: 64 px / total stride 32 = 2x2 cells of num_features channels
    assert seed_linears[0].in_features == seed.backbone.num_features * 2 * 2


def test_local_weights_file_is_loaded_and_a_wrong_one_rejected(tmp_path):
    reference = timm.create_model("resnet18", num_classes=1000)  # timm's ImageNet format
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = get_model("timm:resnet18", weights_path=str(path), image_size=SIZE)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head.out_features == 1  # ImageNet's classifier dropped
    with pytest.raises(WeightsError, match="do not fit timm:efficientnet_b0"):
        get_model("timm:efficientnet_b0", weights_path=str(path), image_size=SIZE)


def test_missing_weights_offline_say_where_and_how():
    with pytest.raises(WeightsError) as error:
        get_model("timm:resnet18", pretrained=True, image_size=SIZE)
    message = str(error.value)
    assert str(hf_cache_dir() / "models--timm--resnet18.a1_in1k") in message
    assert "leukaug weights fetch timm:resnet18" in message and "weights_path" in message


def test_failed_download_says_where_and_how(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv(weights.OFFLINE_ENV)

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(WeightsError, match="Name or service not known") as error:
        get_model("timm:resnet18", pretrained=True, image_size=SIZE)
    assert "leukaug weights fetch timm:resnet18" in str(error.value)
    with pytest.raises(WeightsError, match="internet access"):
        factory.download_weights("timm:resnet18", None)


def test_weights_in_the_hugging_face_cache_load_without_network():
    reference = timm.create_model("resnet18", num_classes=1000)
    cached = TimmWeights("timm:resnet18", "timm/resnet18.a1_in1k")
    assert cached.cached_path() is None
    repo = hf_cache_dir() / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    save_file(reference.state_dict(), repo / "snapshots" / "0123abcd" / "model.safetensors")
    assert cached.cached_path() == repo / "snapshots" / "0123abcd" / "model.safetensors"
    model = get_model("timm:resnet18", pretrained=True, image_size=SIZE)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)


def test_freeze_backbone_keeps_timm_norm_activations_and_statistics():
    torch.manual_seed(0)
    model = get_model("timm:efficientnet_b0", image_size=SIZE).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(images)
    assert any(isinstance(m, BatchNormAct2d) for m in model.modules())
    trainable = apply_regime(model, "freeze_backbone")
    assert {id(p) for p in trainable} == {id(p) for p in model.head.parameters()}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNormAct2d) for m in model.modules())
    with torch.no_grad():  # same function: the fused activations survived the swap
        torch.testing.assert_close(model(images), before)
    model.train()  # frozen statistics do not move in training mode
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model(images).sum().backward()
    after = model.backbone.state_dict()
    assert stats and all(torch.equal(stats[k], after[k]) for k in stats)


def test_freeze_first_counts_timm_stages():
    model = get_model("timm:resnet18", image_size=SIZE)
    trainable = apply_regime(model, "freeze_first", freeze_first=2)  # stem + layer1
    backbone = model.backbone
    assert not any(p.requires_grad for p in backbone.conv1.parameters())
    assert not any(p.requires_grad for p in backbone.layer1.parameters())
    assert all(p.requires_grad for p in backbone.layer2.parameters())
    assert isinstance(backbone.bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.layer2[0].bn1, nn.BatchNorm2d)
    frozen = count_parameters(backbone.conv1) + count_parameters(backbone.layer1)
    assert sum(p.numel() for p in trainable) == count_parameters(model) - frozen
    with pytest.raises(ConfigError, match="between 1 and 5"):
        apply_regime(get_model("timm:resnet18", image_size=SIZE), "freeze_first", freeze_first=6)


def test_structure_builds_on_the_meta_device():
    """The study checks every arm's model and regime on the meta device before running."""
    with torch.device("meta"):
        model = get_model("timm:convnext_tiny", head="seed", image_size=96)
        apply_regime(model, "freeze_first", freeze_first=3)
    assert count_parameters(model, trainable_only=True) < count_parameters(model)
