"""The closed sets of values the schema's columns take (each is a CHECK constraint in core.models),
for every layer to use by name: pages list them in selectors, services validate against them."""

IMAGE_SOURCES = ("upload", "url_import", "products_import", "cutouts_import", "od_import", "dataset_import")
"""How an image came into the library (cls_images.source)."""

IMAGE_STATUSES = ("pending", "labeled", "review", "completed", "skipped")
"""An image's labeling status, in the library and in each dataset."""

TRAINING_SPLITS = ("train", "val", "test")
"""The splits a model is trained, tuned and measured on."""

SPLITS = (*TRAINING_SPLITS, "unassigned")
"""Every split a dataset image can be in."""

TASK_TYPES = ("single_label", "multi_label")
MODEL_TYPES = ("vit", "convnext", "efficientnet", "swin", "dinov2", "clip", "resnet")
"""Model families (core/ml/families.py maps each family and size to a timm name)."""

RUN_STATUSES = ("pending", "preparing", "queued", "training", "completed", "failed", "cancelled")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_QUEUES = ("imports", "training", "predictions")
"""RQ queues: imports on CPU workers, training and predictions on GPU workers."""

PRODUCT_IMAGE_TYPES = ("synthetic", "real", "augmented")
