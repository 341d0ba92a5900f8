"""Masks as users really have them: 1-bit, palette, EXIF-turned, nested, huge, colour without a
table. Each case asserts the labels read (literal counts) or the one-line refusal naming the file,
and that nothing the user wrote was changed."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_train
from mlflow.tracking import MlflowClient
from PIL import Image

from seglab.data.counting import class_counts
from seglab.data.datasets.folder import folder
from seglab.data.decode import mask_array, read_header
from seglab.train import run

H, W = 16, 24  # not square: a quarter turn shows


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def palette_png(indices: np.ndarray, palette: list[list[int]]) -> bytes:
    """An 8-bit palette PNG written byte by byte: Pillow would shrink the bit depth to the
    palette and so could not store an index past the palette, which real files do."""
    height, width = indices.shape
    rows = b"".join(b"\0" + bytes(row) for row in indices.astype(np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"PLTE", bytes(np.array(palette, np.uint8).ravel()))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def stripes(i: int) -> np.ndarray:
    """Mask i: columns 0..i are class 1 (``(i + 1) * H`` pixels), the rest class 0."""
    labels = np.zeros((H, W), np.uint8)
    labels[:, : i + 1] = 1
    return labels


def pairs(root: Path, count: int, write_mask, sub: str = "") -> Path:
    for i in range(count):
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / sub / f"{i}.png")
        write_mask(root / "masks" / sub / f"{i}.png", i)
    return root


def counted(root: Path, **kwargs) -> np.ndarray:
    data = folder(str(root), **{"class_names": ["bg", "fg"], "val_fraction": 0.25, **kwargs})
    counts = [class_counts(data.stream(s), 2, data.ignore_index) for s in data.splits]
    return sum(c.pixels for c in counts)


def test_one_bit_masks_read_as_zero_and_one(tmp_path):
    root = pairs(tmp_path, 4, lambda path, i: Image.fromarray(stripes(i).astype(bool)).save(path))
    assert Image.open(root / "masks" / "0.png").mode == "1"  # what Pillow writes for bool
    fg = H * (1 + 2 + 3 + 4)
    np.testing.assert_array_equal(counted(root, image_size=[H, W]), [4 * H * W - fg, fg])


def test_palette_masks_read_as_their_indices_with_the_voc_border_ignored(tmp_path):
    def write(path, i):
        labels = stripes(i)
        labels[0] = 255  # Pascal VOC's border colour index
        path.write_bytes(palette_png(labels, [[0, 0, 0], [128, 0, 0]] + [[224, 224, 192]] * 254))

    root = pairs(tmp_path, 4, write)
    fg = (H - 1) * (1 + 2 + 3 + 4)
    np.testing.assert_array_equal(counted(root, image_size=[H, W]), [4 * (H - 1) * W - fg, fg])


def test_a_palette_index_past_the_palette_is_refused_naming_the_file(tmp_path):
    labels = stripes(1)
    labels[3, 5] = 7
    path = tmp_path / "m.png"
    path.write_bytes(palette_png(labels, [[0, 0, 0], [255, 0, 0], [0, 255, 0]]))
    from seglab.data.colors import ColorTable

    table = ColorTable([[0, 0, 0], [255, 0, 0]], None, 255)
    with pytest.raises(ValueError) as refused:
        mask_array(path, table)
    assert str(refused.value) == (
        f"mask {path} has palette index 7 (first at row 3, column 5) past its 3-colour palette"
    )
    np.testing.assert_array_equal(mask_array(path)[3, 4:7], [0, 7, 0])  # as indices: label 7


def test_several_ignore_colours_all_become_the_ignore_index(tmp_path):
    colors = np.array([[0, 0, 0], [200, 0, 0], [9, 9, 9], [250, 250, 250]], np.uint8)

    def write(path, i):
        labels = stripes(i)
        labels[0], labels[1] = 2, 3  # two void colours
        Image.fromarray(colors[labels]).save(path)

    root = pairs(tmp_path, 4, write)
    fg = (H - 2) * (1 + 2 + 3 + 4)
    got = counted(
        root,
        image_size=[H, W],
        colors=colors[:2].tolist(),
        ignore_color=colors[2:].tolist(),
        ignore_index=99,
    )
    np.testing.assert_array_equal(got, [4 * (H - 2) * W - fg, fg])


def exif_jpeg(path: Path, displayed: np.ndarray, orientation: int = 6) -> None:
    """A JPEG stored turned a quarter, whose EXIF orientation 6 turns it back to ``displayed``."""
    stored = np.rot90(displayed, k=1)  # orientation 6 shows the stored image turned clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)


def test_the_exif_orientation_is_applied_so_masks_drawn_on_the_displayed_image_fit(tmp_path):
    for i in range(4):
        labels = stripes(i + 4)
        displayed = np.where(labels[..., None] == 1, 250, 5).astype(np.uint8).repeat(3, axis=-1)
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        exif_jpeg(tmp_path / "images" / f"{i}.jpg", displayed)
        Image.fromarray(labels).save(tmp_path / "masks" / f"{i}.png")
    header = read_header(tmp_path / "images" / "0.jpg")
    assert (header.size, header.orientation) == ((H, W), 6)
    data = folder(str(tmp_path), ["bg", "fg"], [H, W], val_fraction=0.25)
    for image, mask in data.train.as_numpy_iterator():
        bright = image[..., 0] > 0.5
        assert (bright == (mask == 1)).mean() > 0.97  # the object is where its mask is


def test_a_mask_drawn_on_the_stored_image_is_refused_naming_the_orientation(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        exif_jpeg(tmp_path / "images" / f"{i}.jpg", np.zeros((H, W, 3), np.uint8))
        Image.fromarray(np.zeros((W, H), np.uint8)).save(tmp_path / "masks" / f"{i}.png")
    with pytest.raises(ValueError) as refused:
        folder(str(tmp_path), ["bg", "fg"], [H, W], val_fraction=0.34)
    assert str(refused.value) == (
        f"image {tmp_path}/images/0.jpg is {H}x{W} (EXIF orientation 6: stored {W}x{H}) but its "
        f"mask {tmp_path}/masks/0.png is {W}x{H}"
    )


def test_two_images_of_one_name_are_refused_naming_both(tmp_path):
    root = pairs(tmp_path, 3, lambda path, i: Image.fromarray(stripes(i)).save(path))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "images" / "1.jpg")
    with pytest.raises(ValueError) as refused:
        folder(str(root), ["bg", "fg"], [H, W])
    assert str(refused.value) == (
        f"{root}/images/1.jpg and {root}/images/1.png are two images named '1': keep one (which "
        "one to read would be a guess)"
    )


def test_pairs_in_sub_folders_are_read_and_counted_per_split(tmp_path, capsys):
    def write(path, i):
        Image.fromarray(stripes(i)).save(path)

    for sub in ("", "day", "night/rain"):
        pairs(tmp_path, 3, write, sub)
    (tmp_path / "images" / "._0.png").write_bytes(b"\0\5\26\7")  # macOS resource fork: skipped
    data = folder(str(tmp_path), ["bg", "fg"], [H, W], val_fraction=0.34)
    assert (data.num_train, data.num_val) == (6, 3)
    stems = sorted(
        Path(image).relative_to(tmp_path / "images").as_posix()
        for image, _ in (data.files["train"] + data.files["val"])
    )
    assert stems == [f"{sub}{i}.png" for sub in ("", "day/", "night/rain/") for i in range(3)]
    assert f"[data] {tmp_path}: train 6, val 3 image/mask pairs;" in capsys.readouterr().out


def test_a_file_past_the_pixel_limit_is_refused_before_it_is_decoded(tmp_path):
    # A 20000 x 20000 grey PNG header over a few bytes of pixels: decoding would need 400 MB.
    rows = zlib.compress(b"\0" * 64)
    huge = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
    root = pairs(tmp_path, 3, lambda path, i: Image.fromarray(stripes(i)).save(path))
    (root / "images" / "1.png").write_bytes(huge)
    with pytest.raises(ValueError) as refused:
        folder(str(root), ["bg", "fg"], [H, W])
    assert str(refused.value) == (
        f"{root}/images/1.png has 400,000,000 pixels (20000x20000), more than "
        "data.max_pixels=40,000,000; shrink the file or raise data.max_pixels"
    )
    with pytest.raises(ValueError, match=r"0.png has 384 pixels \(16x24\), more than data"):
        folder(str(root), ["bg", "fg"], [H, W], max_pixels=H * W - 1)


@pytest.mark.parametrize(
    ("sizes", "max_side", "expected"),
    [
        ([(96, 128)] * 3, 256, (96, 128)),
        ([(360, 480)] * 2 + [(480, 360)], 256, (192, 256)),  # the most common size decides
        ([(100, 300)] * 3, 160, (48, 160)),  # 53.3 -> 48: a multiple of 16
        ([(20, 20)] * 3, 256, (16, 16)),
    ],
)
def test_image_size_null_keeps_the_data_aspect(tmp_path, capsys, sizes, max_side, expected):
    for i, (height, width) in enumerate(sizes):
        for kind in ("images", "masks"):
            (tmp_path / kind).mkdir(exist_ok=True)
        Image.fromarray(np.zeros((height, width), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(tmp_path / "masks" / f"{i}.png")
    data = folder(str(tmp_path), ["bg", "fg"], val_fraction=0.34, max_side=max_side)
    assert data.image_shape == (*expected, 3)
    assert (
        f"resized to {expected[0]}x{expected[1]} (data.image_size=null" in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("classes_yaml", "expected"),
    [
        ("classes: [bg, fg]\nignore_index: null\n", 255),
        ("classes: [bg, fg]\n", 255),
        ("classes: [bg, fg]\nignore_index: 7\n", 7),
        ("classes: [bg, fg]\nignore_index: yes\n", "must be a whole number such as 255, got True"),
        (
            "classes: [bg, fg]\nignore_index: '255'\n",
            "must be a whole number such as 255, got '255'",
        ),
        ("classes: [off, on]\n", "False is not a class name \\(YAML reads off, on, no"),
    ],
)
def test_classes_yaml_ignore_index_and_names_are_checked_naming_the_file(
    tmp_path, classes_yaml, expected
):
    root = pairs(tmp_path, 3, lambda path, i: Image.fromarray(stripes(i)).save(path))
    (root / "classes.yaml").write_text(classes_yaml)
    if isinstance(expected, int):
        assert folder(str(root), image_size=[H, W], val_fraction=0.34).ignore_index == expected
    else:
        with pytest.raises(ValueError, match=rf"in {root}/classes.yaml.*{expected}"):
            folder(str(root), image_size=[H, W], val_fraction=0.34)


def smoke(tmp_path: Path, root: Path, *overrides: str):
    return compose_train(
        "debug=smoke",
        "trainer.epochs=1",
        "data=folder",
        f"data.root={root}",
        "data.class_names=[bg,fg]",
        "data.val_fraction=0.25",
        f"paths.output_dir={tmp_path / 'out'}",
        *overrides,
    )


def runs(tmp_path: Path) -> list:
    client = MlflowClient(f"sqlite:///{tmp_path}/out/mlflow.db")
    experiment = client.get_experiment_by_name("seglab")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def test_a_one_bit_run_learns_its_foreground_and_a_bad_palette_creates_no_run(tmp_path):
    one_bit = pairs(
        tmp_path / "one_bit", 8, lambda path, i: Image.fromarray(stripes(i).astype(bool)).save(path)
    )
    run(smoke(tmp_path, one_bit, f"data.image_size=[{H},{W}]"))
    (finished,) = runs(tmp_path)
    assert finished.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path}/out/mlflow.db")
    logged = pd.read_csv(client.download_artifacts(finished.info.run_id, "class_weights.csv"))
    train = folder(str(one_bit), ["bg", "fg"], val_fraction=0.25).files["train"]
    fg = H * sum(int(Path(image).stem) + 1 for image, _ in train)
    assert logged.train_pixels.tolist() == [len(train) * H * W - fg, fg]
    assert "val/iou/fg" in finished.data.metrics
    run_id = finished.info.run_id
    pairs(one_bit / "added", 1, lambda path, i: Image.fromarray(stripes(i)).save(path))
    for source in ("images", "masks"):  # one more pair: the data differ from the run's
        (one_bit / "added" / source / "0.png").rename(one_bit / source / "8.png")
    again = (f"data.image_size=[{H},{W}]", "trainer.epochs=2", f"resume={run_id}")
    with pytest.raises(ValueError, match=rf"resume='{run_id}': the run was started with other "):
        run(smoke(tmp_path, one_bit, *again))
    client.delete_run(run_id)
    with pytest.raises(ValueError, match=rf"resume='{run_id}': the run is deleted at sqlite"):
        run(smoke(tmp_path, one_bit, *again))
    client.restore_run(run_id)
    assert client.get_run(run_id).info.status == "FINISHED"  # both left it as it was
    bad = tmp_path / "palette"
    written = {}

    def write(path, i):
        labels = stripes(i)
        labels[2, 2] = 9 if i == 3 else 1
        path.write_bytes(palette_png(labels, [[0, 0, 0], [255, 0, 0]]))
        written[path] = path.read_bytes()

    pairs(bad, 8, write)
    with pytest.raises(ValueError) as refused:
        run(smoke(tmp_path, bad, "data.colors=[[0,0,0],[255,0,0]]"))
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"mask {bad}/masks/3.png has palette index 9")
    assert [r.info.run_id for r in runs(tmp_path)] == [finished.info.run_id]  # no new run
    assert all(path.read_bytes() == data for path, data in written.items())


def test_a_png_header_is_read_without_its_pixels(tmp_path):
    file = tmp_path / "deep.png"
    Image.fromarray(np.zeros((3, 5), np.uint16)).save(file)
    header = read_header(file)
    assert (header.size, header.mode, header.bit_depth, header.orientation) == (
        (3, 5),
        "I;16",
        16,
        1,
    )


def test_a_split_with_no_labelled_pixel_is_refused_before_any_run(tmp_path):
    def write(path, i):
        labels = stripes(i) if "train" in str(path) else np.full((H, W), 255, np.uint8)
        Image.fromarray(labels).save(path)

    for split in ("train", "val"):
        pairs(tmp_path / "data" / split, 4, write)
    with pytest.raises(ValueError) as refused:
        run(smoke(tmp_path, tmp_path / "data", f"data.image_size=[{H},{W}]"))
    assert str(refused.value) == (
        "the val split has no labelled pixel: all 4 masks hold only ignore_index=255; check "
        "data.ignore_index and the masks (1-bit or palette masks, say, read as something else)"
    )
    assert runs(tmp_path) == []
