"""cnnspec predict FILE --weights W IMAGE...: what the network says about images."""

from __future__ import annotations

import json
import sys

from ._common import EXIT_OK, EXIT_SPEC, EXIT_USAGE, load
from .train import add_device

NAME, HELP, ORDER = "predict", "run trained weights on image files", 62
DESCRIPTION = (
    "Classifiers print the top-k labels with probabilities; segmenters write a "
    "mask PNG per image (IMAGE.mask.png, or in --out; IMAGE.2.mask.png where two "
    "inputs share a name; an existing mask is kept unless --overwrite); "
    "detectors print the object probability and box (normalised and in pixels); "
    "dense detection heads print every object kept (class, score, box in the image's "
    "pixels) and write IMAGE.boxes.png with the boxes drawn (in --out if given)."
)


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", required=True, metavar="W")
    p.add_argument(
        "--backend", choices=("torch", "keras"), help="default: from the weights file's suffix"
    )
    add_device(p)
    p.add_argument("--top", type=int, default=5, help="classifiers: how many labels")
    p.add_argument("--classes", help="comma-separated class names, in output order")
    p.add_argument("--out", metavar="DIR", help="segmenters: folder for the mask PNGs")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="segmenters: replace mask files that exist (default: refuse)",
    )
    p.add_argument("--format", choices=("text", "json"), default="text")
    add_detection_settings(p)


def add_detection_settings(p, score_threshold: float = 0.25) -> None:
    """Dense detection heads: what inference keeps (detection.reading.Settings)."""
    p.add_argument("--score-threshold", type=float, default=score_threshold, metavar="S")
    p.add_argument("--iou-threshold", type=float, default=0.5, metavar="T")
    p.add_argument("--max-detections", type=int, default=100, metavar="N")
    p.add_argument(
        "--top-k",
        type=int,
        default=1000,
        metavar="N",
        help="dense detection heads: the best N candidates go on to NMS, per level for "
        "sigmoid scores and per class for softmax ones, as torchvision's topk_candidates; "
        "0: all (default 1000)",
    )


def top_k(args) -> int | None:
    return None if args.top_k == 0 else args.top_k


def detection_settings(args):
    """Settings from the arguments, or a ValueError naming the bad one."""
    from ..detection.reading import Settings

    return Settings(args.score_threshold, args.iou_threshold, args.max_detections, top_k(args))


def run(args) -> int:
    from .train import check_device, guarded

    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    if not check_device(args, "predict"):
        return EXIT_USAGE
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        settings = detection_settings(args)
    except ValueError as exc:
        print(f"cnnspec predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def work():
        from ..train.session import predict

        return predict(
            model,
            args.weights,
            args.images,
            args.backend,
            args.top,
            classes,
            args.out,
            args.device,
            args.overwrite,
            settings,
        )

    code, results = guarded(work, args.file, "predict")
    if code != EXIT_OK:
        return code
    if args.format == "json":
        print(json.dumps(results, indent=2))
        return EXIT_OK
    for item in results:
        print(item["image"])
        for t in item.get("top", []):
            print(f"  {t['label']:>12}  {t['probability']:.4f}")
        if "mask" in item:
            print(f"  mask {item['mask']}  classes {item['classes_present']}")
        if "present" in item:
            print(f"  present {item['present']:.4f}")
        for obj in item.get("detections", []):
            box = " ".join(f"{v:.1f}" for v in obj["box"])
            print(f"  {obj['class']:>12}  {obj['score']:.4f}  {box}")
        if "drawn" in item:
            print(f"  drawn {item['drawn']}")
        if "box" in item:
            print("  box " + " ".join(f"{v:.1f}" for v in item["box_pixels"]) + " (pixels)")
    return EXIT_OK
