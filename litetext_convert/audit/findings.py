"""What an audit says: findings, each with what it affects, its cause, its fix and, once the
behaviour level has run, its measured cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LEVELS = ("tensor", "config", "tokenizer", "behaviour", "usage")


@dataclass
class Finding:
    level: str  # one of LEVELS
    kind: str  # short class: "transposed", "rows kept", "dtype changed", "different", "missing", "extra", ...
    subjects: list[str]  # tensor keys, config fields, tokenizer settings
    affects: str  # which outputs, in words
    cause: str
    fix: str
    deviates: bool = True  # False: no effect on what the folder computes (listed for completeness)
    recipe: str | None = None  # id of the usage recipe the behaviour level can apply (None: re-convert only)
    detail: str = ""
    cost: dict[str, float] = field(default_factory=dict)  # stage -> max abs difference caused by this finding alone

    @property
    def subject(self) -> str:
        shown = ", ".join(self.subjects[:2])
        return shown + (f" (+{len(self.subjects) - 2} more)" if len(self.subjects) > 2 else "")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AuditResult:
    target: str
    folder: str
    checkpoint: str
    original: dict
    context_length: int
    findings: list[Finding]
    tensors: dict  # counts per class, dropped source parts
    behaviour: dict | None
    detector: dict | None = None  # whole-detector parity, as stored and with the recipe (optional)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def deviations(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.deviates]

    @property
    def passed(self) -> bool:
        behaviour_ok = self.behaviour is None or self.behaviour["as_stored_passed"]
        detector_ok = self.detector is None or self.detector["passed"]
        return not self.deviations and behaviour_ok and detector_ok

    def to_json(self) -> dict:
        return {
            "passed": self.passed,
            "target": self.target,
            "folder": self.folder,
            "checkpoint": self.checkpoint,
            "original": self.original,
            "context_length": self.context_length,
            "deviations": len(self.deviations),
            "findings": [finding.to_json() for finding in self.findings],
            "tensors": self.tensors,
            "behaviour": self.behaviour,
            "detector": self.detector,
            "notes": self.notes,
            "seconds": self.seconds,
        }
