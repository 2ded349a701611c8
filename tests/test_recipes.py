"""Recipes run as written (issue 25): every ```python block of README.md and docs/**/*.md runs on a
tiny converted folder, and what it computes is compared with the original side on the same prompts.

Conventions (CONTRIBUTING.md, "Tests"): the blocks of one page run in order in one namespace;
`FOLDER = "..."` / `VIDEO_FOLDER = "..."` get the path of a tiny folder; a first line
`# needs: MODULE, ...` runs a block only where those modules import; `# not run: REASON` skips it.
Test `PAGE[k]` runs blocks 0..k of PAGE, so each block is reported (and skipped) on its own.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from litetext_convert.parity import recipes

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PLACEHOLDERS = {"FOLDER": "image", "VIDEO_FOLDER": "video"}
PROMPT_PAGES_MIN = 2  # the README and the parity guide show the recipe; a page dropping it is a regression


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def block_cases() -> list:
    cases = []
    for page in pages():
        name = page.relative_to(ROOT).as_posix()
        cases += [pytest.param(page, index, id=f"{name}[{index}]") for index in range(len(blocks(page)))]
    return cases


def missing_needs(code: str) -> list[str]:
    first = code.splitlines()[0] if code.strip() else ""
    if first.startswith("# not run:"):
        return [first[2:]]
    if not first.startswith("# needs:"):
        return []
    wanted = [name.strip() for name in first.removeprefix("# needs:").split(",") if name.strip()]
    return [f"needs {name}" for name in wanted if not _imports(name)]


def _imports(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None and bool(__import__(module))
    except Exception:  # a module that is present but cannot import (torchvision beside CPU torch) counts as missing
        return False


def with_folders(code: str, folders) -> str:
    """Each `NAME = "..."` placeholder assignment gets a tiny folder's path."""
    for name, kind in PLACEHOLDERS.items():
        pattern = re.compile(rf'^(\s*{name}\s*=\s*)"[^"\n]*"', re.M)
        if pattern.search(code):
            code = pattern.sub(lambda m, kind=kind: f"{m.group(1)}{str(folders(kind))!r}", code)
    return code


@pytest.fixture(scope="module")
def tiny_folders(request, converted, workdir, tokenizer_dir):
    made = {"image": converted["s0"]}

    def folder(kind: str) -> Path:
        if kind not in made:  # the video folder is built only when a block that can run asks for it
            from litetext_convert.plan.prepare import prepare
            from litetext_convert.write.convert import convert
            from tests.test_video import tiny_video_checkpoint

            checkpoint = tiny_video_checkpoint(workdir / "recipes_video_s0_ctx16.pt")
            made[kind] = workdir / "converted" / "recipes_video_s0"
            convert(prepare(str(checkpoint), num_heads=2, target="video"), made[kind], tokenizer=str(tokenizer_dir))
        return made[kind]

    return folder


@pytest.fixture(scope="module")
def original_s0(tiny_checkpoints):
    """The original side of the S0 folder: upstream's tokenizer algorithm and the clean-room (or the
    fork's) text encoder on the checkpoint's original keys."""
    from litetext_convert.parity.text import text_state_dict
    from litetext_convert.plan.prepare import prepare
    from litetext_convert.reference import load_original_text_encoder
    from tests.conftest import heads

    prepared = prepare(str(tiny_checkpoints["s0"]), num_heads=heads("s0"))
    encoder, _ = load_original_text_encoder(text_state_dict(prepared), prepared.arch, torch.float32)
    return encoder, prepared.arch.context_length


def run_page(page: Path, upto: int, folders, monkeypatch) -> dict:
    import huggingface_hub.constants

    # A Hub id left in a block fails at once instead of downloading (the constant is read at import,
    # so the environment variable alone would come too late).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    namespace: dict = {"__name__": "__docs__"}
    for index, code in enumerate(blocks(page)[: upto + 1]):
        if missing := missing_needs(code):
            pytest.skip(f"block {index} of {page.name}: {', '.join(missing)}")
        exec(compile(with_folders(code, folders), f"{page.name}[{index}]", "exec"), namespace)
    return namespace


def assert_text_matches_original(namespace: dict, original_s0, tokenizer_folder: Path) -> None:
    """The recipe's ids are upstream's ids, and its features are the original encoder's."""
    from litetext_convert.parity.text import ParityOptions
    from litetext_convert.reference import load_original_tokenizer

    encoder, context = original_s0
    original_tokenizer, _ = load_original_tokenizer(tokenizer_folder)
    ids = original_tokenizer(namespace["prompts"], context)
    assert torch.equal(namespace["ids"], ids), "the recipe tokenizes differently from upstream"
    with torch.no_grad():
        expected = encoder(ids).text_features
    atol, rtol = ParityOptions().tolerances()  # the text tolerance (configs/tolerances.toml)
    torch.testing.assert_close(namespace["text_embeds"].pooler_output, expected, atol=atol, rtol=rtol)


def assert_detector_matches_the_faithful_call(namespace: dict) -> None:
    """The docs' detector call is the call whole-detector parity proves against Meta's detector."""
    from litetext_convert.parity.detector import run_transformers

    from litetext_convert.dtypes import stage_tolerances

    # The whole-detector float32 tolerances: batched and one-prompt calls round differently.
    bounds = stage_tolerances("float32", "detector")
    pixel_values, ids, outputs = namespace["pixel_values"], namespace["ids"], namespace["outputs"]
    for row in range(ids.shape[0]):  # one prompt at a time: parity's stages assume equal prompt lengths in a batch
        faithful = run_transformers(namespace["model"], pixel_values[row:row + 1], ids[row:row + 1], None, None).faithful
        for name in ("pred_logits", "pred_boxes", "pred_masks", "presence_logits"):
            _, kind, value = next(bound for bound in bounds if re.match(bound[0], name))
            expected, shown = faithful[name].double(), getattr(outputs, name)[row:row + 1].double()
            limit = value if kind == "abs" else value * float(expected.abs().max())
            assert float((shown - expected).abs().max()) <= limit, f"{name}: the docs' call is not the faithful call"


@pytest.mark.parametrize(("page", "upto"), block_cases())
def test_block_runs_as_written_and_computes_what_the_original_computes(page, upto, tiny_folders, original_s0, monkeypatch):
    namespace = run_page(page, upto, tiny_folders, monkeypatch)
    code = blocks(page)[upto]
    if "get_text_features" in code:
        assert_text_matches_original(namespace, original_s0, tiny_folders("image"))
    if "input_boxes=" in code:
        assert_detector_matches_the_faithful_call(namespace)


def test_pages_show_the_recipe_lines_verbatim():
    """The docs embed parity/recipes.py's lines, not their own copy of them."""
    showing = 0
    for page in pages():
        for code in blocks(page):
            lines = {line.strip() for line in code.splitlines()}
            if "get_text_features" in code:
                assert set(recipes.TEXT_LINES) <= lines, f"{page.name}: the text recipe differs from recipes.TEXT_LINES"
                showing += 1
            if "input_boxes=" in code:
                detector_lines = {line.strip() for part in recipes.DETECTOR_LINES for line in part.splitlines()}
                assert detector_lines <= lines, f"{page.name}: the detector call differs from recipes.DETECTOR_LINES"
    assert showing >= PROMPT_PAGES_MIN


def test_the_check_fails_for_the_masked_text_call(converted, original_s0, tokenizer_dir):
    """The comparison is sharp: the text encoder with transformers' own attention mask (what the
    processor's defaults give) does not pass it on padded prompts."""
    from transformers import AutoTokenizer, Sam3LiteTextModel

    model = Sam3LiteTextModel.from_pretrained(str(converted["s0"])).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(converted["s0"]))
    prompts = ["a red car", "person"]
    ids = tokenizer(prompts, padding="max_length", max_length=original_s0[1], truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        masked = model.get_text_features(input_ids=ids, attention_mask=(ids != 0))
    namespace = {"prompts": prompts, "ids": ids, "text_embeds": masked}
    with pytest.raises(AssertionError):
        assert_text_matches_original(namespace, original_s0, converted["s0"])


def test_parity_and_audit_print_the_same_recipe():
    from litetext_convert.audit.behaviour import USAGE_FINDINGS
    from litetext_convert.parity.recipes import masked_dummy_box
    from litetext_convert.parity.text import padded_prompts_report
    from litetext_convert.reference import TextTrace

    features = torch.zeros(1, 4, 2)
    trace = TextTrace(features, [], features, features, torch.zeros(1, 2), torch.tensor([[False, False, True, True]]))
    report = padded_prompts_report(trace, {"text_features": features}, {"text_features": features}, torch.ones(1, 4))
    assert report["recipe"] == recipes.FAITHFUL_TEXT_ONE_LINE
    assert USAGE_FINDINGS["no_text_mask"].fix == recipes.NO_TEXT_MASK_FIX
    # The code text builds the same box and label as the code parity runs.
    prompts = ["a", "b"]
    shown = {}
    exec(f"import torch\n{recipes.DUMMY_BOXES}\n{recipes.BOX_LABELS}", {"prompts": prompts}, shown)
    boxes, labels = masked_dummy_box(len(prompts))
    assert torch.equal(shown["boxes"], boxes) and torch.equal(shown["box_labels"], labels)
