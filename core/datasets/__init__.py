"""Datasets and what a model is trained from.

Classes (workspace-wide), datasets and their membership, each dataset's label space (ordered
classes), train/val/test splits and the checks on them, frozen versions, the health check and
exports."""
