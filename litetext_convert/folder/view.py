"""A converted folder as the card, push, the report and the workflows see it: its conversion record,
its parity records (valid and not), its config, and the one folder verdict over all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from litetext_convert.folder import safe_io
from litetext_convert.folder.names import CONFIG, DEFAULT_PROMPT_SET
from litetext_convert.folder.records import (
    ConversionRecord,
    InvalidRecord,
    ParityRecord,
    read_conversion_record,
    read_parity_records,
)
from litetext_convert.folder.verdict import FolderVerdict, folder_verdict, records_dir_problem


@dataclass(frozen=True)
class FolderRecords:
    folder: Path
    conversion: ConversionRecord
    parities: list[ParityRecord]  # every valid parity record, sorted by file
    invalid: list[InvalidRecord]
    config: dict[str, Any] = field(repr=False)

    @property
    def variant(self) -> str:
        return self.conversion.variant

    @property
    def context_length(self) -> int:
        return self.conversion.context_length

    @property
    def family_id(self) -> str:
        return self.conversion.family_id

    @property
    def target(self) -> str:
        return self.conversion.target

    @property
    def card_wording(self) -> dict[str, Any]:
        """The family's card wording (configs/families/<id>/family.toml [card])."""
        from litetext_convert.families import family_by_id

        return family_by_id(self.family_id).card

    @cached_property
    def verdict(self) -> FolderVerdict:
        """THE folder verdict (folder/verdict.py), computed once per view."""
        problem = records_dir_problem(self.folder)
        if problem:
            return FolderVerdict(False, problem)
        return folder_verdict(self.folder, self.conversion, self.parities, self.invalid)

    def precision_record(self) -> ParityRecord | None:
        """The record whose precision figures the card shows: on the default inputs, the widest scope."""
        default = [r for r in self.parities if r.prompt_set == DEFAULT_PROMPT_SET]
        ranked = sorted(default, key=lambda r: r.get("scope") in ("detector", "all"), reverse=True)
        return ranked[0] if ranked else None


def load_records(folder: Path) -> FolderRecords:
    """Read what a converted folder carries; damage in the conversion record or config is one line
    (RecordError); a damaged parity record is kept as invalid (the verdict names it)."""
    folder = Path(folder)
    conversion = read_conversion_record(folder)
    parities, invalid = ([], []) if records_dir_problem(folder) else read_parity_records(folder)
    config = safe_io.read_json_object(folder / CONFIG)
    return FolderRecords(folder, conversion, parities, invalid, config)
