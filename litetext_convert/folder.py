"""The converted folder: the files litetext writes into it, its parity records, and the ONE parity
verdict (passed / first failure) that the report, the card, convert-all and push all read.

A folder keeps one parity record per (scope, dtype, prompt set), under parity/, so a float64 run and
a run on real prompts do not overwrite each other and push certifies all of them, not the last one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from litetext_convert.errors import LitetextError

if TYPE_CHECKING:
    from litetext_convert.plan.prepare import Prepared

CONVERSION_RECORD = "conversion_record.json"
PARITY_DIR = "parity"
LEGACY_PARITY_RECORD = "parity_record.json"  # one record per folder (litetext 0.1 before records per run): still read
PARITY_RECORD = LEGACY_PARITY_RECORD  # kept for code that names the old file
CARD = "README.md"
DEFAULT_PROMPT_SET = "default"  # seeded token ids, no user prompts
SOURCE_MEMO = ".litetext/source.json"  # hidden: never published (a local path stays on this machine)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    first_failure: str | None  # a stage name, "tokenizer" or "detector"; None when passed

    def to_json(self) -> dict:
        return {"passed": self.passed, "first_failure": self.first_failure}


def verdict(record: dict) -> Verdict:
    """Passed only when every text stage, the tokenizer check, every detector stage and the tracker passed, and the
    record itself does not say otherwise. The first failure is the first stage, in data-flow order."""
    text_failure = next((s.get("name", "?") for s in record.get("stages") or [] if not s.get("passed", False)), None)
    tokenizer = record.get("tokenizer")
    tokenizer_failure = "tokenizer" if tokenizer is not None and not tokenizer.get("equal", False) else None
    detector = record.get("detector")
    detector_failure = None
    if detector:
        detector_failure = next((s.get("name", "?") for s in detector.get("stages") or [] if not s.get("passed", False)), None)
        if detector_failure is None and not detector.get("passed", False):
            detector_failure = "detector"
    tracker = record.get("tracker")  # a video folder's tracker scope (parity/tracker.py)
    tracker_failure = None
    if tracker and not tracker.get("passed", False):
        tracker_failure = f"tracker:{tracker.get('first_failure') or '?'}"
    failure = text_failure or tokenizer_failure or detector_failure or tracker_failure
    if failure is None and record.get("passed") is False:
        failure = "unknown (the record says the check failed)"
    return Verdict(failure is None, failure)


def failing_stages(record: dict) -> list[str]:
    stages = list(record.get("stages") or []) + list((record.get("detector") or {}).get("stages") or [])
    return [s.get("name", "?") for s in stages if not s.get("passed", False)]


def prompt_set(prompts: list[str]) -> str:
    """A short, stable name for the prompts a run used: `default`, or `prompts-<8 hex>`."""
    if not prompts:
        return DEFAULT_PROMPT_SET
    return "prompts-" + hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:8]


def tracker_dtype(record: dict) -> str | None:
    """The dtype the record's tracker part ran in (always float64 today, whatever the text dtype); None
    without a tracker part. Records written before `tracker_dtype` existed carry it inside `tracker`."""
    tracker = record.get("tracker")
    return record.get("tracker_dtype") or (tracker.get("dtype") if isinstance(tracker, dict) else None)


def record_key(record: dict) -> str:
    """<scope>-<dtype>-<prompt set>, with the dtype that ran: a tracker record is keyed by the tracker's
    dtype, and `all` on a video folder names both (`all-float32-tracker-float64-default`)."""
    scope, dtype = record.get("scope", "text"), record.get("dtype", "float32")
    prompts = record.get("prompt_set", DEFAULT_PROMPT_SET)
    tracker = tracker_dtype(record)
    if tracker and scope == "tracker":
        return f"tracker-{tracker}-{prompts}"
    if tracker and tracker != dtype:
        return f"{scope}-{dtype}-tracker-{tracker}-{prompts}"
    return f"{scope}-{dtype}-{prompts}"


def dtype_label(record: dict) -> str:
    """What ran, for a reader: `float32`, or `float32 (tracker float64)`."""
    dtype, tracker = record.get("dtype", "float32"), tracker_dtype(record)
    return f"{dtype} (tracker {tracker})" if tracker and tracker != dtype else str(dtype)


def _legacy_key(record: dict) -> str:
    """The key before records said the tracker's dtype: the text dtype only."""
    return f"{record.get('scope', 'text')}-{record.get('dtype', 'float32')}-{record.get('prompt_set', DEFAULT_PROMPT_SET)}"


def write_parity_record(folder: Path, record: dict) -> Path:
    """parity/<key>.json (record_key): a rerun of the same check replaces its own record only, including the
    one an older litetext kept under the text dtype's key for the same tracker check."""
    directory = Path(folder) / PARITY_DIR
    directory.mkdir(exist_ok=True)
    key = record_key(record)
    path = directory / f"{key}.json"
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    legacy = directory / f"{_legacy_key(record)}.json"
    if legacy != path and legacy.is_file() and not legacy.is_symlink() and _superseded(legacy, key):
        legacy.unlink()
    return path


def _superseded(path: Path, key: str) -> bool:
    """The file is litetext's own record of the same check under the old key (its content keys to `key`)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return (isinstance(old, dict) and old.get("key", path.stem) == path.stem and "tracker_dtype" not in old
            and record_key(old) == key)


def read_parity_records(folder: Path) -> list[dict]:
    """Every parity record of the folder, sorted by key; each carries its file name under `file`.

    Raises ValueError (with the file name) for a record that is not valid JSON."""
    folder = Path(folder)
    paths = sorted((folder / PARITY_DIR).glob("*.json")) if (folder / PARITY_DIR).is_dir() else []
    if (folder / LEGACY_PARITY_RECORD).is_file():
        paths.append(folder / LEGACY_PARITY_RECORD)
    records = []
    for path in paths:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if isinstance(record, dict):
            records.append({**record, "file": path.relative_to(folder).as_posix()})
    return records


def folder_problem(records: list[dict], context_length: int) -> str | None:
    """Why the folder does not count as verified, or None. Required: at least one record on the default
    inputs, and every record on file passing for this folder's context (a failure anywhere refuses)."""
    if not records:
        return "no parity record: parity against the original was never checked"
    for record in records:
        found = verdict(record)
        if not found.passed:
            stages = failing_stages(record)
            detail = f" (failing stages: {', '.join(stages)})" if stages else ""
            return f"the parity record {record.get('file', '')} says the check failed{detail}".replace("  ", " ")
        recorded_context = (record.get("inputs") or {}).get("context_length")
        if recorded_context is not None and recorded_context != context_length:
            # A record left over from another conversion in the same folder vouches for nothing here.
            return f"the parity record {record.get('file', '')} is for context {recorded_context}, the folder holds context {context_length}"
    if not any(record.get("prompt_set", DEFAULT_PROMPT_SET) == DEFAULT_PROMPT_SET for record in records):
        return "no parity record on the default inputs (only runs on custom prompts): run `litetext parity FOLDER`"
    return None


# ----------------------------------------------------------------------------------------------
# Where a folder came from (convert writes it; parity FOLDER reads it)


def remember_source(folder: Path, checkpoint: str, prepared: Prepared, *, num_heads: int | None, context_length: int | None) -> None:
    """What `parity FOLDER` needs to find the checkpoint this folder came from, without -c."""
    resolved = prepared.resolved
    if resolved.repo_id:
        reference = f"{resolved.repo_id}:{resolved.filename}"
    else:
        reference = str(Path(resolved.path).resolve())
    memo = {"checkpoint": reference, "revision": resolved.revision, "num_heads": num_heads, "context_length": context_length}
    path = Path(folder) / SOURCE_MEMO
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(memo, indent=2) + "\n")


def folder_source(folder: Path) -> dict:
    """The checkpoint a converted folder was made from: the hidden memo, else the conversion record's Hub source."""
    folder = Path(folder)
    memo = folder / SOURCE_MEMO
    if memo.is_file():
        try:
            return json.loads(memo.read_text())
        except json.JSONDecodeError:
            pass
    record_path = folder / CONVERSION_RECORD
    if record_path.is_file():
        try:
            source = json.loads(record_path.read_text()).get("source") or {}
        except json.JSONDecodeError:
            source = {}
        if source.get("repo_id") and source.get("filename"):
            return {"checkpoint": f"{source['repo_id']}:{source['filename']}", "revision": source.get("revision")}
    raise LitetextError(
        f"{folder} does not record the checkpoint it was converted from", hint="pass -c with the checkpoint"
    )
