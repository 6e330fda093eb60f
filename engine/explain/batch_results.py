"""What a batch of explained mistakes stores: a row per mistake with each method's map, a summary per method.

`explanations/mistakes.json` holds one `MistakeExplanations` (`to_dict`); `batch.load_mistakes`
reads it back. Plain dataclasses: NumPy only, for the means.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from engine.explain.methods import method_label


@dataclass(frozen=True)
class MethodResult:
    """One method's map of one mistake: its cost, faithfulness, and files (relative to the run folder)."""

    method: str
    seconds: float
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    map: str  # `(H, W)` float32 .npy
    overlay: str  # the map over the image, PNG
    params: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return method_label(self.method)

    @property
    def faithfulness_score(self) -> float:
        """How much the map beats random on both curves (as `Explanation.faithfulness_score`)."""
        return (self.random_deletion_auc - self.deletion_auc) + (self.insertion_auc - self.random_insertion_auc)

    @property
    def beats_random(self) -> bool:
        """True when the map beats a random pixel order over both curves together (score above 0)."""
        return self.faithfulness_score > 0


@dataclass(frozen=True)
class ExplainedMistake:
    """One explained mistake: which test image, what it is and what the model said, and each method's map."""

    rank: int  # 1 = the most confident mistake
    position: int  # into the run's test predictions
    id: str  # the sample id (the Explain page opens it as `?run=RUN&image=ID`)
    index: int  # into the run's dataset
    true: int
    true_name: str
    predicted: int  # the class explained: what the model (wrongly) said
    predicted_name: str
    confidence: float  # the probability of the predicted class
    true_probability: float
    image: str  # the image as the model saw it, PNG (relative to the run folder)
    methods: dict[str, MethodResult]


@dataclass(frozen=True)
class MethodSummary:
    """One method over the batch: mean cost and faithfulness, and how often it beats a random order."""

    method: str
    images: int
    mean_seconds: float
    mean_deletion_auc: float
    mean_random_deletion_auc: float
    mean_insertion_auc: float
    mean_random_insertion_auc: float
    mean_faithfulness_score: float
    beats_random_share: float  # share of images whose map beats random over both curves together
    beats_random_deletion_share: float
    beats_random_insertion_share: float

    @property
    def label(self) -> str:
        return method_label(self.method)


@dataclass(frozen=True)
class MistakeExplanations:
    """A stored batch: the explained mistakes, most confident first, and a summary per method.

    `complete` is False when the job was cancelled part-way (`rows` then holds the images done).
    """

    run_id: str
    job_id: str | None
    folder: str  # relative to the run folder
    created_at: float
    seconds: float
    complete: bool
    requested: int
    mistakes: int  # the run's mistakes on its test set
    test_images: int
    methods: list[str]
    params: dict
    class_names: list[str]
    model_mtime: float | None
    rows: list[ExplainedMistake]
    summary: dict[str, MethodSummary]
    warm_up_seconds: float = 0.0  # the methods' one-off start in the job's process, kept out of their seconds

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MistakeExplanations:
        rows = [ExplainedMistake(**{**row, "methods": {m: MethodResult(**r) for m, r in row["methods"].items()}})
                for row in values["rows"]]
        summary = {m: MethodSummary(**s) for m, s in values["summary"].items()}
        return cls(**{**values, "rows": rows, "summary": summary})


def summarize(rows: list[ExplainedMistake], methods: list[str]) -> dict[str, MethodSummary]:
    """Per method: mean seconds and AUCs (with their random baselines) and the shares that beat random."""
    out = {}
    for method in methods:
        results = [row.methods[method] for row in rows if method in row.methods]
        if not results:
            continue

        def mean(values) -> float:
            return float(np.mean(list(values)))

        out[method] = MethodSummary(
            method=method, images=len(results), mean_seconds=mean(r.seconds for r in results),
            mean_deletion_auc=mean(r.deletion_auc for r in results),
            mean_random_deletion_auc=mean(r.random_deletion_auc for r in results),
            mean_insertion_auc=mean(r.insertion_auc for r in results),
            mean_random_insertion_auc=mean(r.random_insertion_auc for r in results),
            mean_faithfulness_score=mean(r.faithfulness_score for r in results),
            beats_random_share=mean(r.beats_random for r in results),
            beats_random_deletion_share=mean(r.deletion_auc < r.random_deletion_auc for r in results),
            beats_random_insertion_share=mean(r.insertion_auc > r.random_insertion_auc for r in results))
    return out
