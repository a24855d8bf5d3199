"""ONNX export of a network with a dense detection head, decoding included.

`Decoded` wraps the built torch network: its head output becomes boxes (xyxy input pixels,
clipped to the image) and per-class scores, as detection.reading decodes them, so that a
runtime needs no cnnspec. With `nms` (a reading.Settings), the candidates of
reading.candidates (its top-k: torch.topk, ONNX TopK) and class-aware NMS follow with
torchvision.ops.batched_nms (ONNX NonMaxSuppression), for one image per call: the outputs
are then the kept boxes (N, 4), scores (N,) and classes (N,), best first.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from cnnspec.detection.priors import HeadInfo
from cnnspec.detection.reading import Settings
from cnnspec.train.dense_torch import Decoder


class Decoded(torch.nn.Module):
    def __init__(
        self, net, head: HeadInfo, index: int, size: tuple[int, int], nms: Settings | None
    ):
        super().__init__()
        self.net, self.head, self.index, self.nms = net, head, index, nms
        self.size = size  # (height, width) of the input
        self.decoder = Decoder(head)

    def forward(self, x):
        out = self.net(x)
        out = out[self.index] if isinstance(out, (list, tuple)) else out
        if isinstance(out, dict):
            out = out[self.head.output]
        if out.dim() == 4:  # one level as a plain conv map, NCHW: the layout is NHWC's
            out = out.permute(0, 2, 3, 1)
        out = out.reshape(out.shape[0], -1, self.head.columns)
        height, width = self.size
        boxes = self.decoder(out[..., :4])
        boxes = torch.stack(
            [
                boxes[..., 0].clamp(0, width),
                boxes[..., 1].clamp(0, height),
                boxes[..., 2].clamp(0, width),
                boxes[..., 3].clamp(0, height),
            ],
            -1,
        )
        scores = self.scores(out)
        if self.nms is None:
            return boxes, scores
        return self.select(boxes[0], scores[0])

    def scores(self, out):
        """reading.scores_of in torch."""
        logits = out[..., 4 : 4 + self.head.classes]
        if self.head.activation == "softmax":
            return torch.softmax(logits, -1)[..., 1:]
        scores = torch.sigmoid(logits)
        if self.head.extra == "objectness":
            scores = scores * torch.sigmoid(out[..., -1:])
        elif self.head.extra == "centerness":
            scores = torch.sqrt(scores * torch.sigmoid(out[..., -1:]))
        return scores

    def candidates(self, scores):
        """reading.candidates for one image's (P, C) scores, without the threshold (select
        applies it): all but the top_k of each level (sigmoid heads) or class (softmax
        heads) set to 0. The top-k of all pairs above the threshold is the top-k of all
        pairs, cut at the threshold, so k and the sizes stay constants of the graph."""
        k = self.nms.top_k
        if k is None:
            return scores
        if self.head.activation == "softmax":
            return _top(scores, k, 0) if len(scores) > k else scores
        parts = []
        for start, end in self.head.geometry.level_spans():
            part = scores[start:end].flatten()
            parts.append((_top(part, k, 0) if len(part) > k else part).reshape(end - start, -1))
        return torch.cat(parts)

    def select(self, boxes, scores):
        """postprocess.select's torch path for one image: every (box, class) of the
        candidates above the threshold, class-aware NMS, the best max_detections."""
        scores = self.candidates(scores)
        where, label = torch.nonzero(scores > self.nms.score_threshold, as_tuple=True)
        found, confidence = boxes[where], scores[where, label]
        keep = batched_nms(found, confidence, label, self.nms.iou_threshold)
        keep = keep[: self.nms.max_detections]
        return found[keep], confidence[keep], label[keep]


def _top(scores, k: int, dim: int):
    """`scores` with all but the k largest along `dim` set to 0."""
    index = scores.topk(k, dim=dim).indices
    return scores * torch.zeros_like(scores).scatter(dim, index, 1.0)


def export_decoded(net, model, head: HeadInfo, path, nms: Settings | None = None, opset=17):
    """Write `net` with decoding (and NMS when `nms` is given) as ONNX, atomically."""
    from cnnspec.backends.torch.export import write_onnx

    index = list(model.outputs).index(head.output)
    wrapped = Decoded(net, head, index, tuple(model.input_shape[:2]), nms)
    names = ["boxes", "scores", "classes"] if nms else ["boxes", "scores"]
    axes = {"input": {0: "batch"}} if nms is None else {}
    axes.update({n: {0: "batch" if nms is None else "detections"} for n in names})
    write_onnx(wrapped, model, path, names, axes, opset)
