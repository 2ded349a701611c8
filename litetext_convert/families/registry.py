"""Load the families of configs/families/, recognise a checkpoint's family, refuse look-alikes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from litetext_convert.errors import CheckpointError
from litetext_convert.paths import configs_dir, read_config

TEXT = "detector.backbone.language_backbone."
VIT_PATCH_EMBED = "detector.backbone.vision_backbone.trunk.patch_embed.proj.weight"
TRUNK = "detector.backbone.vision_backbone.trunk."


@dataclass(frozen=True)
class Family:
    id: str
    name: str
    hf_model_class: str
    hf_config_class: str
    variants_file: str
    repo_id: str
    revision: str
    license: str | None
    folder: str  # the family's folder in the Hub repo
    all_of: tuple[re.Pattern, ...]
    none_of: tuple[re.Pattern, ...]
    aliases: dict[str, str]
    rename_pattern: re.Pattern
    rename_exclude: re.Pattern | None
    targets: dict[str, tuple[str, ...]]  # target -> mapping table files, relative to configs/
    unsupported_targets: dict[str, str]  # target -> why not
    target_classes: dict[str, dict[str, str]]  # target -> transformers class names (model, config, ...)
    card: dict
    original_ignored: dict[str, str]  # key regex -> why the original image model does not load it
    original_left_at_init: dict[str, str]  # original model key regex -> why it keeps its initial value

    def matches(self, keys: list[str]) -> bool:
        return all(any(p.search(k) for k in keys) for p in self.all_of) and not any(
            p.search(k) for p in self.none_of for k in keys
        )

    def table_paths(self, target: str = "image") -> list[Path]:
        if target in self.unsupported_targets:
            raise CheckpointError(f"{self.name}: no {target} target: {self.unsupported_targets[target]}")
        if target not in self.targets:
            raise CheckpointError(f"{self.name} has no {target!r} target (it has: {', '.join(self.targets)})")
        return [configs_dir() / name for name in self.targets[target]]

    def classes(self, target: str = "image") -> dict[str, str]:
        """The transformers class names `target` is built as: `model` and `config` (and, for video, `tracker_config`)."""
        if target == "image":
            return {"model": self.hf_model_class, "config": self.hf_config_class, **self.target_classes.get("image", {})}
        if target not in self.target_classes:
            raise CheckpointError(f"{self.name} declares no transformers classes for its {target!r} target")
        return dict(self.target_classes[target])

    def variant_table(self) -> dict[str, dict]:
        return read_config(self.variants_file)

    def file_identity(self, filename: str) -> tuple[str, int] | None:
        """(variant, context) that a released file name of this family says, or None."""
        if self.rename_exclude is not None and self.rename_exclude.search(filename):
            return None
        found = self.rename_pattern.search(filename)
        return (found["variant"], int(found["context"])) if found else None

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "hf_model_class": self.hf_model_class}


def _patterns(entries) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(entry) for entry in entries)


def _load_family(family_id: str, hub: dict) -> Family:
    data = read_config(f"families/{family_id}/family.toml")
    if data.get("id") != family_id:
        raise RuntimeError(f"configs/families/{family_id}/family.toml says id = {data.get('id')!r}")
    own_hub = {**hub, **data.get("hub", {})}
    rename = data["rename"]
    return Family(
        id=family_id,
        name=data["name"],
        hf_model_class=data["hf_model_class"],
        hf_config_class=data["hf_config_class"],
        variants_file=data["variants"],
        repo_id=own_hub["repo_id"],
        revision=own_hub["revision"],
        license=own_hub.get("license"),
        folder=own_hub["folder"],
        all_of=_patterns(data["recognise"]["all_of"]),
        none_of=_patterns(data["recognise"].get("none_of", [])),
        aliases=dict(data.get("aliases", {})),
        rename_pattern=re.compile(rename["pattern"]),
        rename_exclude=re.compile(rename["exclude"]) if rename.get("exclude") else None,
        targets={name: tuple(files) for name, files in data["targets"].items()},
        unsupported_targets=dict(data.get("unsupported_targets", {})),
        target_classes={name: dict(classes) for name, classes in data.get("target_classes", {}).items()},
        card=dict(data.get("card", {})),
        original_ignored=dict(data.get("original", {}).get("ignored", {})),
        original_left_at_init=dict(data.get("original", {}).get("left_at_init", {})),
    )


@cache
def load_families() -> tuple[Family, ...]:
    """Every family, most specific first (the most `all_of` tell-tales), then in registry order."""
    registry = read_config("families/registry.toml")
    families = [_load_family(family_id, registry["hub"]) for family_id in registry["families"]]
    seen: dict[str, str] = {}
    for family in families:
        for alias in family.aliases:
            if alias in seen:
                raise RuntimeError(f"alias {alias!r} is declared by both {seen[alias]} and {family.id}")
            seen[alias] = family.id
    return tuple(sorted(families, key=lambda f: -len(f.all_of)))


def family_by_id(family_id: str) -> Family:
    for family in load_families():
        if family.id == family_id:
            return family
    known = ", ".join(f.id for f in load_families())
    raise CheckpointError(f"unknown family {family_id!r}", hint=f"known families: {known}")


def all_aliases() -> dict[str, tuple[Family, str]]:
    """alias -> (family, file in the Hub repo)."""
    return {alias: (family, path) for family in load_families() for alias, path in family.aliases.items()}


def family_of_alias(alias: str) -> Family | None:
    entry = all_aliases().get(alias)
    return entry[0] if entry else None


# ----------------------------------------------------------------------------------------------
# Look-alikes, then families


@lru_cache(maxsize=1)
def _lookalikes() -> tuple[tuple[str, tuple[re.Pattern, ...], str], ...]:
    table = read_config("lookalikes.toml")
    return tuple((entry["name"], _patterns(entry["all_of"]), entry["message"]) for entry in table["lookalike"])


def refuse_lookalikes(keys: list[str], filename: str) -> None:
    """Most specific entry first; the message names the tell-tale keys it found."""
    for _name, patterns, message in _lookalikes():
        hits = [next((key for key in keys if pattern.search(key)), None) for pattern in patterns]
        if all(hits):
            shown = ", ".join(dict.fromkeys(hits))
            raise CheckpointError(f"{filename} is {message} (tell-tale key{'s' if len(set(hits)) > 1 else ''}: {shown})")


def recognise(keys: list[str], filename: str) -> Family:
    """The family of a checkpoint, from its keys; look-alikes and unknown layouts are refused."""
    refuse_lookalikes(keys, filename)
    for family in load_families():
        if family.matches(keys):
            return family
    trunk_keys = [key for key in keys if key.startswith(TRUNK)]
    if trunk_keys and VIT_PATCH_EMBED not in keys:
        raise CheckpointError(
            f"{filename} has a vision trunk that is not SAM3's ViT (e.g. {trunk_keys[0]}): "
            "an EfficientSAM3 student-vision checkpoint, which Sam3LiteTextModel cannot hold"
        )
    if not any(key.startswith(TEXT + "encoder.") for key in keys):
        sample = keys[0] if keys else "none"
        raise CheckpointError(
            f"{filename} has no SAM3-LiteText text encoder (no '{TEXT}encoder.*' keys; first key: {sample})"
        )
    names = ", ".join(f.name for f in load_families())
    raise CheckpointError(f"{filename} matches no known checkpoint family ({names}): its tell-tale keys are absent")
