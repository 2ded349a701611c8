"""Text-encoder parity: the converted folder (through from_pretrained) against the original.

The original side never touches transformers or the mapping table: it is the upstream fork's
`TextStudentEncoder` when importable, else our clean-room reference, both fed the ORIGINAL keys.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from litetext_convert.errors import LitetextError
from litetext_convert.folder import CONVERSION_RECORD
from litetext_convert.parity import recipes
from litetext_convert.parity.compare import StageDiff, compare, first_failure
from litetext_convert.parity.runtime import SideRun, release_folder_pages, release_mapped_pages, run_side
from litetext_convert import dtypes
from litetext_convert.plan.infer import TEXT
from litetext_convert.plan.prepare import Prepared
from litetext_convert.reference import load_original_text_encoder, load_original_tokenizer, merges_from_folder
from litetext_convert.write.processor import merges_fingerprint, vocabulary_name

SOT, EOT = 49406, 49407

# Prompts that stress tokenization: punctuation, unicode, numbers, case, whitespace, empty, too long.
PROMPT_CORPUS = [
    "a cat",
    "the red car on the left.",
    "Dog, cat & bird!!! (3x)",
    "person wearing a hat; 2 umbrellas",
    "café crème brûlée",
    "日本の猫",
    "emoji 🐱 here",
    "  MIXED   Case\tand\nwhitespace  ",
    "3.14159 and 1,000,000 items",
    "",
    "a very long prompt that keeps going well past the context length of the student text encoder "
    "so that truncation has to happen somewhere near the end of it",
]


@dataclass
class ParityOptions:
    dtype: str = "float32"
    batch: int = 2
    seed: int = 0
    prompts: list[str] = field(default_factory=list)
    atol: float | None = None
    rtol: float | None = None

    def tolerances(self) -> tuple[float, float]:
        default_atol, default_rtol = dtypes.tolerances(self.dtype, "text")  # configs/tolerances.toml
        return (self.atol if self.atol is not None else default_atol, self.rtol if self.rtol is not None else default_rtol)

    def atol_of_max(self) -> float:
        """Reduced precision: the share of a stage's magnitude added to atol (0 when --atol is given)."""
        return dtypes.atol_of_max(self.dtype, "text") if self.atol is None else 0.0


@dataclass
class ParityResult:
    scope: str
    dtype: str
    atol: float
    rtol: float
    original: dict
    inputs: dict
    stages: list[StageDiff]
    tokenizer: dict | None = None
    padded_prompts: dict | None = None
    detector: dict | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        tokenizer_ok = self.tokenizer is None or self.tokenizer["equal"]
        detector_ok = self.detector is None or self.detector["passed"]
        return all(stage.passed for stage in self.stages) and tokenizer_ok and detector_ok

    @property
    def first_failure(self) -> StageDiff | None:
        return first_failure(self.stages)

    def to_json(self) -> dict:
        failure = self.first_failure
        return {
            "passed": self.passed,
            "scope": self.scope,
            "dtype": self.dtype,
            "atol": self.atol,
            "rtol": self.rtol,
            "original": self.original,
            "inputs": self.inputs,
            "first_failure": failure.name if failure else None,
            "stages": [stage.to_json() for stage in self.stages],
            "tokenizer": self.tokenizer,
            "padded_prompts": self.padded_prompts,
            "detector": self.detector,
            "notes": self.notes,
            "seconds": self.seconds,
        }


def text_state_dict(prepared: Prepared) -> dict[str, torch.Tensor]:
    """The original text keys, relative to the language backbone, unchanged."""
    return {key[len(TEXT) :]: value for key, value in prepared.loaded.tensors.items() if key.startswith(TEXT)}


def dummy_ids(batch: int, context: int, seed: int) -> torch.Tensor:
    """Seeded ids with no padding: start token, random ordinary tokens, end token last."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, SOT, (batch, context), generator=generator)
    ids[:, 0] = SOT
    ids[:, -1] = EOT
    return ids


# What `get_text_features` runs: the only modules text parity compares.
TEXT_MODULES = ("text_encoder", "text_projection")


def load_converted(folder: Path, dtype: torch.dtype):
    """The converted folder as users load it; a damaged folder is an error, never random weights.

    float64: the folder loads in its stored dtype (memory-mapped, nothing copied) and only the text
    modules are widened, so float64 costs the text encoder's size, not the whole model's (the
    vision side, 13x larger, is never run here). Widening after loading gives the same values as
    loading in float64: float16/bfloat16/float32 -> float64 is exact."""
    from transformers.utils import logging as hf_logging

    from litetext_convert.plan.hf_config import model_class_of_folder
    from litetext_convert.targets import folder_target

    hf_logging.disable_progress_bar()
    if not (folder / "config.json").is_file():
        raise LitetextError(f"{folder} is not a converted folder (no config.json)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its multi-line load report would bury the one-line answer
    target = folder_target(folder)  # a video folder's detector is its detector_model
    try:
        model_class = model_class_of_folder(folder)  # the family's class, as config.json names it
        load_dtype = "auto" if dtype == torch.float64 else dtype
        model, info = model_class.from_pretrained(str(folder), dtype=load_dtype, output_loading_info=True)
    except Exception as exc:  # a damaged folder fails inside transformers/safetensors in many ways
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise LitetextError(f"the converted folder {folder} cannot be loaded: {reason}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    problems = {name: keys for name, keys in info.items() if keys and name != "error_msgs"}
    if problems or info.get("error_msgs"):
        summary = "; ".join(f"{name}: {', '.join(map(str, keys))[:120]}" for name, keys in problems.items())
        raise LitetextError(f"the converted folder {folder} is damaged ({summary or info['error_msgs']})")
    model = target.detector_of(model)
    if dtype == torch.float64:
        for name in TEXT_MODULES:
            getattr(model, name).to(torch.float64)
    return model.eval()


class HFTextTrace:
    """The same stages as the original's TextTrace, captured from Sam3LiteTextModel by hooks."""

    def __init__(self, model):
        self.model = model

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        encoder = self.model.text_encoder
        captured: dict[str, torch.Tensor] = {}
        layers: list[torch.Tensor] = []

        def keep(name):
            return lambda module, args, output: captured.__setitem__(name, _tensor(output))

        handles = [
            encoder.embeddings.register_forward_hook(keep("embeddings")),
            encoder.final_layer_norm.register_forward_hook(keep("final_norm")),
            encoder.projection.register_forward_hook(keep("pooled")),
        ]
        handles += [layer.register_forward_hook(lambda m, a, o: layers.append(_tensor(o))) for layer in encoder.layers]
        try:
            # get_text_features is what Sam3LiteTextModel.forward calls for the detector.
            features = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            for handle in handles:
                handle.remove()
        captured["layers"] = layers
        captured["text_features"] = features.pooler_output
        return captured


def _tensor(output):
    return output[0] if isinstance(output, tuple) else output


def compare_text(
    original_trace, hf: dict, hf_mask, layer_kinds: list[str], atol: float, rtol: float, prefix: str = "text",
    atol_of_max: float = 0.0,
) -> list[StageDiff]:
    diffs = [compare(f"{prefix}.embeddings", original_trace.embeddings, hf["embeddings"], atol=atol, rtol=rtol, atol_of_max=atol_of_max)]
    for index, (original, converted) in enumerate(zip(original_trace.layers, hf["layers"])):
        kind = layer_kinds[index]
        diffs.append(compare(f"{prefix}.layer.{index} ({kind})", original, converted, atol=atol, rtol=rtol, atol_of_max=atol_of_max))
    if len(original_trace.layers) != len(hf["layers"]):
        diffs.append(
            StageDiff(f"{prefix}.layer count", float("inf"), float("inf"), float("inf"), 0.0, 0.0, [], False, atol, rtol,
                      f"original {len(original_trace.layers)} vs converted {len(hf['layers'])}")
        )
    diffs.append(compare(f"{prefix}.final_norm", original_trace.final_norm, hf["final_norm"], atol=atol, rtol=rtol, atol_of_max=atol_of_max))
    diffs.append(
        compare(f"{prefix}.features (detector-facing)", original_trace.text_features, hf["text_features"], atol=atol, rtol=rtol, atol_of_max=atol_of_max)
    )
    diffs.append(compare(f"{prefix}.pooled (CLIP-style)", original_trace.pooled, hf["pooled"], atol=atol, rtol=rtol, atol_of_max=atol_of_max))
    hf_padding = torch.zeros_like(original_trace.padding_mask) if hf_mask is None else ~hf_mask.bool()
    diffs.append(compare(f"{prefix}.padding_mask", original_trace.padding_mask, hf_padding, atol=0.0, rtol=0.0))
    return diffs


def layer_kinds(model) -> list[str]:
    return ["repmixer" if "RepMixer" in type(layer).__name__ else "attention" for layer in model.text_encoder.layers]


def original_text_side(state_dict: dict[str, torch.Tensor], arch, dtype: torch.dtype, inputs: list[torch.Tensor],
                       release=None) -> SideRun:
    """The original text encoder on each ids tensor, then freed: outputs are TextTraces, info its description."""
    return run_side(
        "original",
        build=lambda: load_original_text_encoder(state_dict, arch, dtype),
        forward=lambda built: [built[0](ids) for ids in inputs],
        describe=lambda built: built[1],
        release=release,
    )


def converted_text_side(folder: Path, dtype: torch.dtype, calls: list[tuple[torch.Tensor, torch.Tensor | None]]) -> SideRun:
    """The converted folder's text encoder on each (ids, attention mask), then freed: info is its layer kinds."""
    return run_side(
        "transformers",
        build=lambda: load_converted(folder, dtype),
        forward=lambda model: [HFTextTrace(model)(ids, mask) for ids, mask in calls],
        describe=layer_kinds,
        release=lambda: release_folder_pages(folder),
    )


def run_text_parity(prepared: Prepared, folder: Path, options: ParityOptions) -> ParityResult:
    """One side at a time (parity/runtime.py): every input the comparison needs is made first (ids,
    both tokenizers' prompts), the original runs on all of them and is freed, then the converted
    model does the same. In float64 the peak then holds one widened text encoder, not two."""
    started = time.perf_counter()
    torch_dtype = dtypes.torch_dtype(options.dtype)
    atol, rtol, atol_of_max = *options.tolerances(), options.atol_of_max()
    arch = prepared.arch
    context = arch.context_length
    ids = dummy_ids(options.batch, context, options.seed)
    inputs = {"kind": "dummy ids", "batch": options.batch, "seed": options.seed, "context_length": context}
    original_inputs, converted_calls = [ids], [(ids, None)]
    if options.prompts:
        tokenizer_report = tokenizer_equivalence(folder, context, options.prompts)
        original_tokenizer, _ = load_original_tokenizer(folder)
        hf_ids, hf_mask = tokenize_hf(hf_tokenizer(folder, context), options.prompts, context)
        original_inputs.append(original_tokenizer(options.prompts, context))
        # Faithful recipe first (no attention mask: upstream attends to padding), then what
        # Sam3LiteTextModel.forward does by default (the tokenizer's mask into the encoder).
        converted_calls += [(hf_ids, None), (hf_ids, hf_mask)]
        inputs["prompts"] = options.prompts
    else:
        tokenizer_report = tokenizer_equivalence(folder, context, PROMPT_CORPUS)

    text_weights = text_state_dict(prepared)
    # The reference copies the text weights: their checkpoint pages need not stay resident.
    original = original_text_side(text_weights, arch, torch_dtype, original_inputs,
                                  release=lambda: release_mapped_pages(text_weights.values(), prepared.loaded.format))
    converted = converted_text_side(folder, torch_dtype, converted_calls)
    kinds = converted.info

    stages = compare_text(original.outputs[0], converted.outputs[0], None, kinds, atol, rtol, atol_of_max=atol_of_max)
    padded_report = None
    if options.prompts:
        prompt_trace, (faithful, masked) = original.outputs[1], converted.outputs[1:]
        stages += compare_text(prompt_trace, faithful, hf_ids != 0, kinds, atol, rtol, prefix="prompts.text",
                               atol_of_max=atol_of_max)
        padded_report = padded_prompts_report(prompt_trace, faithful, masked, hf_mask)

    return ParityResult(
        scope="text",
        dtype=options.dtype,
        atol=atol,
        rtol=rtol,
        original=original.info,
        inputs=inputs,
        stages=stages,
        tokenizer=tokenizer_report,
        padded_prompts=padded_report,
        notes=list(arch.notes),
        seconds=time.perf_counter() - started,
    )


def hf_tokenizer(folder: Path, context_length: int):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - the Rust tokenizer raises plain Exception on a damaged file
        raise LitetextError(f"the converted folder {folder} has no usable tokenizer: {' '.join(str(exc).split())[:160]}") from None


def tokenize_hf(tokenizer, prompts: list[str], context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = tokenizer(prompts, padding="max_length", truncation=True, max_length=context_length, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def vocabulary_problems(folder: Path) -> tuple[str | None, list[dict]]:
    """The clean-room upstream tokenizer reads the folder's own merges, so check the vocabulary
    itself: it must be upstream's (or the offline stand-in) and the one recorded at conversion."""
    fingerprint = merges_fingerprint(merges_from_folder(folder))
    name = vocabulary_name(fingerprint)
    problems = []
    if name is None:
        problems.append({"prompt": "(vocabulary)", "why": f"the saved tokenizer's merges (sha256 {fingerprint[:12]}) are not CLIP's"})
    record_path = folder / CONVERSION_RECORD
    if record_path.is_file():
        recorded = json.loads(record_path.read_text()).get("tokenizer", {}).get("merges_sha256")
        if recorded and recorded != fingerprint:
            problems.append({"prompt": "(vocabulary)", "why": "the tokenizer was replaced after conversion (merges differ from the record)"})
    return name, problems


def tokenizer_equivalence(folder: Path, context_length: int, prompts: list[str]) -> dict:
    """Ids of the original tokenizer (upstream's algorithm) vs the tokenizer saved in the folder, prompt by prompt.
    Records before schema 2 named the original side "upstream"; the report reads both."""
    vocabulary, differences = vocabulary_problems(folder)
    original_tokenizer, original_name = load_original_tokenizer(folder)
    hf = hf_tokenizer(folder, context_length)
    original_ids = original_tokenizer(prompts, context_length)
    hf_ids, _ = tokenize_hf(hf, prompts, context_length)
    for prompt, original, converted in zip(prompts, original_ids.tolist(), hf_ids.tolist()):
        if original != converted:
            differences.append({"prompt": prompt, "original": original, "converted": converted,
                                "why": _why_different(original, converted)})
    return {
        "equal": not differences,
        "original": original_name,
        "converted": f"{type(hf).__name__} from {folder.name}",
        "vocabulary": vocabulary,
        "prompts": len(prompts),
        "differences": differences,
    }


def _why_different(upstream: list[int], converted: list[int]) -> str:
    if upstream[-1] == EOT and converted[-1] != EOT and 0 not in upstream:
        return "truncation: upstream forces the end token into the last position, the HF tokenizer cuts before it"
    if [t for t in upstream if t] == [t for t in converted if t not in (0,)]:
        return "padding only"
    return "different tokens"


def padded_prompts_report(original_trace, faithful: dict, masked: dict, hf_mask: torch.Tensor) -> dict:
    """Real prompts: each side tokenized with its own tokenizer; padded positions show what the
    attention mask does (transformers masks them, upstream attends to them)."""
    real = ~original_trace.padding_mask
    return {
        "description": (
            "Sam3LiteTextModel.forward passes attention_mask into its text encoder, so padded positions are masked; "
            "upstream attends to them. Measured on real tokens only (positions that are not padding)."
        ),
        "prompts_with_padding": int(original_trace.padding_mask.any(dim=1).sum()),
        "masked_vs_upstream_real_tokens_max_abs": _masked_max(original_trace.text_features, masked["text_features"], real),
        "unmasked_vs_upstream_real_tokens_max_abs": _masked_max(original_trace.text_features, faithful["text_features"], real),
        # Upstream's mask is ids == 0, and id 0 is "!" in CLIP: a literal "!" counts as padding there.
        "tokenizer_mask_vs_upstream_mask_positions": int((hf_mask.bool() == original_trace.padding_mask).sum()),
        "recipe": recipes.FAITHFUL_TEXT_ONE_LINE,
    }


def _masked_max(reference: torch.Tensor, candidate: torch.Tensor, keep: torch.Tensor) -> float:
    diff = (reference.double() - candidate.double()).abs()[keep]
    return float(diff.max()) if diff.numel() else 0.0
