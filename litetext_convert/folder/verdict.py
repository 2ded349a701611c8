"""THE verdict: one function for a parity record's result, one for a folder's.

`record_verdict` reads a record's measurements only: every text stage, the tokenizer check, the
detector's stages, the tracker, and the precision exactness (the bit-exact tensor check, and for a
reduced dtype the same-dtype and float64-with-rounded-weights stages). Its `first_failure` is the
first failing check in data-flow order. Parity writes it into the record; the report, the plot and
`--json` show it from there.

`folder_verdict` decides whether a folder counts as verified: every file under parity/ is a valid
record, each still bound to the folder's files (folder/content.py) and passing by `record_verdict`
(recomputed, never the record's own word), each for this folder's context, a reduced-dtype folder
proven exact in its dtype, and at least one record on the default inputs. The card, push, demo and
convert-all's summary read it; nothing else decides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from litetext_convert.folder.content import binding_problem
from litetext_convert.folder.names import DEFAULT_PROMPT_SET, PARITY_DIR
from litetext_convert.folder.records import ONNX_TARGET, ConversionRecord, InvalidRecord, ParityRecord
from litetext_convert import dtypes

TENSORS_FAILURE = "tensors (not the cast source, bit for bit)"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    first_failure: str | None  # a stage name, "tokenizer", "detector", "tracker:...", "tensors (...)"; None when passed

    def to_json(self) -> dict:
        return {"passed": self.passed, "first_failure": self.first_failure}


def _first_failing(stages: object) -> str | None:
    return next((s.get("name", "?") for s in stages or [] if isinstance(s, Mapping) and not s.get("passed", False)), None)


def record_verdict(record: Mapping) -> Verdict:
    """Passed only when every check the record carries passed; the first failure in data-flow order."""
    failure = _first_failing(record.get("stages"))
    tokenizer = record.get("tokenizer")
    if failure is None and tokenizer is not None and not tokenizer.get("equal", False):
        failure = "tokenizer"
    detector = record.get("detector")
    if failure is None and detector:
        failure = _first_failing(detector.get("stages")) or (None if detector.get("passed", False) else "detector")
    tracker = record.get("tracker")
    if failure is None and tracker and not tracker.get("passed", False):
        failure = f"tracker:{tracker.get('first_failure') or '?'}"
    if failure is None and record.get("target") == ONNX_TARGET:
        failure = None if ((record.get("onnx") or {}).get("exactness") or {}).get("passed") is True else "onnx exactness"
    elif failure is None:
        failure = _precision_failure(record.get("precision"))
    return Verdict(failure is None, failure)


def _precision_failure(precision: Mapping | None) -> str | None:
    if not precision:
        return None
    exactness = precision.get("exactness") or {}
    if not (exactness.get("tensors") or {}).get("passed", False):
        return TENSORS_FAILURE
    if precision.get("reduced"):
        rounded = _first_failing(exactness.get("rounded_weights_float64"))
        if rounded:
            return rounded
        if not (exactness.get("same_dtype") or {}).get("passed", False):
            return f"same dtype ({precision.get('dtype')})"
    if not exactness.get("passed", False):
        return "exactness"
    return None


@dataclass(frozen=True)
class FolderVerdict:
    passed: bool
    problem: str | None  # one sentence: why the folder does not count as verified
    first_failure: str | None = None  # the failing record's first failure, when a record failed
    failed_record: str | None = None  # a record that fails for this folder (exit 1); None: a missing or untrusted proof (exit 2)


PASSED = FolderVerdict(True, None)


def folder_verdict(folder: Path, conversion: ConversionRecord, records: list[ParityRecord],
                   invalid: list[InvalidRecord]) -> FolderVerdict:
    """Whether the folder counts as verified, and the first reason it does not."""
    if invalid:
        return FolderVerdict(False, f"{invalid[0].why}; it never counts as a proof")
    if not records:
        return FolderVerdict(False, "no parity record: parity against the original was never checked")
    for record in records:
        problem = binding_problem(folder, conversion, record.binding, record.file)
        if problem:
            return FolderVerdict(False, f"{problem}: re-run `litetext parity FOLDER`")
    for record in records:
        found = record_verdict(record.data)
        if not found.passed:
            return FolderVerdict(False, f"the parity record {record.file} says the check failed at {found.first_failure}",
                                 found.first_failure, record.file)
        if record.get("passed") is not True:
            return FolderVerdict(False, f"{record.file} says it failed, but its checks all pass: it was edited")
        if record.context_length != conversion.context_length:
            # A record left over from another conversion in the same folder vouches for nothing here.
            return FolderVerdict(False, f"the parity record {record.file} is for context {record.context_length}, "
                                 f"the folder holds context {conversion.context_length}", None, record.file)
        if (record.get("target") == ONNX_TARGET) != (conversion.target == ONNX_TARGET):
            # An ONNX record proves graphs, not safetensors weights (and the other way round).
            return FolderVerdict(False, f"the parity record {record.file} is for a {record.get('target') or 'transformers'} "
                                 f"folder, this folder is {conversion.target}", None, record.file)
        problem = precision_problem(conversion, record)
        if problem:
            return FolderVerdict(False, problem)
    if not any(record.prompt_set == DEFAULT_PROMPT_SET for record in records):
        return FolderVerdict(False, "no parity record on the default inputs (only runs on custom prompts): run `litetext parity FOLDER`")
    return PASSED


def precision_problem(conversion: ConversionRecord, record: ParityRecord) -> str | None:
    """A reduced-dtype folder counts only through records that prove exactness in that dtype."""
    held = conversion.dtype
    if not held or not dtypes.is_reduced(held):
        return None
    held = dtypes.canonical(held)
    precision = record.get("precision") or {}
    if record.get("dtype") != held or precision.get("dtype") != held:
        return f"the folder holds {held} but its parity record {record.file} does not prove {held} exactness (re-run parity)"
    return None


def records_dir_problem(folder: Path) -> str | None:
    """parity/ must be a real folder: a link there is never read as the folder's records."""
    path = Path(folder) / PARITY_DIR
    return f"{PARITY_DIR}/ is a symbolic link; litetext never reads or writes records through it" if path.is_symlink() else None
