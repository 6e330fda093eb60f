"""Compress requests, their checks, and queueing a compression as a new child run (no TensorFlow unless asked).

A compression never changes the run it starts from: it makes a new run whose parent is that run,
whose first job is a `compress` job (the store's `MODEL_JOBS`), and whose folder ends up like any
trained run's (model, config, data report, test predictions), so every page works on it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from engine import store
from engine.config import MODEL_NAMES, ConfigError, ModelConfig, RunConfig
from engine.runfolder import RunFolder
from engine.store import Run, Workspace

COMPRESS_JOB = "compress"
METHODS = ("distill", "prune")
SCHEDULES = ("polynomial",)
DEFAULT_TEMPERATURE = 4.0
DEFAULT_ALPHA = 0.1
DEFAULT_EPOCHS = 5
DEFAULT_SPARSITY = 0.75


class CompressError(ValueError):
    """The compression cannot start (bad option, unfinished or incompatible run); the message says why."""


@dataclass(frozen=True)
class CompressRequest:
    """How to compress a run.

    Args:
        method: `distill` (train a smaller student on the run's teacher) or `prune` (magnitude pruning
            while fine-tuning the run's own model).
        student: for `distill`, the student model as SPEC: an architecture with optional settings,
            e.g. `lenet5`, `resnet:width=8,depth=1`.
        teacher: for `distill`, the run whose model teaches (default: the run itself).
        temperature: softening of the teacher's and student's probabilities, above 0 and at most 100.
            Default 4.
        alpha: weight of the hard-label loss (the distillation loss gets 1 - alpha), 0 to 1. Default 0.1.
        sparsity: for `prune`, the share of each prunable kernel set to zero, strictly between 0 and 1.
            Default 0.75.
        schedule: for `prune`, how sparsity rises during fine-tuning: `polynomial` (tfmot's
            PolynomialDecay, power 3). Default `polynomial`.
        epochs: training epochs of the student, or fine-tuning epochs of the pruned model, 1 to 1,000.
            Default 5.
        learning_rate: for `prune`, the fine-tuning learning rate; 0 means a tenth of the run's. Default 0.
    """

    method: str = "distill"
    student: str = "lenet5"
    teacher: str = ""
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA
    sparsity: float = DEFAULT_SPARSITY
    schedule: str = "polynomial"
    epochs: int = DEFAULT_EPOCHS
    learning_rate: float = 0.0

    def validate(self) -> CompressRequest:
        if self.method not in METHODS:
            raise CompressError(f"method={self.method!r}: choose from {', '.join(METHODS)}")
        if not isinstance(self.epochs, int) or not 1 <= self.epochs <= 1000:
            raise CompressError(f"epochs={self.epochs!r}: expected a whole number from 1 to 1,000")
        if self.method == "distill":
            student_config(self.student)
            if not 0 < float(self.temperature) <= 100:
                raise CompressError(f"temperature={self.temperature!r}: expected a number above 0, at most 100")
            if not 0 <= float(self.alpha) <= 1:
                raise CompressError(f"alpha={self.alpha!r}: expected a number from 0 to 1")
        else:
            if not 0 < float(self.sparsity) < 1:
                raise CompressError(f"sparsity={self.sparsity!r}: expected a share strictly between 0 and 1 "
                                    "(e.g. 0.75 zeroes three weights in four)")
            if self.schedule not in SCHEDULES:
                raise CompressError(f"schedule={self.schedule!r}: choose from {', '.join(SCHEDULES)}")
            if not 0 <= float(self.learning_rate) <= 10:
                raise CompressError(f"learning_rate={self.learning_rate!r}: expected 0 (a tenth of the run's) to 10")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CompressRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CompressError(f"{unknown[0]}: not a compress option (expected {', '.join(sorted(known))})")
        return cls(**values).validate()

    def describe(self) -> str:
        """A short label: `distilled into lenet5 (T=4, α=0.1)` or `pruned to 75% (polynomial)`."""
        if self.method == "distill":
            return f"distilled into {self.student} (T={self.temperature:g}, α={self.alpha:g})"
        return f"pruned to {self.sparsity:.0%} ({self.schedule})"


def student_config(spec: str) -> ModelConfig:
    """The student's model config from SPEC, `NAME[:key=value,...]`, e.g. `resnet:width=8,depth=1`.

    Raises:
        CompressError: an unknown architecture or setting, or a bad value (the message names it).
    """
    name, _, rest = str(spec).strip().partition(":")
    if name not in MODEL_NAMES:
        raise CompressError(f"student={spec!r}: the architecture must be one of {', '.join(MODEL_NAMES)}")
    values: dict = {"name": name}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq:
            raise CompressError(f"student={spec!r}: {item!r} is not key=value")
        values[key.strip()] = _number(raw.strip())
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(values) - known)
    if bad:
        raise CompressError(f"student={spec!r}: {bad[0]!r} is not a model setting ({', '.join(sorted(known))})")
    try:
        config = ModelConfig(**values)
        config.validate()
    except (ConfigError, TypeError) as error:
        raise CompressError(f"student={spec!r}: {error}") from None
    return config


def _number(raw: str):
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def child_config(parent: RunConfig, request: CompressRequest) -> RunConfig:
    """The child run's config: the parent's data, augmentation and training, with the student's model
    (distill) and the request's epochs."""
    model = dataclasses.asdict(student_config(request.student)) if request.method == "distill" else {}
    name = f"{parent.name or parent.model.name} · {request.describe()}"[:200]
    return parent.replace(name=name, model=model, train={"epochs": request.epochs, "early_stopping": 0})


def check_compressible(workspace: Workspace, run_id: str, request: CompressRequest, *,
                       measure_student: bool = True) -> Run:
    """Raises CompressError unless `run_id` (and its teacher) can be compressed with `request`.

    Args:
        workspace: the workspace.
        run_id: the run to compress (its data and split are the child's).
        request: the validated request.
        measure_student: build the student (imports TensorFlow) to check it is smaller than the
            teacher. The dashboard passes False; the job checks again before it trains.

    Returns:
        The run.
    """
    request.validate()
    run = _finished_with_model(workspace, run_id)
    if request.method == "prune":
        return run
    teacher = _finished_with_model(workspace, request.teacher) if request.teacher else run
    check_teacher(workspace, run, teacher)
    if measure_student:
        check_student_size(student_params(run, request), teacher)
    return run


def check_teacher(workspace: Workspace, run: Run, teacher: Run) -> None:
    """The teacher must know the run's classes, in the same order, at the same image size."""
    if teacher.id == run.id:
        return
    ours, theirs = RunFolder(workspace, run.id).class_names(), RunFolder(workspace, teacher.id).class_names()
    if list(ours) != list(theirs):
        raise CompressError(f"teacher {teacher.id} was trained on other classes ({_names(theirs)}) than run "
                            f"{run.id} ({_names(ours)}): a teacher must predict the student's classes")
    size, teacher_size = run.config.data.image_size, teacher.config.data.image_size
    if size != teacher_size:
        raise CompressError(f"teacher {teacher.id} takes {teacher_size}x{teacher_size} images, run {run.id} "
                            f"{size}x{size}: pick a teacher trained at the same image size")


def student_params(run: Run, request: CompressRequest) -> int:
    """The student's parameter count, from building it (imports TensorFlow)."""
    from engine.models import make_model

    size, classes = run.config.data.image_size, run.num_classes or 2
    return int(make_model(student_config(request.student), (size, size, 3), classes).count_params())


def check_student_size(params: int, teacher: Run) -> None:
    if teacher.params is not None and params >= teacher.params:
        raise CompressError(f"the student has {params:,} parameters, not fewer than the teacher's "
                            f"{teacher.params:,} (run {teacher.id}): pick a smaller student, e.g. a lower width")


def request_compress(workspace: Workspace, run_id: str, request: CompressRequest, *,
                     measure_student: bool = True) -> Run:
    """Queues a compression of `run_id` as a new child run and starts it if a slot is free.

    Returns:
        The child run (status `queued` or `running`). Raises CompressError for bad input; then
        nothing is queued.
    """
    from engine import jobs

    parent = check_compressible(workspace, run_id, request, measure_student=measure_student)
    child = workspace.create_run(child_config(parent.config, request), parent_id=parent.id, kind=COMPRESS_JOB,
                                 request_json=json.dumps(request.to_dict()))
    jobs.refresh(workspace)
    return workspace.get_run(child.id)


def read_compress_report(workspace: Workspace, run_id: str) -> dict | None:
    """The compress report of a child run (`compress_report.json`), or None for a run that was not compressed."""
    return RunFolder(workspace, run_id).compress_report()


def _finished_with_model(workspace: Workspace, run_id: str) -> Run:
    run = workspace.get_run(run_id)
    if run.status != store.COMPLETED:
        raise CompressError(f"run {run_id} is {run.status}: only a completed run can be compressed")
    folder = RunFolder(workspace, run_id)
    for path in (folder.model_file, folder.predictions_file):
        if not path.is_file():
            raise CompressError(f"run {run_id} has no {path.name}: nothing to compress (train it again)")
    return run


def _names(names) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (f" … {len(names)} in all" if len(names) > 5 else "")
