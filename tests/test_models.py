import jax
import jax.numpy as jnp
import pytest

from srjax.errors import SrjaxError
from srjax.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_paper_preset_has_about_two_million_parameters(name):
    model = build_model(name, num_classes=4, width="paper")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 7))))
    count = sum(x.size for x in jax.tree.leaves(shapes["params"]))
    assert 1.8e6 <= count <= 2.2e6


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_size_equals_input_size_for_odd_sizes(name):
    model = build_model(name, num_classes=3, width="tiny")
    x = jnp.ones((2, 37, 29, 3))
    params = model.init(jax.random.key(0), x)["params"]
    assert model.apply({"params": params}, x).shape == (2, 37, 29, 3)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(SrjaxError, match="unet, unet_noskip"):
        build_model("segnet", 4)
