"""Load the targets of configs/targets/ and the parity scopes of configs/scopes.toml; recognise a
converted folder's target.

This module is data only: it imports no torch and no transformers, so every layer may ask it
which target or scope it holds. A target's code (config builder, processor saver) lives in the
module its data names (`module`), imported only when that code is called.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from litetext_convert.errors import LitetextError
from litetext_convert.paths import read_config


@dataclass(frozen=True)
class Scope:
    name: str
    label: str
    needs_original: str | None  # what Meta's sam3 provides to this scope, or None when it needs nothing


@dataclass(frozen=True)
class Target:
    id: str
    label: str
    module: str | None  # the target's code: build_config(arch, tensors), save_processor(folder, arch, tokenizer)
    tables: str  # which entry of a family's [targets] holds this target's mapping tables
    processor_class: str | None
    model_type: str | None  # config.json `model_type` of a folder of this target
    marker: str | None  # a file whose presence says a folder is of this target (checked before model_type)
    config_class: str | None  # the transformers class that reads such a folder's config.json
    detector_attribute: str  # where the image detector sits in the loaded model ("" = the model itself)
    scopes: dict[str, tuple[str, ...]]  # parity scope -> the parts it runs on this target
    card: dict

    def supports(self, scope: str) -> bool:
        return scope in self.scopes

    def runs(self, scope: str, part: str) -> bool:
        """Whether `--scope scope` on a folder of this target runs `part` (text, detector, tracker...)."""
        return part in self.scopes.get(scope, ())

    def detector_of(self, model):
        """The image detector inside a loaded model of this target."""
        return getattr(model, self.detector_attribute) if self.detector_attribute else model

    def classes(self, family) -> dict[str, str]:
        """The transformers class names this target is built as, for a family (its own data)."""
        return family.classes(self.tables)

    def table_paths(self, family) -> list[Path]:
        return family.table_paths(self.tables)

    def code(self):
        if self.module is None:
            raise LitetextError(f"the {self.label} target has no code module (configs/targets/{self.id}.toml)")
        return importlib.import_module(self.module)

    def build_config(self, arch, tensors):
        """The transformers config of this target for an inferred architecture (and its weights' shapes)."""
        return self.code().build_config(arch, tensors)

    def save_processor(self, folder: Path, arch, tokenizer) -> None:
        self.code().save_processor(folder, arch, tokenizer)

    def usage_snippet(self, repo_id: str) -> str:
        """The model card's Python example for a published folder of this target (card data)."""
        return self.card["usage"].format(repo_id=repo_id, **{k: v for k, v in self.card.items() if k != "usage"})

    @property
    def folder_phrase(self) -> str:
        """'an image folder', 'a video folder': how messages name a folder of this target."""
        article = "an" if self.label[:1].lower() in "aeiou" else "a"
        return f"{article} {self.label} folder"


def _load_target(target_id: str) -> Target:
    data = read_config(f"targets/{target_id}.toml")
    if data.get("id") != target_id:
        raise RuntimeError(f"configs/targets/{target_id}.toml says id = {data.get('id')!r}")
    folder = data.get("folder", {})
    scopes = {name: tuple(parts) for name, parts in data.get("scopes", {}).items()}
    unknown = set(scopes) - set(scope_names())
    if unknown:
        raise RuntimeError(f"configs/targets/{target_id}.toml names unknown scopes: {', '.join(sorted(unknown))}")
    return Target(
        id=target_id,
        label=data.get("label", target_id),
        module=data.get("module"),
        tables=data.get("tables", target_id),
        processor_class=data.get("processor_class"),
        model_type=folder.get("model_type"),
        marker=folder.get("marker"),
        config_class=folder.get("config_class"),
        detector_attribute=folder.get("detector", ""),
        scopes=scopes,
        card=dict(data.get("card", {})),
    )


@cache
def _targets() -> dict[str, Target]:
    return {target_id: _load_target(target_id) for target_id in read_config("targets/registry.toml")["targets"]}


def target_names() -> tuple[str, ...]:
    return tuple(_targets())


def target(name: str) -> Target:
    """The target called `name`; an unknown name is a one-line error listing the known ones."""
    found = _targets().get(name)
    if found is None:
        raise LitetextError(f"unknown --target {name!r}; choose {', '.join(target_names())}")
    return found


def default_target() -> Target:
    return target(read_config("targets/registry.toml")["default"])


def folder_target(folder) -> Target:
    """Which target a converted folder holds: a marker file first, else config.json's model_type;
    a folder that says neither (or whose config.json cannot be read) is the default target."""
    folder = Path(folder)
    for candidate in _targets().values():
        if candidate.marker and (folder / candidate.marker).is_file():
            return candidate
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return default_target()
    return next((t for t in _targets().values() if t.model_type and t.model_type == model_type), default_target())


# ----------------------------------------------------------------------------------------------
# Parity scopes


@cache
def _scopes() -> dict[str, Scope]:
    return {
        name: Scope(name=name, label=entry["label"], needs_original=entry.get("needs_original"))
        for name, entry in read_config("scopes.toml").items()
    }


def scope_names() -> tuple[str, ...]:
    return tuple(_scopes())


def scope(name: str) -> Scope:
    found = _scopes().get(name)
    if found is None:
        names = scope_names()
        raise LitetextError(f"--scope {name!r}: choose {', '.join(names[:-1])} or {names[-1]}")
    return found


def scope_target(scope_name: str, folder: Path | None, requested: str) -> Target:
    """The target a parity run proves: the folder's own, else `requested` (--target), else the
    first target that supports the scope (tracker parity without a folder converts a video one).
    A folder whose target lacks the scope is refused in one line."""
    if folder is not None:
        found = folder_target(folder)
        if not found.supports(scope_name):
            raise LitetextError(
                f"{folder} is {found.folder_phrase}: {scope_name} parity needs a folder converted with "
                f"--target {_first_supporting(scope_name).id}"
            )
        return found
    wanted = target(requested)
    return wanted if wanted.supports(scope_name) else _first_supporting(scope_name)


def _first_supporting(scope_name: str) -> Target:
    return next(t for t in _targets().values() if t.supports(scope_name))
