"""The model card (README.md) of a converted folder, rendered only from the folder's own records.

Everything the card claims comes from conversion_record.json, parity_record.json and config.json,
so the card cannot say more than the conversion and the parity check established.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from litetext_convert.errors import LitetextError, ParityFailure
from litetext_convert.folder import CONVERSION_RECORD, PARITY_RECORD

CONFIG = "config.json"
CARD_FILENAME = "README.md"

# facebook/sam3 and the official SAM3-LiteText repos declare this task on the Hub.
PIPELINE_TAG = "mask-generation"
PAPER_URL = "https://arxiv.org/abs/2602.12173"
EXAMPLE_IMAGE_URL = "http://images.cocodataset.org/val2017/000000077595.jpg"


@dataclass(frozen=True)
class FolderRecords:
    conversion: dict[str, Any]
    parity: dict[str, Any] | None
    config: dict[str, Any]

    @property
    def variant(self) -> str:
        return str(self.conversion["variant"])

    @property
    def context_length(self) -> int:
        return int(self.conversion["context_length"])

    @property
    def target(self) -> str:
        return str(self.conversion.get("target", {}).get("name", "image"))


def load_records(folder: Path) -> FolderRecords:
    """Read the records a converted folder must carry; a missing parity record is allowed here."""
    conversion = _read_json(folder / CONVERSION_RECORD, required=True)
    for field in ("variant", "context_length", "source"):
        if field not in conversion:
            raise LitetextError(f"{folder / CONVERSION_RECORD} has no '{field}'", hint="re-run `litetext convert`")
    return FolderRecords(
        conversion=conversion,
        parity=_read_json(folder / PARITY_RECORD, required=False),
        config=_read_json(folder / CONFIG, required=True),
    )


def _read_json(path: Path, *, required: bool) -> dict[str, Any] | None:
    if not path.is_file():
        if required:
            raise LitetextError(
                f"{path.parent} is not a litetext-converted folder: {path.name} is missing",
                hint="convert a checkpoint first with `litetext convert`",
            )
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LitetextError(f"{path} is not valid JSON: {err}") from None


def parity_problem(records: FolderRecords) -> str | None:
    """Why the folder does not count as verified, or None when its parity record vouches for it."""
    parity = records.parity
    if parity is None:
        return f"no {PARITY_RECORD}: parity against the original was never checked"
    failed_stages = [s.get("name", "?") for s in _all_stages(parity) if not s.get("passed", False)]
    if not parity.get("passed", False) or failed_stages:
        detail = f" (failing stages: {', '.join(failed_stages)})" if failed_stages else ""
        return f"the parity record says the check failed{detail}"
    recorded_context = parity.get("inputs", {}).get("context_length")
    if recorded_context is not None and recorded_context != records.context_length:
        # A record left over from another conversion in the same folder vouches for nothing here.
        return f"the parity record is for context {recorded_context}, the folder holds context {records.context_length}"
    return None


def _all_stages(parity: dict[str, Any]) -> list[dict[str, Any]]:
    # Text stages at the top level; whole-detector stages, when that check ran, under "detector".
    return list(parity.get("stages") or []) + list((parity.get("detector") or {}).get("stages") or [])


def unverified_refusal(records: FolderRecords, folder: Path) -> LitetextError:
    """The error that refuses publication of unverified work (failing parity keeps exit code 1)."""
    problem = parity_problem(records)
    hint = "run the parity check first, or pass --allow-unverified to publish anyway"
    if records.parity is None:
        return LitetextError(f"refusing to publish {folder}: {problem}", hint=hint)
    return ParityFailure(f"refusing to publish {folder}: {problem}", hint=hint)


def render_model_card(folder: Path, *, repo_id: str, allow_unverified: bool = False) -> str:
    """README.md for `folder` as it will appear at `repo_id`.

    Unverified work renders only with allow_unverified, and the card then says so at the top.
    Deterministic (no clock, no environment) so an unchanged folder yields an unchanged card.
    """
    records = load_records(folder)
    problem = parity_problem(records)
    if problem and not allow_unverified:
        raise unverified_refusal(records, folder)
    sections = [
        _title(records),
        _unverified_banner(problem) if problem else "",
        _overview(records),
        _usage(repo_id, records.target),
        _source_section(records.conversion),
        _architecture_section(records),
        _parity_section(records.parity),
        _provenance_section(records.conversion),
    ]
    body = "\n\n".join(section for section in sections if section) + "\n"
    card = ModelCard(f"---\n{_card_data(records, unverified=bool(problem)).to_yaml()}\n---\n\n{body}")
    return str(card)


def _card_data(records: FolderRecords, *, unverified: bool) -> ModelCardData:
    source = records.conversion["source"]
    tags = ["sam3", "sam3_lite_text", "efficientsam3", "mobileclip", "text-prompted-segmentation", "litetext"]
    if unverified:
        tags.append("unverified")
    return ModelCardData(
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        license=source.get("license"),  # None drops the field: we never guess a license
        base_model=source.get("repo_id"),
        tags=tags,
    )


def _title(records: FolderRecords) -> str:
    return f"# SAM3-LiteText {records.variant.upper()} (text context {records.context_length}) for Transformers"


def _unverified_banner(problem: str) -> str:
    return (
        "> [!WARNING]\n"
        "> **Unverified conversion.** This model was published with `--allow-unverified`: "
        f"{problem}. Nothing here shows that it computes what the original checkpoint computes."
    )


def _overview(records: FolderRecords) -> str:
    return (
        f"[SAM3-LiteText]({PAPER_URL}) is SAM3 with its text encoder replaced by a compact, distilled "
        f"MobileCLIP-{records.variant.upper()} text encoder that reads {records.context_length} tokens. "
        "This repository holds it as a Hugging Face Transformers `Sam3LiteTextModel` "
        "with its `Sam3Processor`: give it an image and a short text prompt, get instance masks and boxes."
    ) if records.target != "video" else (
        f"[SAM3-LiteText]({PAPER_URL}) is SAM3 with its text encoder replaced by a compact, distilled "
        f"MobileCLIP-{records.variant.upper()} text encoder that reads {records.context_length} tokens. "
        "This repository holds the whole checkpoint, detector and video tracker, as a Hugging Face Transformers "
        "`Sam3VideoModel` with its `Sam3VideoProcessor` (target: video): give it a video and a short text prompt, "
        "get tracked instance masks."
    )


def _usage(repo_id: str, target: str = "image") -> str:
    # The SAM3 image processor imports torchvision; load_image needs Pillow.
    install = 'pip install "transformers>=5.23" torch torchvision pillow'
    snippet = video_usage_snippet(repo_id) if target == "video" else usage_snippet(repo_id)
    return f"## Usage\n\n```bash\n{install}\n```\n\n```python\n{snippet}```"


def video_usage_snippet(repo_id: str) -> str:
    """A video folder: text prompt in, tracked masks out (Sam3VideoProcessor's documented flow)."""
    return f'''import numpy as np
import torch
from transformers import Sam3VideoModel, Sam3VideoProcessor

model = Sam3VideoModel.from_pretrained("{repo_id}")
processor = Sam3VideoProcessor.from_pretrained("{repo_id}")

frames = np.zeros((8, 480, 640, 3), dtype=np.uint8)  # your video: T x H x W x 3
session = processor.init_video_session(video=frames, inference_device="cpu")
session = processor.add_text_prompt(session, "cat")
with torch.no_grad():
    for output in model.propagate_in_video_iterator(inference_session=session):
        result = processor.postprocess_outputs(session, output)
        print(output.frame_idx, result["object_ids"].tolist())
'''


def usage_snippet(repo_id: str) -> str:
    """Text prompt in, instance masks out; kept as its own function so tests can compile() it."""
    return f'''import torch
from transformers import AutoProcessor, Sam3LiteTextModel
from transformers.image_utils import load_image

model = Sam3LiteTextModel.from_pretrained("{repo_id}")
processor = AutoProcessor.from_pretrained("{repo_id}")  # a Sam3Processor

image = load_image("{EXAMPLE_IMAGE_URL}")
inputs = processor(images=image, text="cat", return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)

results = processor.post_process_instance_segmentation(
    outputs,
    threshold=0.5,
    mask_threshold=0.5,
    target_sizes=inputs["original_sizes"].tolist(),
)[0]
print(f"{{len(results['masks'])}} instances, scores {{results['scores'].tolist()}}")
'''


def _source_section(conversion: dict[str, Any]) -> str:
    source = conversion["source"]
    repo_id = source.get("repo_id")
    rows = [
        ("Repository", f"[{repo_id}](https://huggingface.co/{repo_id})" if repo_id else "local file"),
        ("File", f"`{source.get('filename')}`"),
        ("Revision", f"`{source.get('revision')}`" if source.get("revision") else "not recorded"),
        ("SHA-256", f"`{source.get('sha256')}`"),
        ("Size", f"{source.get('bytes'):,} bytes" if isinstance(source.get("bytes"), int) else "not recorded"),
        ("License", source.get("license") or "not recorded: check the source repository before reuse"),
    ]
    return "## Source checkpoint\n\n" + _table(("", ""), rows)


def _architecture_section(records: FolderRecords) -> str:
    parts = ["## Architecture"]
    text_config = records.config.get("text_config", {})
    parts.append(
        "Text encoder (config.json): "
        f"hidden size {text_config.get('hidden_size')}, {text_config.get('num_hidden_layers')} layers, "
        f"context {text_config.get('max_position_embeddings')} tokens, "
        f"RepMixer blocks: {'yes' if text_config.get('use_repmixer_blocks') else 'no'}."
    )
    architecture = records.conversion.get("architecture", {})
    for part, title in (("text", "Text encoder"), ("detector", "Detector")):
        fields = architecture.get(part) or {}
        if fields:
            rows = [(f"`{name}`", _value(entry.get("value")), entry.get("source", "")) for name, entry in fields.items()]
            table = _table(("Field", "Value", "From"), rows)
            parts.append(f"{title}, as inferred at conversion (and from what):\n\n{table}")
    keys = records.conversion.get("keys")
    if keys:
        dropped = ", ".join(f"{count} {reason}" for reason, count in (keys.get("dropped") or {}).items()) or "none"
        parts.append(
            f"Weights: {keys.get('source')} tensors in the checkpoint, {keys.get('mapped')} mapped, "
            f"dropped: {dropped}; {keys.get('target')} tensors in the model "
            f"(dtype {records.conversion.get('dtype', 'not recorded')})."
        )
    return "\n\n".join(parts)


def _parity_section(parity: dict[str, Any] | None) -> str:
    if parity is None:
        return "## Parity\n\nNot checked: this folder has no parity record."
    original = parity.get("original", {})
    inputs = parity.get("inputs", {})
    verdict = "passed" if parity.get("passed") else "FAILED"
    summary = (
        f"Compared with **{original.get('name')}** (version {original.get('version')}) "
        f"on {inputs.get('kind')} (batch {inputs.get('batch')}, seed {inputs.get('seed')}, "
        f"context {inputs.get('context_length')}), dtype {parity.get('dtype')}, "
        f"tolerances atol={_number(parity.get('atol'))}, rtol={_number(parity.get('rtol'))}, "
        f"scope: {_scope(parity.get('scope'))}. Result: **{verdict}**."
    )
    parts = ["## Parity", summary]
    if parity.get("stages"):
        parts.append(_stage_table(parity["stages"]))
    tokenizer = parity.get("tokenizer")
    if tokenizer is not None:
        parts.append(f"Tokenizer: ids {'identical to' if tokenizer.get('equal') else 'DIFFERENT from'} the original's.")
    detector = parity.get("detector")
    if detector:
        verdict = "passed" if detector.get("passed") else "FAILED"
        parts.append(f"Whole detector compared with **{detector.get('original', 'the original')}**: **{verdict}**.")
        if detector.get("stages"):
            parts.append(_stage_table(detector["stages"]))
    notes = parity.get("notes") or []
    if notes:
        parts.append("\n".join(f"- {note}" for note in notes))
    return "\n\n".join(parts)


def _scope(scope: Any) -> str:
    # Say plainly what a text-only check leaves unchecked.
    if scope == "text":
        return "text encoder only (the image encoder and detector were not compared)"
    return f"{scope}"


def _stage_table(stages: list[dict[str, Any]]) -> str:
    rows = [
        (
            f"`{stage.get('name')}`",
            _number(stage.get("max_abs")),
            _number(stage.get("mean_abs")),
            _cosine(stage.get("cosine")),
            "pass" if stage.get("passed") else "FAIL",
        )
        for stage in stages
    ]
    return _table(("Stage", "max abs diff", "mean abs diff", "cosine", ""), rows)


def _provenance_section(conversion: dict[str, Any]) -> str:
    tool = conversion.get("tool", {})
    created = conversion.get("created", "an unrecorded date")
    return (
        "## Provenance\n\n"
        f"Converted by {tool.get('name', 'litetext')} {tool.get('version', '')} on {created}. "
        f"`{CONVERSION_RECORD}` and `{PARITY_RECORD}` in this repository hold the full records."
    )


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    # A pipe inside a value would split the Markdown cell.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "n/a"
    return "0" if value == 0 else f"{value:.2e}"


def _cosine(value: Any) -> str:
    # Eight decimals: float32 cosines differ from 1 around the seventh.
    return f"{value:.8f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"
