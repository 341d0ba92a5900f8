import numpy as np
import pytest

from seglab.training.model import build_unet


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
        ({"batch_norm_momentum": 2}, r"model.batch_norm_momentum must be in \[0, 1\), got 2$"),
        ({"batch_norm_momentum": -0.1}, r"model.batch_norm_momentum must be in \[0, 1\)"),
        ({"num_classes": 1}, "at least 2 classes"),
    ],
)
def test_unet_rejects_bad_arguments_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_unet((16, 16, 3), **{"num_classes": 3, **kwargs})


def unet_parameters(depth, base, classes, batch_norm=True, channels=3):
    """The U-Net's parameter count by hand: two 3x3 convolutions per level (a bias only without
    batch norm; batch norm has 4 per channel), 2x2 transposed convolutions up, a 1x1 head."""

    def block(cin, cout):
        per_conv = lambda i: 9 * i * cout + (4 * cout if batch_norm else cout)  # noqa: E731
        return per_conv(cin) + per_conv(cout)

    widths = [base * 2**level for level in range(depth + 1)]  # the last is the bottleneck
    total, cin = 0, channels
    for width in widths:
        total += block(cin, width)
        cin = width
    for level in reversed(range(depth)):
        width = widths[level]
        total += 4 * widths[level + 1] * width + width  # transposed convolution, with bias
        total += block(2 * width, width)  # after concatenating the skip connection
    return total + base * classes + classes


@pytest.mark.parametrize(
    ("depth", "base", "classes", "batch_norm", "expected"),
    [
        (4, 8, 5, True, 488_061),  # the hidden-failure question's 8-16-32-64-128 U-Net
        (2, 4, 3, False, 7_479),
        (3, 8, 12, True, 121_980),
    ],
)
def test_unet_has_the_widths_and_parameters_of_its_definition(
    depth, base, classes, batch_norm, expected
):
    assert unet_parameters(depth, base, classes, batch_norm) == expected
    model = build_unet((32, 32, 3), classes, depth=depth, base_filters=base, batch_norm=batch_norm)
    assert model.count_params() == expected
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    widths = sorted({layer.filters for layer in convs if layer.name != "logits"})
    assert widths == [base * 2**level for level in range(depth + 1)]
    assert all(layer.use_bias != batch_norm for layer in convs if layer.name != "logits")


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dropout_sits_in_the_bottleneck_only_when_asked(dropout):
    model = build_unet((16, 16, 3), 3, depth=2, base_filters=4, dropout=dropout)
    rates = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert rates == ([dropout] if dropout else [])
