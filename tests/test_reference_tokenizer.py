"""The clean-room CLIP tokenizer, the synthetic vocabulary, and how both compare with transformers'
CLIPTokenizer and (when importable) upstream's own SimpleTokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from litetext_convert.reference.synthetic_vocab import (
    hf_vocab,
    synthetic_merges,
    write_hf_clip_tokenizer,
    write_upstream_bpe_file,
)
from litetext_convert.reference.tokenizer import MAX_MERGES, CleanRoomTokenizer, bytes_to_unicode

START, END, CONTEXT = 49406, 49407, 16
CORPUS = [
    "a photo of a cat",
    "",
    "   ",
    "  Hello,   WORLD!!  ",
    "MiXeD cAsE and ALL CAPS",
    "123 4567 3.14 1,000,000",
    "it's the dog's bone, isn't it? we'll see",
    "red-car/blue_truck (x2) [yes] {no} #tag @user $5 %20 ^ * ~`",
    "naïve café 東京 😀 مرحبا",
    "tab\tnew\nline\r\n end",
    "the quick brown fox jumps over the lazy dog and keeps running far beyond the context",
]


def _random_prompts(count: int, seed: int = 0) -> list[str]:
    pool = "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789 .,;:!?'\"-_/()#@\t\néüßçøå東京😀"
    generator = random.Random(seed)
    return ["".join(generator.choice(pool) for _ in range(generator.randint(0, 60))) for _ in range(count)]


@pytest.fixture(scope="module")
def tokenizer() -> CleanRoomTokenizer:
    return CleanRoomTokenizer(list(synthetic_merges()))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = write_hf_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"), CONTEXT)
    return transformers.CLIPTokenizer.from_pretrained(folder)


def _hf_ids(hf_tokenizer, text: str, context: int = CONTEXT) -> list[int]:
    return hf_tokenizer(text, padding="max_length", truncation=True, max_length=context)["input_ids"]


def _zero_padded(ids: list[int]) -> list[int]:
    """HF pads with the end id; upstream pads with 0. Map HF's padding to upstream's."""
    end = ids.index(END)
    return ids[: end + 1] + [0] * (len(ids) - end - 1)


def test_byte_table_is_a_bijection_onto_printable_characters():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"
    assert all(character.isprintable() and not character.isspace() for character in table.values())


def test_synthetic_merges_are_a_valid_clip_sized_bpe():
    merges = synthetic_merges()
    assert len(merges) == MAX_MERGES == 48894
    known = set(bytes_to_unicode().values())
    known |= {symbol + "</w>" for symbol in known}
    base = set(known)
    for left, right in merges:
        assert left in known and right in known, (left, right)
        known.add(left + right)
    assert len(known) - len(base) == MAX_MERGES  # every merge result is new
    vocab = hf_vocab(merges)
    assert len(vocab) == 49408 and vocab["<|startoftext|>"] == START and vocab["<|endoftext|>"] == END


def test_special_ids_and_zero_padding(tokenizer):
    assert (tokenizer.start_id, tokenizer.end_id) == (START, END)
    ids = tokenizer(["", "a cat"], CONTEXT)
    assert ids.dtype == torch.long and ids.shape == (2, CONTEXT)
    assert ids[0].tolist() == [START, END] + [0] * (CONTEXT - 2)
    assert ids[1, 0] == START and (ids[1] == END).sum() == 1 and ids[1, -1] == 0


def test_overlong_prompt_is_cut_and_ends_with_end_id(tokenizer):
    text = " ".join(["word"] * 40)
    ids = tokenizer(text, CONTEXT)[0]
    full = [START, *tokenizer.encode(text), END]
    assert ids.tolist() == full[: CONTEXT - 1] + [END]


def test_text_is_cleaned_like_upstream(tokenizer):
    same = tokenizer(["  A  Red\tCAR \n", "a red car"], CONTEXT)
    assert torch.equal(same[0], same[1])
    html = tokenizer(["cats &amp;amp; dogs", "cats & dogs"], CONTEXT)
    assert torch.equal(html[0], html[1])  # unescaped twice
    assert tokenizer.encode("<start_of_text>") == [START]  # upstream's special spelling is honoured


def test_a_single_string_is_a_batch_of_one(tokenizer):
    assert torch.equal(tokenizer("a cat", CONTEXT), tokenizer(["a cat"], CONTEXT))


def test_file_formats_load_the_same_merges(tmp_path, tokenizer):
    from_gzip = CleanRoomTokenizer.from_bpe_file(write_upstream_bpe_file(tmp_path / "bpe.txt.gz"))
    write_hf_clip_tokenizer(tmp_path / "hf", CONTEXT)
    from_merges = CleanRoomTokenizer.from_merges_txt(tmp_path / "hf" / "merges.txt")
    for loaded in (from_gzip, from_merges):
        assert loaded.ranks == tokenizer.ranks and loaded.encoder == tokenizer.encoder


def test_hf_clip_tokenizer_agrees_up_to_padding(tokenizer, hf_tokenizer):
    for text in CORPUS + _random_prompts(300):
        ours = tokenizer(text, CONTEXT)[0].tolist()
        theirs = _hf_ids(hf_tokenizer, text)
        assert len(theirs) == CONTEXT
        assert _zero_padded(theirs) == ours, text


def test_hf_clip_tokenizer_known_differences(tokenizer, hf_tokenizer):
    """Documented in synthetic_vocab: padding id, HTML entities, upstream's special-token spelling."""
    assert _hf_ids(hf_tokenizer, "a cat")[-1] == END and tokenizer("a cat", CONTEXT)[0, -1] == 0
    for text in ("&amp;", "<start_of_text> hi"):
        assert _zero_padded(_hf_ids(hf_tokenizer, text)) != tokenizer(text, CONTEXT)[0].tolist()


# ---------------------------------------------------------------------------------------------------
# Upstream's own tokenizer (the fork's, or Meta's sam3 which ships the same SimpleTokenizer).


def _upstream_tokenizer_module():
    return pytest.importorskip(
        "sam3.model.tokenizer_ve", reason="upstream SimpleTokenizer (sam3.model.tokenizer_ve) not importable"
    )


def _bundled_clip_vocabulary(module) -> Path | None:
    """The real CLIP merges next to upstream's package: sam3/assets (Meta) or <repo>/sam3/assets (fork)."""
    package = Path(module.__file__).resolve().parents[1]
    for folder in (package / "assets", package.parent / "assets"):
        if (folder / "bpe_simple_vocab_16e6.txt.gz").is_file():
            return folder / "bpe_simple_vocab_16e6.txt.gz"
    return None


def _assert_same_ids(upstream, ours, prompts: list[str]):
    for context in (CONTEXT, 77):
        for text in prompts:
            assert ours(text, context).tolist() == upstream(text, context).tolist(), (context, text)


def test_matches_upstream_simple_tokenizer_on_synthetic_vocabulary(tmp_path):
    module = _upstream_tokenizer_module()
    bpe_path = write_upstream_bpe_file(tmp_path / "bpe.txt.gz")
    upstream = module.SimpleTokenizer(bpe_path=str(bpe_path))
    _assert_same_ids(upstream, CleanRoomTokenizer.from_bpe_file(bpe_path), CORPUS + _random_prompts(200, seed=1))


def test_matches_upstream_simple_tokenizer_on_real_clip_vocabulary():
    module = _upstream_tokenizer_module()
    bpe_path = _bundled_clip_vocabulary(module)
    if bpe_path is None:
        pytest.skip("upstream's bundled bpe_simple_vocab_16e6.txt.gz not found")
    upstream = module.SimpleTokenizer(bpe_path=str(bpe_path))
    _assert_same_ids(upstream, CleanRoomTokenizer.from_bpe_file(bpe_path), CORPUS + _random_prompts(200, seed=2))
