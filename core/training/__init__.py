"""Training: runs (create, queue, cancel, resume, the job body), the read-side views of runs and
models, the model registry, confidence thresholds, and the budgeted hyperparameter search."""
