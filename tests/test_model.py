import numpy as np
import pytest

from seglab.model import build_unet


@pytest.mark.parametrize(
    ("size", "depth", "classes"), [((32, 32), 2, 5), ((64, 48), 3, 3), ((16, 16), 4, 2)]
)
def test_unet_outputs_a_softmax_per_pixel_for_any_multiple_of_two_to_the_depth(
    size, depth, classes
):
    model = build_unet((*size, 3), classes, depth=depth, base_filters=4, dropout=0.1)
    x = np.random.default_rng(0).random((2, *size, 3), dtype=np.float32)
    y = model.predict(x, verbose=0)
    assert y.shape == (2, *size, classes)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)
    assert (y >= 0).all()


def test_unet_without_batch_norm_has_no_batch_norm_layers():
    model = build_unet((16, 16, 3), 2, depth=2, base_filters=2, batch_norm=False)
    assert not any("batch_normalization" in layer.name for layer in model.layers)


def test_unet_rejects_a_size_not_divisible_by_two_to_the_depth():
    with pytest.raises(
        ValueError, match=r"model.depth=4 needs .* divisible by 2\*\*4=16, got 40x40"
    ):
        build_unet((40, 40, 3), 5, depth=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": 0}, "model.depth must be >= 1"),
        ({"base_filters": 0}, "model.base_filters must be >= 1"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"num_classes": 1}, "at least 2 classes"),
    ],
)
def test_unet_rejects_bad_arguments_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_unet((16, 16, 3), **{"num_classes": 3, **kwargs})
