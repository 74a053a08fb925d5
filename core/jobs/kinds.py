"""One table of the background job kinds: what each runs (its entry point in the top-level `jobs/`
package), on which queue, and which hook marks its own rows failed when the job dies outside its
control (worker killed, its starter's role gone). Services start a job by kind; the cls_jobs row
records the function and queue too, so a row queued before a change still runs what it named."""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import InvalidInput
from core.vocabulary import JOB_QUEUES

DEFAULT_TIMEOUT_S = 7 * 24 * 3600
"""Long enough for a training run on a slow machine; the heartbeat, not this, detects dead workers."""


@dataclass(frozen=True)
class JobKind:
    function: str
    """Dotted path of the job function (a module of jobs/); it receives a JobContext and the actor."""
    queue: str
    on_failure: str | None = None
    """Dotted path of `hook(job_id, params, error)`, run when the job fails or its worker died."""
    timeout_s: int = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.queue not in JOB_QUEUES:
            raise InvalidInput(f"unknown queue {self.queue!r}; one of {', '.join(JOB_QUEUES)}")


_IMPORT_FAILED = "jobs.dataset_imports.on_job_failed"
_SEARCH_FAILED = "jobs.search.on_job_failed"

JOB_KINDS: dict[str, JobKind] = {
    "url_import": JobKind("jobs.imports.import_urls", "imports"),
    "dataset_import": JobKind("jobs.dataset_imports.import_archive", "imports", _IMPORT_FAILED),
    "products_import": JobKind("jobs.dataset_imports.import_source", "imports", _IMPORT_FAILED),
    "cutouts_import": JobKind("jobs.dataset_imports.import_source", "imports", _IMPORT_FAILED),
    "od_import": JobKind("jobs.dataset_imports.import_source", "imports", _IMPORT_FAILED),
    "demo_data": JobKind("jobs.demo.load_demo_data", "imports"),
    "duplicates": JobKind("jobs.duplicates.find_duplicates", "imports"),
    "dataset_export": JobKind("jobs.exports.export_dataset", "imports"),
    "training": JobKind("jobs.training.train_run", "training", "jobs.training.on_job_failed"),
    "search_trial": JobKind("jobs.search.search_trial", "training", _SEARCH_FAILED),
    "search_register": JobKind("jobs.search.register_best_trial", "training", _SEARCH_FAILED),
    "export_onnx": JobKind("jobs.model_exports.export_model_onnx", "predictions"),
    "batch_prediction": JobKind("jobs.predictions.batch_predict", "predictions"),
    "label_issues": JobKind("jobs.predictions.find_label_issues", "predictions"),
    "embeddings": JobKind("jobs.similarity.embed_library", "predictions"),
    "similarity_map": JobKind("jobs.similarity.project_index", "predictions"),
}


def job_kind(kind: str) -> JobKind:
    """The table's entry for `kind`, else InvalidInput naming the kinds there are."""
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise InvalidInput(f"unknown job kind {kind!r}; one of {', '.join(sorted(JOB_KINDS))}") from None
