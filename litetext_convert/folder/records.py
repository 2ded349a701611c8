"""The folder's records, typed: the conversion record, the parity records and the source memo.

Each has one reader (validating every field litetext reads, so a damaged, hand-written or wrong-typed
file is one RecordError naming it, never an internal error) and one writer (folder/safe_io's atomic
writer). A parity record's measurements stay a JSON object (`data`: stages, tolerances, the detector,
the tracker, the precision checks) for the report and the card to show; the fields the verdict and
the binding read are checked here, and `verdict.py` recomputes the verdict from them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litetext_convert.errors import LitetextError, printable
from litetext_convert.folder import safe_io
from litetext_convert.folder.names import (
    CONVERSION_RECORD,
    DEFAULT_PROMPT_SET,
    LEGACY_PARITY_RECORD,
    PARITY_DIR,
    RECORD_NAME,
    SOURCE_MEMO,
    TOOL_NAME,
)
from litetext_convert.folder.safe_io import RecordError

if TYPE_CHECKING:
    from litetext_convert.plan.prepare import Prepared

PARITY_SCHEMA = 2  # 2: the record names the files it verified, by sha256 (`verified`)
ONNX_TARGET = "onnx"  # a parity record of an ONNX folder proves its weights in record["onnx"], not "precision"


def _field(data: dict, name: str, kinds: type | tuple[type, ...], where: str, *, required: bool = True) -> Any:
    """data[name] when it has one of `kinds` (a bool is never an int here); one line naming the file otherwise."""
    if name not in data or data[name] is None:
        if required:
            raise RecordError(f"{where} has no '{name}'", hint="re-run litetext to write it again")
        return None
    value = data[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise RecordError(f"{where}: '{printable(name)}' is a {type(value).__name__}, not {' or '.join(k.__name__ for k in kinds)}")
    return value


# ----------------------------------------------------------------------------------------------
# The conversion record (written by write/convert.py)


@dataclass(frozen=True)
class ConversionRecord:
    data: dict
    sha256: str  # of the file's bytes: what a parity record names as the conversion it belongs to

    @property
    def variant(self) -> str:
        return str(self.data["variant"])

    @property
    def context_length(self) -> int:
        return int(self.data["context_length"])

    @property
    def source(self) -> dict:
        return self.data["source"]

    @property
    def dtype(self) -> str | None:
        return self.data.get("dtype")

    @property
    def files(self) -> list[str]:
        return list(self.data.get("files") or [])

    @property
    def family_id(self) -> str:
        """Records made before families existed are SAM3-LiteText."""
        return str((self.data.get("family") or {}).get("id", "sam3_litetext"))

    @property
    def target(self) -> str:
        """Records made before targets existed are image folders."""
        return str((self.data.get("target") or {}).get("name", "image"))


def read_conversion_record(folder: Path) -> ConversionRecord:
    path = Path(folder) / CONVERSION_RECORD
    if not path.exists() and not path.is_symlink():
        raise RecordError(
            f"{printable(folder)} is not a litetext-converted folder: {CONVERSION_RECORD} is missing",
            hint="convert a checkpoint first with `litetext convert`, or check a foreign folder with `litetext audit`",
        )
    raw = safe_io.read_bounded(path)
    data = safe_io.read_json_object(path)
    where = printable(path)
    tool = _field(data, "tool", dict, where)
    if tool.get("name") != TOOL_NAME:
        raise RecordError(f"{where} was not written by litetext")
    _field(data, "variant", str, where)
    if _field(data, "context_length", int, where) <= 0:
        raise RecordError(f"{where}: 'context_length' is not positive")
    source = _field(data, "source", dict, where)
    _field(source, "filename", str, f"{where} (source)")
    _field(source, "sha256", str, f"{where} (source)", required=False)
    _field(source, "bytes", int, f"{where} (source)", required=False)
    for name in ("repo_id", "revision", "license"):
        _field(source, name, str, f"{where} (source)", required=False)
    _field(data, "dtype", str, where, required=False)
    files = _field(data, "files", list, where, required=False) or []
    if not all(isinstance(name, str) for name in files):
        raise RecordError(f"{where}: 'files' holds something that is not a file name")
    for name in ("family", "target", "architecture", "keys", "tokenizer"):
        _field(data, name, dict, where, required=False)
    _check_tables(data, where)
    return ConversionRecord(data, hashlib.sha256(raw).hexdigest())


def _check_tables(data: dict, where: str) -> None:
    """The nested tables the card renders: architecture parts of {field: {value, source}}, dropped counts."""
    for part in ("text", "detector"):
        fields = _field(data.get("architecture") or {}, part, dict, f"{where} (architecture)", required=False) or {}
        if not all(isinstance(entry, dict) for entry in fields.values()):
            raise RecordError(f"{where}: architecture.{part} holds an entry that is not a table")
    _field(data.get("keys") or {}, "dropped", dict, f"{where} (keys)", required=False)


# ----------------------------------------------------------------------------------------------
# Parity records


@dataclass(frozen=True)
class ParityRecord:
    file: str  # relative to the folder, e.g. parity/text-float32-default.json
    data: dict

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    @property
    def prompt_set(self) -> str:
        return self.data.get("prompt_set") or DEFAULT_PROMPT_SET

    @property
    def context_length(self) -> int | None:
        return (self.data.get("inputs") or {}).get("context_length")

    @property
    def binding(self) -> dict | None:
        return self.data.get("verified")


@dataclass(frozen=True)
class InvalidRecord:
    """A file under parity/ that is not a parity record litetext wrote: never counts, always named."""

    file: str
    why: str


def _stages(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise RecordError(f"{where}: 'stages' is not a list")
    for stage in value:
        if not isinstance(stage, dict) or not isinstance(stage.get("name"), str) or not isinstance(stage.get("passed"), bool):
            raise RecordError(f"{where}: a stage without a name and a pass/fail")


def record_digest(data: dict) -> str:
    """sha256 of the record's canonical JSON without its own `digest`: an edit after writing shows.
    (Anyone can recompute it: it catches edits and damage, it does not sign.)"""
    body = {key: value for key, value in data.items() if key != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def check_parity_shape(data: dict, where: str) -> None:
    """The fields the verdict reads, with their types; raises RecordError naming `where`."""
    if not written_by_litetext(data) or data.get("schema") != PARITY_SCHEMA:
        again = f" --scope {data['scope']} --dtype {data['dtype']}" if isinstance(data.get("scope"), str) and isinstance(data.get("dtype"), str) else ""
        raise RecordError(f"{where} is not a parity record of this litetext (schema {PARITY_SCHEMA}, bound to the folder's files)",
                          hint=f"re-run `litetext parity FOLDER{again}` to replace it, or move it away")
    if data.get("digest") != record_digest(data):
        raise RecordError(f"{where} was changed after litetext wrote it (its digest does not match its content)")
    _stages(_field(data, "stages", list, where), where)
    if not data["stages"]:
        raise RecordError(f"{where} compares no stage")
    for name in ("scope", "dtype", "prompt_set"):
        _field(data, name, str, where)
    _field(data, "passed", bool, where)
    _field(data, "first_failure", str, where, required=False)
    _field(data, "original", dict, where, required=False)
    if not all(isinstance(note, str) for note in _field(data, "notes", list, where, required=False) or []):
        raise RecordError(f"{where}: 'notes' holds something that is not text")
    _field(_field(data, "inputs", dict, where), "context_length", int, where)
    tokenizer = _field(data, "tokenizer", dict, where, required=False)
    if tokenizer is not None:
        _field(tokenizer, "equal", bool, f"{where} (tokenizer)")
    for part in ("detector", "tracker"):
        found = _field(data, part, dict, where, required=False)
        if found is not None:
            _field(found, "passed", bool, f"{where} ({part})")
            if part == "detector":
                _stages(found.get("stages", []), f"{where} (detector)")
    if data.get("target") == ONNX_TARGET:  # the graphs' weights: exactness of every rung, in the onnx section
        _field(_field(_field(data, "onnx", dict, where), "exactness", dict, f"{where} (onnx)"), "passed", bool, f"{where} (onnx)")
    else:
        _check_precision(_field(data, "precision", dict, where), where)
    _check_binding(_field(data, "verified", dict, where), where)


def _check_precision(precision: dict, where: str) -> None:
    where = f"{where} (precision)"
    _field(precision, "dtype", str, where)
    _field(precision, "reduced", bool, where)
    exactness = _field(precision, "exactness", dict, where)
    _field(exactness, "passed", bool, where)
    _field(_field(exactness, "tensors", dict, where), "passed", bool, where)
    if precision["reduced"]:
        _stages(exactness.get("rounded_weights_float64"), where)
        _field(_field(exactness, "same_dtype", dict, where), "passed", bool, where)


def _check_binding(binding: dict, where: str) -> None:
    where = f"{where} (verified)"
    _field(binding, "conversion_record", str, where)
    files = _field(binding, "files", dict, where)
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise RecordError(f"{where}: the entry for {printable(name)} has no sha256 and size")


def parity_record_paths(folder: Path) -> list[str]:
    """parity/*.json and the legacy record, as relative names; a linked parity/ is not entered."""
    folder = Path(folder)
    names = []
    directory = folder / PARITY_DIR
    if directory.is_dir() and not directory.is_symlink():
        names = [f"{PARITY_DIR}/{p.name}" for p in sorted(directory.iterdir()) if p.name.endswith(".json")]
    if (folder / LEGACY_PARITY_RECORD).exists() or (folder / LEGACY_PARITY_RECORD).is_symlink():
        names.append(LEGACY_PARITY_RECORD)
    return names


def read_parity_records(folder: Path) -> tuple[list[ParityRecord], list[InvalidRecord]]:
    """Every parity record of the folder, sorted by file, and every file there that is not one."""
    valid, invalid = [], []
    for name in parity_record_paths(folder):
        try:
            data = safe_io.read_json_object(Path(folder) / name)
            check_parity_shape(data, name)
        except LitetextError as err:
            invalid.append(InvalidRecord(name, err.message))
            continue
        valid.append(ParityRecord(name, data))
    return valid, invalid


def written_by_litetext(data: dict) -> bool:
    """The mark litetext puts in every JSON file it writes: `tool.name`."""
    tool = data.get("tool")
    return isinstance(tool, dict) and tool.get("name") == TOOL_NAME


def _our_record(data: dict) -> bool:
    return written_by_litetext(data) or isinstance(data.get("key"), str)  # `key`: records before the mark


def write_parity_record(folder: Path, record: dict) -> Path:
    """parity/<key>.json: a rerun of the same check replaces its own record only, including the one an
    older litetext kept under the text dtype's key for the same tracker check."""
    key = record_key(record)
    if not RECORD_NAME.fullmatch(f"{key}.json"):
        raise LitetextError(f"internal: record key {key!r} is not a file name")
    ours = safe_io.is_litetext_json(_our_record)
    record = json.loads(json.dumps(record, default=str))  # what the file will hold, so the digest covers exactly that
    record["digest"] = record_digest(record)
    path = safe_io.write_inside(folder, f"{PARITY_DIR}/{key}.json", safe_io.json_bytes(record), ours=ours, what="parity record")
    legacy = f"{_legacy_key(record)}.json"
    if legacy != path.name:
        superseded = safe_io.is_litetext_json(lambda old: old.get("key", legacy[:-5]) == legacy[:-5]
                                              and "tracker_dtype" not in old and record_key(old) == key)
        safe_io.remove_inside(folder, f"{PARITY_DIR}/{legacy}", ours=superseded)
    return path


def _legacy_key(record: dict) -> str:
    """The key before records said the tracker's dtype: the text dtype only."""
    return f"{record.get('scope', 'text')}-{record.get('dtype', 'float32')}-{record.get('prompt_set', DEFAULT_PROMPT_SET)}"


# ----------------------------------------------------------------------------------------------
# Keys and labels


def prompt_set(prompts: list[str]) -> str:
    """A short, stable name for the prompts a run used: `default`, or `prompts-<8 hex>`."""
    if not prompts:
        return DEFAULT_PROMPT_SET
    return "prompts-" + hashlib.sha256("\n".join(prompts).encode()).hexdigest()[:8]


def tracker_dtype(record: dict) -> str | None:
    """The dtype the record's tracker part ran in (always float64 today, whatever the text dtype)."""
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


def dtype_label(record: dict | ParityRecord) -> str:
    """What ran, for a reader: `float32`, or `float32 (tracker float64)`."""
    data = record.data if isinstance(record, ParityRecord) else record
    dtype, tracker = data.get("dtype", "float32"), tracker_dtype(data)
    return f"{dtype} (tracker {tracker})" if tracker and tracker != dtype else str(dtype)


# ----------------------------------------------------------------------------------------------
# Where a folder came from (convert writes it; parity FOLDER reads it)


@dataclass(frozen=True)
class SourceMemo:
    checkpoint: str  # a resolved local path, or REPO_ID:FILENAME
    revision: str | None = None
    num_heads: int | None = None
    context_length: int | None = None

    def to_json(self) -> dict:
        return {"tool": {"name": TOOL_NAME}, "checkpoint": self.checkpoint, "revision": self.revision,
                "num_heads": self.num_heads, "context_length": self.context_length}


def remember_source(folder: Path, checkpoint: str, prepared: Prepared, *, num_heads: int | None, context_length: int | None) -> None:
    """What `parity FOLDER` needs to find the checkpoint this folder came from, without -c."""
    resolved = prepared.resolved
    reference = f"{resolved.repo_id}:{resolved.filename}" if resolved.repo_id else str(Path(resolved.path).resolve())
    memo = SourceMemo(reference, resolved.revision, num_heads, context_length)
    ours = safe_io.is_litetext_json(lambda data: isinstance(data.get("checkpoint"), str))
    safe_io.write_inside(folder, SOURCE_MEMO, safe_io.json_bytes(memo.to_json()), ours=ours, what="source memo")


def read_source_memo(folder: Path) -> SourceMemo | None:
    path = Path(folder) / SOURCE_MEMO
    if not path.exists() and not path.is_symlink():
        return None
    data = safe_io.read_json_object(path)
    where = printable(path)
    return SourceMemo(
        checkpoint=_field(data, "checkpoint", str, where),
        revision=_field(data, "revision", str, where, required=False),
        num_heads=_field(data, "num_heads", int, where, required=False),
        context_length=_field(data, "context_length", int, where, required=False),
    )


def folder_source(folder: Path) -> SourceMemo:
    """The checkpoint a converted folder was made from: the hidden memo, else the conversion record's Hub source."""
    memo = read_source_memo(folder)
    if memo is not None:
        return memo
    source = read_conversion_record(folder).source
    if source.get("repo_id") and source.get("filename"):
        return SourceMemo(f"{source['repo_id']}:{source['filename']}", source.get("revision"))
    raise LitetextError(f"{printable(folder)} does not record the checkpoint it was converted from", hint="pass -c with the checkpoint")
