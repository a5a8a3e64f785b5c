"""Typed results (core floor): what parity checks, exporters and stages return.

- :class:`ParityRecord` — how closely an artefact's outputs follow its parent's on real inputs; made only by
  :func:`edgevit.formats.parity.check_parity`.
- :class:`ExportResult` — what every exporter returns: the written :class:`~edgevit.artifact.Artifact`, its
  :class:`ParityRecord` (None when the check was skipped), the wall time and the library versions, plus the
  format-specific fields. :meth:`ExportResult.to_dict` gives the JSON record that ``--json`` and ``record.json``
  have always carried (same keys).
- :class:`StageOutput` — what a stage returns to the pipeline: the artefact after it, its metrics and any extra
  record fields.

Nothing here imports torch or a backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .artifact import Artifact

# the parity summary keys an export record carries at its top level (None when parity was skipped)
PARITY_SUMMARY_KEYS = ("max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement", "n")


@dataclass
class ParityRecord:
    """A comparison of ``n`` candidate output rows with their reference rows.

    - ``max_abs_diff`` / ``mean_abs_diff``: largest and mean absolute difference of the outputs (logit units);
    - ``cosine``: mean per-sample cosine similarity of the two output vectors (in [-1, 1]);
    - ``top1_agreement``: fraction of samples (in [0, 1]) whose arg-max class is the same (None when the outputs
      are features, not class logits);
    - ``n``: number of samples compared;
    - ``tolerance``: bound on ``max_abs_diff`` (None: not checked); ``min_top1``: lower bound on
      ``top1_agreement`` (None: not checked);
    - ``what``: the comparison's name; ``reference_max_abs``: max |reference output|; ``passed``: every bound held (tolerance, ``min_top1``, and ``extra["min_cosine"]`` on ``cosine``);
    - ``extra``: further JSON-able fields (``precision``, ``min_cosine``, reference/candidate accuracy, ...).
    """

    max_abs_diff: float
    mean_abs_diff: float
    cosine: float
    top1_agreement: float | None
    n: int
    tolerance: float | None
    min_top1: float | None = None
    what: str = ""
    reference_max_abs: float | None = None
    passed: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (keys as parity records have always had them, then ``extra``)."""
        return {"what": self.what, "n": self.n, "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff,
                "cosine": self.cosine, "top1_agreement": self.top1_agreement,
                "reference_max_abs": self.reference_max_abs, "tolerance": self.tolerance, "min_top1": self.min_top1,
                "passed": self.passed, **self.extra}

    def summary(self) -> dict[str, Any]:
        """``{max_abs_diff, mean_abs_diff, cosine, top1_agreement, n}``: the keys an export record lifts to its top."""
        return {k: getattr(self, k) for k in PARITY_SUMMARY_KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParityRecord:
        """Rebuild a record written by :meth:`to_dict` (unknown keys go to ``extra``)."""
        known = ("what", "n", "max_abs_diff", "mean_abs_diff", "cosine", "top1_agreement", "reference_max_abs",
                 "tolerance", "min_top1", "passed")
        return cls(max_abs_diff=d["max_abs_diff"], mean_abs_diff=d["mean_abs_diff"], cosine=d["cosine"],
                   top1_agreement=d["top1_agreement"], n=d["n"], tolerance=d.get("tolerance"),
                   min_top1=d.get("min_top1"), what=d.get("what", ""), reference_max_abs=d.get("reference_max_abs"),
                   passed=d.get("passed", True), extra={k: v for k, v in d.items() if k not in known})


@dataclass
class ExportResult:
    """What an exporter returns.

    - ``artifact``: the written artefact (kind, input spec, path, source, task);
    - ``parity``: the artefact vs its parent on real inputs, or None when the check was skipped (``parity=False``)
      or the format checks several pairs (those sit in ``fields``, e.g. ``parity_vs_onnx``);
    - ``seconds``: wall time of the whole export, in seconds;
    - ``versions``: library versions (:func:`edgevit.versions.library_versions`);
    - ``fields``: the format-specific record fields (``opset``, ``precision``, ``file_size``, ...), in record order.

    :meth:`to_dict` is the JSON record of ``edgevit export ... --json`` and of the export stages' ``record.json``
    (scripts written against the dicts exporters used to return call it: ``result.to_dict()["path"]``).
    """

    artifact: Artifact
    parity: ParityRecord | None
    seconds: float
    versions: dict[str, str]
    fields: dict[str, Any] = field(default_factory=dict)
    time_key: str = "time_s"  # the record key that carries ``seconds``

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: ``fields`` with the parity summary keys, ``parity``, ``versions`` and the time filled in
        from the typed attributes (keys that ``fields`` already holds keep their place)."""
        out = dict(self.fields)
        if self.parity is not None:
            if "parity" in out:
                out["parity"] = self.parity.to_dict()
            out.update(self.parity.summary())
        out["versions"] = self.versions
        out[self.time_key] = round(self.seconds, 3)
        return out

    @property
    def path(self):
        """The artefact's main file (``artifact.path``)."""
        return self.artifact.path


@dataclass
class StageOutput:
    """What a stage's ``run`` returns: the artefact after it (the same one for measuring stages), its metrics
    (JSON-able; they become ``record.json``'s ``metrics``), extra top-level record fields, and ``parity``: the
    new artefact checked against its parent (written as the record's top-level ``parity``; the run report lists
    every stage record that has one as an export)."""

    artifact: Artifact
    metrics: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    parity: ParityRecord | None = None

    @classmethod
    def from_export(cls, result: ExportResult, **extra_metrics: Any) -> StageOutput:
        """The output of an export stage: the exporter's artefact, its record as metrics (plus ``extra_metrics``)
        and its parity."""
        return cls(result.artifact, {**result.to_dict(), **extra_metrics}, parity=result.parity)

    @property
    def extra(self) -> dict[str, Any]:
        """Alias of ``record`` (the name earlier stages used)."""
        return self.record
