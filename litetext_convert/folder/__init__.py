"""The converted folder: the names of what litetext writes into it (names), the typed records with
one reader and one writer each (records), what a parity record binds by digest (content), THE
verdict (verdict), the folder as its readers see it (view), the one atomic writer and bounded reads
(safe_io), and what litetext owns when it replaces a folder (ownership).

Dependencies point down only: this package reads dtypes and errors (and families, lazily), never parity/ or publish/.
"""

from litetext_convert.folder.names import (
    CARD,
    CONFIG,
    CONVERSION_RECORD,
    DEFAULT_PROMPT_SET,
    LEGACY_PARITY_RECORD,
    PARITY_DIR,
    SOURCE_MEMO,
)
from litetext_convert.folder.records import (
    ConversionRecord,
    ParityRecord,
    SourceMemo,
    dtype_label,
    folder_source,
    prompt_set,
    read_conversion_record,
    read_parity_records,
    record_key,
    remember_source,
    tracker_dtype,
    write_parity_record,
)
from litetext_convert.folder.safe_io import RecordError
from litetext_convert.folder.verdict import FolderVerdict, Verdict, record_verdict
from litetext_convert.folder.view import FolderRecords, load_records

__all__ = [
    "CARD", "CONFIG", "CONVERSION_RECORD", "DEFAULT_PROMPT_SET", "LEGACY_PARITY_RECORD", "PARITY_DIR", "SOURCE_MEMO",
    "ConversionRecord", "FolderRecords", "FolderVerdict", "ParityRecord", "RecordError", "SourceMemo", "Verdict",
    "dtype_label", "folder_source", "load_records", "prompt_set", "read_conversion_record", "read_parity_records",
    "record_key", "record_verdict", "remember_source", "tracker_dtype", "write_parity_record",
]
