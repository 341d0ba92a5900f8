"""data=folder on small PNG folders written by the test, with known class counts."""

import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import compose_train
from PIL import Image

from seglab.data.counting import class_counts
from seglab.data.datasets.folder import folder
from seglab.stats import table
from seglab.train import run

SIZE = 16


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(array).numpy())


def make_folder(root, count=10, sub="", size=SIZE, mask_size=None, bad_label=None):
    """``count`` pairs: image i has a (i+1)-pixel-wide stripe of class 1; class 2 in image 0."""
    for i in range(count):
        mask = np.zeros((mask_size or size, mask_size or size, 1), np.uint8)
        mask[:, : i + 1] = 1
        if i == 0:
            mask[0, -1] = 2
        if bad_label is not None and i == count - 1:
            mask[1, 1] = bad_label
        image = np.repeat(mask * 100, 3, axis=-1).astype(np.uint8)[:size, :size]
        if mask_size is not None:
            image = np.zeros((size, size, 3), np.uint8)
        write_png(root / sub / "images" / f"img{i:02d}.png", image)
        write_png(root / sub / "masks" / f"img{i:02d}.png", mask)
    return root


def arrays(dataset):
    images, masks = zip(*dataset.as_numpy_iterator(), strict=True)
    return np.stack(images), np.stack(masks)


def test_counts_shapes_and_values_match_what_was_written(tmp_path):
    data = folder(
        str(make_folder(tmp_path)), ["bg", "stripe", "dot"], image_size=SIZE, val_fraction=0.2
    )
    assert (data.num_train, data.num_val) == (8, 2)
    assert data.image_shape == (SIZE, SIZE, 3)
    both = [class_counts(d, 3, 255) for d in (data.train, data.val)]
    stripe = sum(c.pixels[1] for c in both)
    assert stripe == SIZE * sum(range(1, 11))  # every stripe pixel, across both splits
    assert sum(c.pixels[2] for c in both) == 1 and sum(c.images[2] for c in both) == 1
    images, masks = arrays(data.train)
    np.testing.assert_allclose(images[..., 0], (masks * 100) / 255, atol=1e-6)  # aligned


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    root = str(make_folder(tmp_path))
    names = lambda seed: folder(root, ["a", "b", "c"], SIZE, split_seed=seed).files["val"]  # noqa: E731
    assert names(0) == names(0) and names(0) != names(3)


@pytest.mark.parametrize(("fraction", "held_out"), [(0.2, 2), (0.29, 3), (0.01, 1), (0.9, 9)])
def test_the_validation_split_holds_the_nearest_whole_share_and_train_the_rest(
    tmp_path, fraction, held_out
):
    data = folder(str(make_folder(tmp_path)), ["a", "b", "c"], SIZE, val_fraction=fraction)
    assert (data.num_train, data.num_val) == (10 - held_out, held_out)
    assert not set(data.files["train"]) & set(data.files["val"])
    assert len(set(data.files["train"]) | set(data.files["val"])) == 10


def test_too_few_images_to_split_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"has 10 images: too few .* data.val_fraction=0.96"):
        folder(str(make_folder(tmp_path)), ["a", "b", "c"], SIZE, val_fraction=0.96)


def test_train_and_val_subfolders_give_a_fixed_split(tmp_path):
    make_folder(tmp_path, count=4, sub="train")
    make_folder(tmp_path, count=2, sub="val")
    data = folder(str(tmp_path), ["a", "b", "c"], SIZE)
    assert (data.num_train, data.num_val) == (4, 2)
    for image, mask in data.files["val"]:
        assert "/val/images/" in image and "/val/masks/" in mask
        assert Path(image).name == Path(mask).name


def test_masks_are_resized_with_nearest_neighbour(tmp_path):
    # 18 x 18 masks to 6 x 36: rows shrink by 3, columns grow by 2. The nearest input pixel
    # centre of output row i is row 3i + 1, of output column j is column j // 2 (no ties).
    data = folder(str(make_folder(tmp_path, size=18)), ["a", "b", "c"], image_size=[6, 36])
    _, masks = arrays(data.train)
    assert masks.shape[1:] == (6, 36)
    for (_, name), mask in zip(data.files["train"], masks, strict=True):
        original = np.asarray(Image.open(name))
        np.testing.assert_array_equal(mask, original[1::3][:, np.arange(36) // 2])


def test_class_table_can_come_from_classes_yaml(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "classes.yaml").write_text("classes: [bg, stripe, dot]\nignore_index: 7\n")
    data = folder(str(tmp_path), image_size=SIZE)
    assert data.class_names == ("bg", "stripe", "dot") and data.ignore_index == 7


def test_missing_mask_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "masks" / "img03.png").unlink()
    with pytest.raises(ValueError, match=r"image .*img03.png has no mask .*masks/img03.png"):
        folder(str(tmp_path), ["a", "b", "c"], SIZE)


def test_mask_without_image_is_named(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "images" / "img05.png").unlink()
    with pytest.raises(ValueError, match=r"mask .*masks/img05.png has no image"):
        folder(str(tmp_path), ["a", "b", "c"], SIZE)


def test_size_mismatch_is_named_when_the_folder_is_listed(tmp_path):
    make_folder(tmp_path, count=3, mask_size=SIZE + 2)
    with pytest.raises(
        ValueError, match=r"images/img00.png is 16x16 but its mask .*img00.png is 18x18$"
    ):
        folder(str(tmp_path), ["a", "b", "c"], SIZE, val_fraction=0.34)


def test_size_mismatch_after_listing_is_named_when_the_data_is_read(tmp_path):
    make_folder(tmp_path, count=3)
    data = folder(str(tmp_path), ["a", "b", "c"], SIZE, val_fraction=0.34)
    write_png(tmp_path / "masks" / "img01.png", np.zeros((SIZE + 2, SIZE, 1), np.uint8))
    with pytest.raises(ValueError, match=r"img01.png is 16x16 but its mask .*img01.png is 18x16$"):
        class_counts(data.train, 3, 255)


def test_unknown_label_is_named_with_its_file(tmp_path):
    make_folder(tmp_path, count=4, sub="train", bad_label=9)
    make_folder(tmp_path, count=2, sub="val")
    data = folder(str(tmp_path), ["a", "b", "c"], SIZE)
    with pytest.raises(ValueError, match=r"sample 3 \(.*train/masks/img03.png\) has label 9"):
        class_counts(data.train, 3, 255, files=data.files["train"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"root": "/no/such/dir"}, "is not a folder"),
        ({"class_names": ["only"]}, "give at least 2 class names"),
        ({"val_fraction": 1.0}, r"data.val_fraction must be in \(0, 1\)"),
    ],
)
def test_bad_folder_options_are_named(tmp_path, kwargs, message):
    make_folder(tmp_path)
    with pytest.raises(ValueError, match=message):
        folder(**{"root": str(tmp_path), "class_names": ["a", "b", "c"], **kwargs})


COLORS = [[0, 0, 0], [128, 64, 128], [220, 20, 60]]
IGNORE_COLOR = [255, 255, 255]


def colour_masks(root, mode="RGB"):
    """Four colour-mask pairs; mask i: i+1 columns of class 1, pixel (0, 0) class 2, last row
    the ignore colour. Written as RGB or as palette (mode "P") PNGs."""
    for i in range(4):
        labels = np.zeros((SIZE, SIZE), np.uint8)
        labels[:, 1 : i + 2] = 1
        labels[0, 0] = 2
        labels[-1] = 3
        palette = np.array([*COLORS, IGNORE_COLOR], np.uint8)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        if mode == "P":
            image = Image.fromarray(labels, mode="P")
            image.putpalette(palette.ravel().tolist())
            image.save(root / "masks" / f"m{i}.png")
        else:
            write_png(root / "masks" / f"m{i}.png", palette[labels])
        write_png(root / "images" / f"m{i}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    return root


@pytest.mark.parametrize("mode", ["RGB", "P"])
def test_colour_and_palette_masks_map_through_the_colour_table(tmp_path, mode):
    colour_masks(tmp_path, mode)
    data = folder(
        str(tmp_path),
        ["bg", "road", "person"],
        SIZE,
        val_fraction=0.25,
        ignore_index=9,
        colors=COLORS,
        ignore_color=IGNORE_COLOR,
    )
    masks = np.concatenate([arrays(d)[1] for d in (data.train, data.val)])
    assert set(np.unique(masks)) == {0, 1, 2, 9}
    counts = [class_counts(d, 3, 9) for d in (data.train, data.val)]
    # columns 1..i+1 of the first 15 rows, minus nothing (pixel (0, 0) is column 0): 15 * (1+2+3+4)
    assert sum(c.pixels[1] for c in counts) == (SIZE - 1) * 10
    assert sum(c.pixels[2] for c in counts) == 4
    assert (masks == 9).sum() == 4 * SIZE


def test_colour_table_can_come_from_classes_yaml(tmp_path):
    colour_masks(tmp_path)
    (tmp_path / "classes.yaml").write_text(
        f"classes: [bg, road, person]\ncolors: {COLORS}\nignore_color: {IGNORE_COLOR}\n"
    )
    data = folder(str(tmp_path), image_size=SIZE, val_fraction=0.25)
    assert set(np.unique(arrays(data.train)[1])) == {0, 1, 2, 255}


def test_unknown_colour_is_named_with_its_file(tmp_path):
    colour_masks(tmp_path)
    with pytest.raises(
        ValueError, match=r"masks/m\d.png has the colour \[255, 255, 255\] .*not in data.colors"
    ):
        class_counts(folder(str(tmp_path), ["a", "b", "c"], SIZE, colors=COLORS).train, 3, 255)


def test_colour_masks_without_a_colour_table_list_their_colours_and_suggest_a_table(tmp_path):
    colour_masks(tmp_path)
    with pytest.raises(ValueError) as refused:
        folder(str(tmp_path), ["a", "b", "c"], SIZE)
    # 4 masks of 16x16: row 15 ignore colour (64 px), pixel (0, 0) class 2 (4 px), columns
    # 1..i+1 of rows 0-14 class 1 (15 * 10 = 150 px), the rest black (1024 - 218 = 806 px).
    assert str(refused.value) == (
        f"4 masks are colour PNGs (the first: {tmp_path}/masks/m0.png) but data.colors is not "
        "set: they hold 4 colours ([0, 0, 0] 78.7%, [128, 64, 128] 14.6%, [255, 255, 255] 6.2%, "
        f"[220, 20, 60] 0.4%); a classes.yaml to fill in is written to {tmp_path}/"
        "classes.suggested.yaml"
    )
    suggested = yaml.safe_load((tmp_path / "classes.suggested.yaml").read_text())
    assert suggested["colors"] == [[0, 0, 0], [128, 64, 128], [255, 255, 255], [220, 20, 60]]
    assert suggested["ignore_index"] == 255 and len(suggested["classes"]) == 4
    suggested |= {"classes": ["bg", "road", "person"], "ignore_color": [[255, 255, 255]]}
    suggested["colors"] = COLORS
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump(suggested))
    data = folder(str(tmp_path), image_size=SIZE, val_fraction=0.25)  # filled in, it reads
    assert set(np.unique(arrays(data.train)[1])) == {0, 1, 2, 255}


def test_index_mask_with_a_colour_table_is_named(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(ValueError, match=r"img00.png is a L PNG, not an RGB/RGBA/palette PNG"):
        folder(str(tmp_path), ["a", "b", "c"], SIZE, colors=COLORS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"colors": COLORS[:2]}, r"data.colors: 2 colours for 3 classes"),
        ({"colors": [[0, 0, 0], [1, 2], [3, 4, 5]]}, r"\[1, 2\] is not an \[r, g, b\]"),
        ({"colors": [[0, 0, 0], [0, 0, 0], [3, 4, 5]]}, "the same colour is given twice"),
        ({"colors": COLORS, "ignore_color": [0, 0, 0]}, "the same colour is given twice"),
        ({"ignore_color": IGNORE_COLOR}, "data.ignore_color is set but data.colors is not"),
    ],
)
def test_bad_colour_tables_are_named(tmp_path, kwargs, message):
    colour_masks(tmp_path)
    with pytest.raises(ValueError, match=message):
        folder(str(tmp_path), ["a", "b", "c"], SIZE, **kwargs)


def folder_config(tmp_path, root):
    return compose_train(
        "debug=smoke",
        "trainer.epochs=1",
        "data=folder",
        f"data.root={root}",
        "data.class_names=[bg,stripe,dot]",
        f"data.image_size={SIZE}",
        f"paths.output_dir={tmp_path / 'out'}",
    )


@pytest.mark.slow
def test_folder_data_trains_and_reports_stats(tmp_path):
    root = make_folder(tmp_path / "data")
    cfg = folder_config(tmp_path, root)
    assert math.isfinite(run(cfg).val_loss)
    stats = table(cfg)
    assert list(stats["class"]) == ["bg", "stripe", "dot"]
    assert stats.train_images.iloc[0] + stats.val_images.iloc[0] == 10
    assert stats.train_pixel_share.sum() == pytest.approx(1.0)


def stats(tmp_path, *overrides: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "seglab.stats", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_stats_names_a_missing_data_root_in_one_line(tmp_path):
    root = tmp_path / "nowhere"
    result = stats(tmp_path, "data=folder", f"data.root={root}")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"seglab stats: data.root='{root}' is not a folder"]


def test_stats_names_an_unknown_data_option_in_one_line(tmp_path):
    result = stats(tmp_path, "data=camvdi")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "seglab stats: data='camvdi' is not one of ['camvid', 'folder', 'oxford_pet', 'shapes']"
    ]


def test_sixteen_bit_masks_are_read_exactly(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            mask = np.zeros((SIZE, SIZE, 1), np.uint16)
            mask[:4] = 1
            mask[4:8] = 2
            mask[8:9] = 300  # beyond 8 bits: the ignore index below
            write_png(tmp_path / split / "images" / f"{i}.png", np.zeros((SIZE, SIZE, 3), np.uint8))
            write_png(tmp_path / split / "masks" / f"{i}.png", mask)
    data = folder(str(tmp_path), ["bg", "a", "b"], SIZE, ignore_index=300)
    _, masks = arrays(data.train)
    assert masks.dtype == np.int32
    np.testing.assert_array_equal(np.unique(masks), [0, 1, 2, 300])
    counts = class_counts(data.train, 3, 300)
    np.testing.assert_array_equal(counts.pixels, [3 * 7 * SIZE, 3 * 4 * SIZE, 3 * 4 * SIZE])


def test_sixteen_bit_colour_masks_are_refused_naming_the_file(tmp_path):
    colour_masks(tmp_path)
    write_png(tmp_path / "masks" / "m0.png", np.zeros((SIZE, SIZE, 3), np.uint16))
    data = folder(str(tmp_path), ["a", "b", "c"], SIZE, colors=COLORS, ignore_color=IGNORE_COLOR)
    with pytest.raises(ValueError, match=r"mask .*m0.png: 16-bit colour masks are not supported$"):
        for split in ("train", "val"):
            class_counts(data.stream(split), 3, 255, files=data.files[split])


@pytest.mark.parametrize("which", ["images", "masks"])
@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "an empty file"), (b"not a png at all", "not a PNG or JPEG image"), (None, "truncated")],
    ids=["zero_bytes", "garbage", "truncated"],
)
def test_an_unreadable_image_or_mask_is_named_in_one_line(tmp_path, content, reason, which):
    root = make_folder(tmp_path, count=6, sub="train")
    make_folder(tmp_path, count=2, sub="val")
    bad = root / "train" / which / "img03.png"
    original = bad.read_bytes()
    written = original[: len(original) // 2] if content is None else content
    bad.write_bytes(written)
    pattern = rf"^cannot read {root}/train/{which}/img03.png: .*{reason}[^\n]*$"
    if content is not None:  # the header is unreadable: refused when the folder is listed
        with pytest.raises(ValueError, match=pattern):
            folder(str(root), ["bg", "stripe", "dot"], SIZE)
    bad.write_bytes(original)
    data = folder(str(root), ["bg", "stripe", "dot"], SIZE)
    bad.write_bytes(written)  # broken after listing: refused when its pixels are read
    with pytest.raises(ValueError, match=pattern):
        class_counts(data.train, 3, 255, files=data.files["train"])
    assert bad.read_bytes() == written  # nothing touched


def test_a_mask_edited_in_place_is_recounted_and_validated_again(tmp_path):
    from seglab.data.counting import split_counts

    root = make_folder(tmp_path / "data", count=4, sub="train")
    make_folder(tmp_path / "data", count=2, sub="val")
    data = folder(str(root), ["bg", "stripe", "dot"], SIZE)
    config = {"root": str(root)}  # the same config before and after the edit
    before = split_counts(data, "train", config, tmp_path / "cache")
    mask = root / "train" / "masks" / "img01.png"
    relabelled = np.full((SIZE, SIZE, 1), 2, np.uint8)
    write_png(mask, relabelled)
    after = split_counts(data, "train", config, tmp_path / "cache")
    assert after.pixels[2] == before.pixels[2] + SIZE * SIZE  # image 1 had no dot: all of it now
    write_png(mask, np.full((SIZE, SIZE, 1), 7, np.uint8))  # now a label beyond the classes
    with pytest.raises(ValueError, match=r"img01.png\) has label 7"):
        split_counts(data, "train", config, tmp_path / "cache")


def test_an_image_edited_in_place_is_read_again_and_named_when_unreadable(tmp_path):
    from seglab.data.counting import split_counts

    root = make_folder(tmp_path / "data", count=4, sub="train")
    make_folder(tmp_path / "data", count=2, sub="val")
    data = folder(str(root), ["bg", "stripe", "dot"], SIZE)
    config = {"root": str(root)}
    split_counts(data, "train", config, tmp_path / "cache")
    (root / "train" / "images" / "img02.png").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match=r"^cannot read .*train/images/img02.png: not a PNG"):
        split_counts(data, "train", config, tmp_path / "cache")


def test_the_evaluation_pass_names_an_unreadable_image(tmp_path):
    from seglab.training.prediction import per_image_counts

    root = make_folder(tmp_path, count=5, sub="train")
    make_folder(tmp_path, count=3, sub="val")
    data = folder(str(root), ["bg", "stripe", "dot"], SIZE)
    (root / "val" / "images" / "img01.png").write_bytes(b"")
    model = tf.keras.Sequential([tf.keras.Input((SIZE, SIZE, 3)), tf.keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"^cannot read .*val/images/img01.png: an empty file$"):
        per_image_counts(model, data.val, 3, 255, batch_size=2, files=data.files["val"])
