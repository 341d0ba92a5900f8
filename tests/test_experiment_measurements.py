"""The measurement scripts of the experiments without training runs give the facts their
write-ups state (and Keras 3 still fails the way the class_weight write-up says)."""

import importlib.util

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from seglab.paths import project_root


def load(name: str, script: str = "measure.py"):
    path = project_root() / "experiments" / name / script
    spec = importlib.util.spec_from_file_location(f"measure_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_weights_scale_their_image_survive_augmentation_and_spare_validation():
    facts = load("image_weights").measure(num_train=24, num_val=6, epochs=2)
    assert facts["images with the rare class (boosted)"] > 0
    for group, factor in (("boosted images", 5.0), ("other images", 1.0)):
        assert facts[f"loss ratio, {group} (min)"] == pytest.approx(factor, rel=1e-5)
        assert facts[f"loss ratio, {group} (max)"] == pytest.approx(factor, rel=1e-5)
    assert facts["batch loss gain"] == pytest.approx(
        facts["(boost - 1) x boosted pixel losses / N"], rel=1e-5
    )
    assert facts["seglab CE with the weights"] == pytest.approx(
        facts["Keras SparseCategoricalCrossentropy, same weights"], rel=1e-5
    )
    assert facts["augmented views over the epochs"] == 48
    assert facts["views that kept their image's weight"] == 48
    assert facts["validation values that differ with boost + augmentation"] == 0
    assert facts["validation CE of a fixed prediction, plain"] == pytest.approx(
        facts["validation CE of a fixed prediction, boost + augmentation"]
    )


def test_keras_3_class_weight_fails_on_segmentation_masks_and_the_maps_equal_the_reference():
    facts = load("class_weight_in_fit").measure()
    for targets in ("(B,H,W) integer", "(B,H,W,C) one-hot"):
        assert facts[f"Keras fit(class_weight), {targets} masks"] == (
            "TypeError: only 0-dimensional arrays can be converted to Python scalars"
        )
    assert facts["seglab pixel map equals w[mask]"] is True
    hand = facts["CE, hand-weighted: mean_i w[y_i] (-log p_i)"]
    assert facts["CE, seglab CrossEntropy with the map"] == pytest.approx(hand, rel=1e-5)
    assert facts["CE, Keras SparseCategoricalCrossentropy with the map"] == pytest.approx(
        hand, rel=1e-5
    )
    assert facts["focal, seglab FocalLoss with the map"] == pytest.approx(
        facts["focal, hand-weighted: mean_i w[y_i] focal(p_i)"], rel=1e-5
    )
    weighted = facts["Dice, hand-weighted: sum_c w_c dice_c / sum_c w_c"]
    assert facts["Dice, seglab Dice(class_weights=w)"] == pytest.approx(weighted, rel=1e-5)
    assert abs(weighted - facts["Dice, unweighted"]) > 0.05  # the weights do move it


def test_keras_3_fit_rejects_class_weight_with_pixel_masks_directly():
    # The trap the class_weight write-up and seglab's refusal describe, in Keras itself: if a
    # Keras release starts accepting this, the refusal's wording must change.
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.zeros((2, 4, 4, 3), np.float32)
    masks = np.zeros((2, 4, 4), np.int64)
    with pytest.raises(TypeError, match="only 0-dimensional arrays"):
        model.fit(images, masks, class_weight={0: 1.0, 1: 2.0}, epochs=1, verbose=0)


def test_n_images_over_e_epochs_give_n_times_e_views_and_none_at_validation():
    facts = load("augmentation_views").measure(num_images=4, epochs=3)
    for source in ("Keras layers: distinct views", "seglab: distinct training views"):
        assert facts[source] == 12
    assert facts["Keras layers: views equal to an original image"] == 0
    assert facts["Keras layers, training=False: pixels changed"] == 0
    assert facts["Keras layers in a model, predict(): pixels changed"] == 0
    assert facts["seglab: views whose mask holds only labels or ignore"] == 12
    assert facts["seglab: validation values changed by augmentation"] == 0


def median_frequency_by_hand(masks: list[np.ndarray], labels: int) -> np.ndarray:
    """Eigen & Fergus' median frequency from the masks: f_c = pixels of c / pixels (of labels
    below ``labels``) of the images containing c, w_c = median(f) / f_c."""
    pixels, image_pixels = np.zeros(labels), np.zeros(labels)
    for mask in masks:
        counts = np.bincount(mask.ravel(), minlength=256)[:labels]
        pixels += counts
        image_pixels += (counts > 0) * counts.sum()
    freq = pixels / image_pixels
    return np.median(freq) / freq


def test_segnet_weights_are_seglabs_median_frequency_with_11_and_12_classes(tmp_path):
    from test_camvid import SIZE, make_camvid

    make_camvid(tmp_path, {"train": 5, "val": 2, "test": 2})
    rng = np.random.default_rng(0)  # skewed labels, many unlabelled: the two medians differ
    share = np.array([30, 20, 1, 25, 8, 10, 1, 3, 5, 1, 1, 40]) / 145
    for path in sorted((tmp_path / "trainannot").glob("*.png")):
        mask = rng.choice(12, size=(SIZE, SIZE, 1), p=share).astype(np.uint8)
        path.write_bytes(tf.io.encode_png(mask).numpy())
    table = load("camvid_class_balancing", "segnet_weights.py").weights(str(tmp_path), (SIZE, SIZE))
    masks = [read_mask(path) for path in sorted((tmp_path / "trainannot").glob("*.png"))]
    assert list(table["class"])[6] == "sign_symbol" and len(table) == 11
    np.testing.assert_allclose(table.seglab, median_frequency_by_hand(masks, 11), rtol=1e-6)
    np.testing.assert_allclose(table.seglab_12, median_frequency_by_hand(masks, 12)[:11], rtol=1e-6)
    assert not np.allclose(table.seglab, table.seglab_12)  # the unlabelled pixels move the median
    np.testing.assert_allclose(table.ratio * table.seglab, table.segnet_tutorial)
    assert table.segnet_tutorial[6] == 9.6446


def read_mask(path) -> np.ndarray:
    return tf.io.decode_png(path.read_bytes()).numpy()[..., 0]


def test_precision_pairs_runs_by_configuration_and_seed_and_spreads_seeds_apart():
    rows = [
        ("ce", "none", 0, "float32", "speck", 0.9, 0.0),
        ("ce", "none", 0, "bfloat16", "speck", 0.88, 0.1),
        ("ce", "none", 1, "float32", "", 0.8, 0.5),
        ("ce", "none", 1, "bfloat16", "", 0.85, 0.45),
        ("dice", "none", 0, "float32", "", 0.7, 0.6),  # no bfloat16 twin: left out of the pairs
    ]
    columns = ["loss", "class_weights", "seed", "precision", "hidden", "bg", "speck"]
    found = load("precision").measure(pd.DataFrame(rows, columns=columns))
    difference = found["difference"]
    assert difference.index.tolist() == [("ce", "none", 0), ("ce", "none", 1)]
    np.testing.assert_allclose(difference.to_numpy(), [[-0.02, 0.1], [0.05, -0.05]], atol=1e-12)
    spread = found["spread"].loc[("ce", "none", "float32")]
    np.testing.assert_allclose(spread.to_numpy(), [0.1, 0.5])
    assert (found["verdicts"]["float32"] == found["verdicts"]["bfloat16"]).all()
