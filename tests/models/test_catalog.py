"""The torch-free model catalogue against the builders and torchvision's own metadata."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import get_weight

from leukaug.core.errors import ConfigError
from leukaug.models import factory, list_models, model_info
from leukaug.models.catalog import BUILDERS, IMAGENET_MEAN, IMAGENET_STD, MODELS
from leukaug.models.custom_cnn import CustomCNN, min_input_size
from leukaug.models.torchvision_models import ARCHITECTURES

RESNET_FLOOR = 32  # five stride-2 stages leave a 1x1 map (torchvision's min_size says 1)


def test_every_catalogued_model_has_a_builder_and_every_builder_an_entry():
    assert factory.BUILDERS is BUILDERS  # the factory imported every family
    assert BUILDERS.names() == MODELS.names() == list_models()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_torchvision_entries_are_torchvisions_metadata(name):
    info = model_info(name)
    weights = get_weight(info.imagenet_weights)  # the recorded name is a real weight enum
    assert str(factory.imagenet_weights(name)) == info.imagenet_weights
    assert info.input_size == weights.transforms().crop_size[0]
    assert info.min_input_size == max(weights.meta["min_size"][0], RESNET_FLOOR)
    assert (info.mean, info.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert list(info.mean) == pytest.approx(weights.transforms().mean)
    assert list(info.std) == pytest.approx(weights.transforms().std)


@pytest.mark.parametrize("name", ["custom_cnn", "custom_resnet"])
def test_seed_cnn_entries_are_the_networks_own_sizes(name):
    info = model_info(name)
    assert info.min_input_size == min_input_size()
    assert info.input_size == CustomCNN().image_size
    with torch.device("meta"):  # builds at the minimum, not below it
        factory.get_model(name, image_size=info.min_input_size)
    with pytest.raises(ConfigError, match=f"at least {info.min_input_size} px"):
        CustomCNN(info.min_input_size - 1)


def test_an_unknown_name_is_answered_by_the_catalogue():
    with pytest.raises(ConfigError, match=r"Unknown model 'resnet5'\. Did you mean 'resnet50'"):
        factory.model_builder("resnet5")
