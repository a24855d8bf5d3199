"""Object detection foundations: box arithmetic, COCO evaluation and post-processing.

    boxes        box formats (xyxy, COCO's xywh, cxcywh), IoU / GIoU matrices, clipping,
                 validity checks; numpy only
    objects      Truth (ground truth of one image) and Detections (what a detector keeps)
    evaluate     COCO mAP with pycocotools, from numpy arrays, for both backends
    priors       where a dense head predicts (anchors, points, strides) and the one layout of
                 its output, (batch, priors, 4 + classes + extra), for both backends
    postprocess  decoding of raw box outputs and class-aware NMS with the frameworks' own
                 kernels (torchvision.ops.batched_nms, tf.image.combined_non_max_suppression)
    assign       which object each prior learns (FCOS centre sampling, RetinaNet IoU
                 matching) on padded batches, for both backends' losses (train/dense_*)
    reading      a head's raw output to boxes, scores and the detections kept (Settings)

Nothing here imports torch or TensorFlow at import time: postprocess imports the framework
a call names, when it is called.
"""
