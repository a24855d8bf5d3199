"""Pixel conversions: reading image files, resizing and changing channel count."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnspec.data import DataError

# ITU-R 601 luma, the weights Pillow's convert("L") uses, so a grey network sees the
# same values whether the grey conversion happened in a file or here.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_SIXTEEN_BIT = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_GREY = ("1", "L", "LA", "La")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """Convert the last axis to `channels`: 1 -> 3 repeats, 3 -> 1 takes luma, 4 drops alpha."""
    have = x.shape[-1]
    if have == 4:
        x, have = x[..., :3], 3
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and channels == 1:
        return (x @ LUMA)[..., None].astype(np.float32)
    raise DataError(
        f"cannot convert images with {have} channels to {channels}",
        hint="networks must take 1 (grey) or 3 (RGB) input channels",
    )


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) or (H, W, C) float images to size=(H, W)."""
    if x.shape[-3:-1] == tuple(size):
        return x
    if x.ndim == 3:
        return _resize_one(x, size)
    return np.stack([_resize_one(image, size) for image in x]).astype(np.float32)


def _resize_one(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    # Pillow's "F" mode keeps float precision; its bilinear filter also antialiases
    # when shrinking, which plain numpy interpolation would not.
    height, width = size
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., c], dtype=np.float32)).resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) or (H, W) label maps (never blends classes)."""
    height, width = masks.shape[-2:]
    if (height, width) == tuple(size):
        return masks
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    return masks[..., rows[:, None], cols[None, :]]


def read_image(path: Path, size: tuple[int, int] | None = None, channels: int | None = None):
    """Read one image file as (H, W, C) float32 in [0, 1], optionally resized/converted."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            pixels = _pixels(img)
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... on bad files
        raise DataError(
            f"cannot read image {path}: {exc}",
            hint="the file is corrupt or not an image; re-export it as PNG/JPEG or remove it",
        ) from exc
    if 0 in pixels.shape[:2]:
        raise DataError(
            f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} pixels",
            hint="remove the empty image",
        )
    if channels is not None and size is not None:
        return fit_images(pixels, size, channels)
    if channels is not None:
        return to_channels(pixels, channels)
    return resize(pixels, size) if size is not None else pixels


def decode_image(path, size: tuple[int, int], channels: int, fit: str = "stretch") -> np.ndarray:
    """Read one image file as (H, W, C) uint8 at `size` with `channels`: what a worker
    decodes per sample. 8-bit images are converted and resized by Pillow in uint8 (as
    torchvision's ImageFolder + Resize do); 16-bit and float images go through the float
    path and are rounded to 8 bits. fit="letterbox" keeps the aspect ratio and pads
    (letterbox_frame). Errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            if img.size[0] == 0 or img.size[1] == 0:
                raise DataError(
                    f"image {path} is {img.size[0]}x{img.size[1]} pixels",
                    hint="remove the empty image",
                )
            if img.mode in _SIXTEEN_BIT or img.mode == "F":
                pixels = (
                    letterbox(to_channels(_pixels(img), channels), size)
                    if fit == "letterbox"
                    else fit_images(_pixels(img), size, channels)
                )
                return np.round(pixels * 255.0).astype(np.uint8)
            img = img.convert("L" if channels == 1 else "RGB")
            if fit == "letterbox":
                return letterbox(np.asarray(img, dtype=np.uint8), size)
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... on bad files
        raise DataError(
            f"cannot read image {path}: {exc}",
            hint="the file is corrupt or not an image; re-export it as PNG/JPEG or remove it",
        ) from exc
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _pixels(img) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT:
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        return np.clip(grey, 0.0, 1.0)[..., None]
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if img.mode in _GREY:
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_mask(path: Path) -> np.ndarray:
    """Read a label PNG (mode L, P or 16-bit) as an (H, W) int64 array of class indices."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode, labels = img.mode, np.asarray(img)
    except Exception as exc:  # see read_image
        raise DataError(f"cannot read mask {path}: {exc}", hint="masks must be PNG files") from exc
    if mode not in ("1", "L", "P", *_SIXTEEN_BIT):
        raise DataError(
            f"mask {path} is a colour image (mode {mode}), not class indices",
            hint="save masks as single-channel PNG (mode L or P) whose pixel value is the class",
        )
    return labels.astype(np.int64)


def read_images(paths: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """Images as NHWC float32 in [0, 1], resized to the network's input: what `cnnspec predict`
    reads (stretched; train/detections.read_object_images letterboxes where the spec says)."""
    from PIL import Image

    h, w, c = shape
    arrays = []
    for p in paths:
        try:  # Pillow refuses decompression bombs, truncated and non-image files here
            with Image.open(p) as img:
                img = img.convert("L" if c == 1 else "RGB")
                a = np.asarray(img, dtype=np.float32) / 255.0
        except Exception as exc:  # noqa: BLE001  Pillow raises OSError, ValueError, SyntaxError...
            raise DataError(
                f"cannot read image {p}: {exc}",
                hint="the file is corrupt, too large or not an image",
            ) from None
        a = a[..., None] if a.ndim == 2 else a
        arrays.append(a)
    out = []
    for a in arrays:
        a = resize(a[None], (h, w)) if a.shape[:2] != (h, w) else a[None]
        out.append(to_channels(a, c)[0])
    return np.stack(out).astype(np.float32)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file without decoding its pixels."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:  # see read_image
        raise DataError(f"cannot read image {path}: {exc}") from exc


def save_image(path: Path, pixels: np.ndarray) -> None:
    """Write (H, W, C) float [0, 1] pixels as an 8-bit image (format from the suffix)."""
    from PIL import Image

    data = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data).save(path)


def save_mask(path: Path, labels: np.ndarray) -> None:
    """Write an (H, W) label map as a mode-L PNG (class indices must be < 256)."""
    from PIL import Image

    Image.fromarray(labels.astype(np.uint8)).save(path)


def fit_images(x: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Resize (N, H, W, C) images to `size` and convert them to `channels`."""
    # Convert first when it removes channels and last when it adds them, so the
    # (slow, per-plane) resize touches as few planes as possible.
    if x.shape[-1] > channels:
        return resize(to_channels(x, channels), size)
    return to_channels(resize(x, size), channels)


# --- letterbox: the aspect ratio kept, the rest padded --------------------------------------
# YOLOv5/YOLOv8's fill, 114 of 255: a mid grey, close to the mean of natural images, so the
# padding reads as almost nothing once the pixels are standardised, where black (0) would be
# a strong edge along every border of every padded image. Mosaic fills its uncovered
# canvas with the same grey.
PAD_GREY = 114
FITS = ("stretch", "letterbox")


def letterbox_frame(width: int, height: int, size: tuple[int, int]) -> np.ndarray:
    """How an image of width x height pixels sits in a letterboxed input of size=(H, W):
    [sx, sy, left, top, width, height], so that input pixel = image pixel * s + (left, top).
    One scale r = min(H / height, W / width) for both axes; the resized image is
    round(width * r) x round(height * r) pixels, centred (the odd pixel of padding at the
    right/bottom), and sx, sy are the scales those whole-pixel sizes give, so mapping a box
    back (unfit_boxes) is the exact inverse of what the pixels went through.

    >>> letterbox_frame(640, 480, (96, 96)).tolist()
    [0.15, 0.15, 0.0, 12.0, 640.0, 480.0]
    """
    out_h, out_w = size
    r = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * r)), max(1, round(height * r))
    left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
    return np.array([new_w / width, new_h / height, left, top, width, height], np.float64)


def stretch_frame(width: int, height: int, size: tuple[int, int]) -> np.ndarray:
    """The frame (see letterbox_frame) of an image resized to size=(H, W) without keeping
    its aspect ratio: each axis its own scale, no padding."""
    return np.array([size[1] / width, size[0] / height, 0, 0, width, height], np.float64)


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w, C) uint8 or float [0, 1] pixels letterboxed to size=(H, W), same dtype: resized
    by Pillow (bilinear, as `resize`) to the frame's whole-pixel size, then padded with
    PAD_GREY."""
    from PIL import Image

    height, width = image.shape[:2]
    sx, sy, left, top = letterbox_frame(width, height, size)[:4]
    new_w, new_h = round(width * sx), round(height * sy)
    if image.dtype == np.uint8:
        planes = image[..., 0] if image.shape[-1] == 1 else image
        resized = np.asarray(
            Image.fromarray(planes).resize((new_w, new_h), Image.Resampling.BILINEAR)
        ).reshape(new_h, new_w, image.shape[-1])
        fill = PAD_GREY
    else:
        resized, fill = resize(image.astype(np.float32), (new_h, new_w)), PAD_GREY / 255.0
    left, top = int(left), int(top)
    pads = ((top, size[0] - new_h - top), (left, size[1] - new_w - left), (0, 0))
    return np.pad(resized, pads, constant_values=fill)


def unfit_boxes(boxes: np.ndarray, frame) -> np.ndarray:
    """(M, 4) xyxy boxes in input pixels mapped back to their image's own pixels (the
    inverse of the frame's scale and padding), clipped to the image, as YOLOv5's
    scale_boxes + clip_boxes do."""
    sx, sy, left, top, width, height = (float(v) for v in frame)
    out = (np.asarray(boxes, np.float64) - [left, top, left, top]) / [sx, sy, sx, sy]
    return np.clip(out, 0, [width, height, width, height]).astype(np.float32)


def fit_boxes(boxes: np.ndarray, frame) -> np.ndarray:
    """(M, 4) xyxy boxes in their image's pixels, in input pixels (the frame's forward map)."""
    sx, sy, left, top = (float(v) for v in frame[:4])
    return (np.asarray(boxes, np.float64) * [sx, sy, sx, sy] + [left, top, left, top]).astype(
        np.float32
    )
