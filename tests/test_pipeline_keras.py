"""The Keras loader's TF decoding (cnnspec/data/tf_images.py) against Pillow's, which the
torch loader and `--workers 0` use: the same rows in the same order, pixels within one grey
level (1/255), identical where no resize happens to a PNG or JPEG; files TF cannot decode
go to Pillow; the ops run on uint8 give what they give on float."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

from cnnspec.data import DataError, index, parse_ops, tf_images, write_shapes
from cnnspec.data.augmentation import augment_batch
from cnnspec.data.loading import keras_batches

LEVEL = 1 / 255 + 1e-6  # one grey level, the most the two decoders differ by


def _picture(rng, height: int, width: int) -> np.ndarray:
    """Smooth colour with sharp rows: both kinds of content a decoder and a filter meet."""
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    x = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))
    x = x.copy()
    x[::5] = rng.integers(0, 256, size=x[::5].shape, dtype=np.uint8)
    return x


MODES = ("RGB", "L", "RGBA", "P", "LA", "I;16")


def write_folder(root, n=18, seed=0, same_size=None, modes=MODES) -> None:
    """root/<class>/<i>.<jpg|png> in every mode Pillow writes for those formats."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (same_size, same_size) if same_size else rng.integers(9, 60, size=2)
        image = Image.fromarray(_picture(rng, int(h), int(w)))
        mode = modes[i % len(modes)]
        jpeg = i % 2 == 0 and mode in ("RGB", "L")
        if mode == "I;16":
            grey = np.asarray(image.convert("L"), np.uint16) * 257 + rng.integers(0, 257)
            image = Image.fromarray(grey.astype(np.uint16))
        elif mode != "RGB":
            image = image.convert(mode)
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i:03d}.{'jpg' if jpeg else 'png'}", quality=85)


def epoch(samples, workers: int, ops=None, batch_size: int = 4, train: bool = True):
    return list(
        keras_batches(samples, batch_size, train=train, seed=3, epoch=1, ops=ops, workers=workers)
    )


def assert_close(tf_run, pillow_run, tolerance: float = LEVEL) -> None:
    assert [len(b["x"]) for b in tf_run] == [len(b["x"]) for b in pillow_run]
    for a, b in zip(tf_run, pillow_run):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            if key == "x":
                assert np.abs(a[key] - b[key]).max() <= tolerance
            else:
                assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("size", [(24, 24), (40, 16)])
def test_tf_decoding_is_pillows_to_one_grey_level(tmp_path, channels, size):
    write_folder(tmp_path)
    samples = index(str(tmp_path), (*size, channels), "classify")
    assert tf_images.decodable(samples)
    assert_close(epoch(samples, 2), epoch(samples, 0))


def test_8_bit_files_at_the_input_size_decode_exactly_as_pillow(tmp_path):
    # (a 16-bit PNG differs by one level: TF keeps the high byte, Pillow rounds)
    write_folder(tmp_path, same_size=32, modes=MODES[:-1])
    for channels in (3, 1):
        samples = index(str(tmp_path), (32, 32, channels), "classify")
        assert_close(epoch(samples, 2), epoch(samples, 0), tolerance=0.0)


@pytest.mark.parametrize(
    "words, scale",
    [
        (["flip", "crop 3", "vflip"], 1.0),  # on uint8, then float32 in TF
        (["flip", "crop 3", "vflip", "normalize 0.5 0.25"], 4.0),  # and float32 in numpy
    ],
)
def test_augmented_batches_keep_the_draws_of_the_pillow_path(tmp_path, words, scale):
    write_folder(tmp_path, n=13)
    samples = index(str(tmp_path), (20, 20, 3), "classify")
    ops = parse_ops(words)
    runs = epoch(samples, 3, ops), epoch(samples, 0, ops)
    assert [len(b["x"]) for b in runs[0]] == [4, 4, 4, 1]
    assert_close(*runs, tolerance=LEVEL * scale)
    evaluation = epoch(samples, 2, ops, train=False), epoch(samples, 0, ops, train=False)
    assert_close(*evaluation, tolerance=LEVEL * scale)


@pytest.mark.parametrize("words", [["flip"], ["vflip"], ["crop 3"], ["crop 5", "vflip", "flip"]])
def test_pixel_moving_ops_in_tf_are_augment_batchs_bit_for_bit(tmp_path, words):
    # TF moves the pixels (tf_images._moved) with the draws augment_batch makes from the
    # same (seed, epoch, rows) generator: at the file's own size nothing may differ
    write_folder(tmp_path, n=21, same_size=24, modes=MODES[:-1])
    samples = index(str(tmp_path), (24, 24, 3), "classify")
    ops = parse_ops(words)
    tf_run, pillow_run = epoch(samples, 2, ops, batch_size=8), epoch(samples, 0, ops, batch_size=8)
    assert_close(tf_run, pillow_run, tolerance=0.0)
    plain = epoch(samples, 0, batch_size=8)
    moved = [
        not np.array_equal(a, b)
        for ours, before in zip(tf_run, plain)
        for a, b in zip(ours["x"], before["x"])
    ]
    assert 0 < sum(moved) and (words != ["flip"] or sum(moved) < len(moved))  # drawn, per image


@pytest.mark.parametrize("task", ["detect", "objects"])  # one box, or every object's
def test_boxes_move_with_the_pixels_as_on_the_pillow_path(tmp_path, task):
    write_shapes(tmp_path, "coco", n=10, size=24, seed=2)
    samples = index(str(tmp_path), (24, 24, 3), task)
    assert tf_images.decodable(samples)
    assert samples.boxes is not None if task == "detect" else samples.objects is not None
    ops = parse_ops(["flip", "crop 6"])
    assert_close(epoch(samples, 2, ops), epoch(samples, 0, ops), tolerance=0.0)


@pytest.mark.parametrize("op", tf_images.PIXEL_MOVING)
def test_each_pixel_moving_op_gives_on_uint8_what_it_gives_on_float(op):
    x = np.random.default_rng(0).integers(0, 256, size=(8, 10, 12, 3), dtype=np.uint8)
    boxes = np.tile(np.array([[0.1, 0.2, 0.6, 0.9]], np.float32), (8, 1))
    ops = parse_ops([op if op != "crop" else "crop 4"])
    on_uint8 = augment_batch({"x": x, "boxes": boxes}, ops, np.random.default_rng(5))
    on_float = augment_batch({"x": x / np.float32(255)}, ops, np.random.default_rng(5))
    assert on_uint8["x"].dtype == np.uint8
    assert np.array_equal(on_uint8["x"] / np.float32(255), on_float["x"])


def test_a_file_tf_cannot_decode_is_read_by_pillow(tmp_path):
    write_folder(tmp_path, n=9, same_size=16, modes=MODES[:-1])
    rng = np.random.default_rng(1)
    # TF refuses a BMP named .png (Pillow reads it) and converts a CMYK JPEG as Pillow does
    Image.fromarray(_picture(rng, 16, 16)).save(tmp_path / "c0" / "bmp.png", format="BMP")
    Image.fromarray(_picture(rng, 16, 16)).convert("CMYK").save(tmp_path / "c1" / "cmyk.jpg")
    samples = index(str(tmp_path), (16, 16, 3), "classify")
    tf_run, pillow_run = epoch(samples, 2, batch_size=2), epoch(samples, 0, batch_size=2)
    assert sum(len(b["x"]) for b in tf_run) == len(samples) == 11
    assert_close(tf_run, pillow_run, tolerance=0.0)


def test_a_broken_file_is_named(tmp_path):
    write_folder(tmp_path, n=9)
    broken = tmp_path / "c1" / "004.png"
    broken.write_bytes(broken.read_bytes()[:40])
    samples = index(str(tmp_path), (16, 16, 3), "classify")
    with pytest.raises(DataError, match="004.png"):
        epoch(samples, 2)


def test_masks_and_formats_tf_lacks_stay_with_pillow(tmp_path):
    write_folder(tmp_path, n=6)
    assert tf_images.decodable(index(str(tmp_path), (16, 16, 3), "classify"))
    Image.new("RGB", (9, 9)).save(tmp_path / "c0" / "extra.tif")
    assert not tf_images.decodable(index(str(tmp_path), (16, 16, 3), "classify"))
