"""Machine learning for classification, over timm: the model table (families), TrainingConfig and
augmentation presets (config, augment), manifest data (data), losses, metrics, the training loop
(trainer), one run from manifest to files (pipeline), exports (export) and the Predictor (inference).

Modules that need torch import it where they are used by training only (losses, trainer, pipeline,
export); the rest defer it, so the app and the CLI start without loading torch.
"""

FINISHING_MESSAGE = "final evaluation, export and checks"
"""A training job's message between its last epoch and the model's upload: the run page shows it as its
own phase (core.training.views), not as a finished "training" bar."""
