"""Segment labels from tokenizer offsets, checked on every ARC-AGI-1 and ARC-AGI-2 prompt."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from layertap.arc import segments
from layertap.arc.encoders import build_encoder
from layertap.arc.prompts import render_prompt
from layertap.arc.tokens import label_tokens
from layertap.model.random_checkpoint import CHAT_TEMPLATE, QWEN2_SPLIT

DEFAULT = build_encoder("Shape(RowNumber(Minimal))")
SYMBOLS = "ñò÷ûąćďęĚĞ"


def _rows(labels, cells) -> np.ndarray:
    table = np.column_stack([labels, cells]).astype(np.int64)
    return table[np.lexsort(table.T[::-1])]


def check_labels(prompt, offsets, labels, exact: bool = True) -> None:
    """Every grid cell is labelled on exactly one token (exact: single-digit tokens) or at most
    one; the token holds the cell's character; grid-labelled tokens lie in their grid's span."""
    offsets = np.asarray(offsets)
    cell_tokens = np.flatnonzero(labels.cells[:, 0] >= 0)
    got = _rows(labels.segments[cell_tokens], labels.cells[cell_tokens])
    want = _rows(prompt.cell_labels, prompt.cells)
    assert len(np.unique(got[:, :3], axis=0)) == len(got)  # no cell twice
    if exact:
        assert np.array_equal(got, want)
        codes = np.frombuffer(prompt.text.encode("utf-32-le"), dtype=np.uint32)
        starts, ends = offsets[cell_tokens].T
        assert np.all(ends - starts == 1) and np.array_equal(codes[starts], ord("0") + labels.cells[cell_tokens, 2])
    else:
        assert {tuple(r) for r in got} <= {tuple(r) for r in want}
        for t in cell_tokens:
            piece = prompt.text[offsets[t, 0] : offsets[t, 1]].translate(str.maketrans(SYMBOLS, "0123456789"))
            assert str(labels.cells[t, 2]) in piece
    spans = np.array([(s, e, label) for s, e, label in prompt.spans])
    span_of = dict(zip(spans[:, 2], spans[:, :2]))
    grid_tokens = np.flatnonzero(labels.segments > segments.SYSTEM)
    bounds = np.array([span_of[label] for label in labels.segments[grid_tokens]]).reshape(-1, 2)
    assert np.all((offsets[grid_tokens, 0] < bounds[:, 1]) & (offsets[grid_tokens, 1] > bounds[:, 0]))


def tokenize(tokenizer, prompts):
    encodings = tokenizer([p.text for p in prompts], add_special_tokens=False, return_offsets_mapping=True)
    return encodings["offset_mapping"]


@pytest.mark.slow
def test_every_arc_prompt_labels_every_cell_exactly_once(arc_tasks, tokenizer) -> None:
    prompts = [
        render_prompt(task, i, DEFAULT, tokenizer, variant="training")
        for task in arc_tasks
        for i in range(len(task.test))
    ]
    for prompt, offsets in zip(prompts, tokenize(tokenizer, prompts)):
        labels = label_tokens(prompt, offsets)
        assert labels.merged_cells == 0
        check_labels(prompt, offsets, labels)


@pytest.fixture(scope="module")
def merging_tokenizer(arc_tasks):
    """A byte-level BPE trained on ARC prompts with Qwen2's split: it learns merges across
    part boundaries ("```\\n\\n", "\\n\\n", " shape") while digits stay single, as in Qwen2."""
    texts = [DEFAULT.to_text(p.input) + "\n\n### Output\n\n```\n\n" for t in arc_tasks[:300] for p in t.train]
    texts += [build_encoder("Shape(ReplaceNumber(Minimal))").to_text(t.train[0].input) for t in arc_tasks[:300]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=3000,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHAT_TEMPLATE
    )


def test_merged_newlines_and_fences_never_mislabel_a_cell(arc_tasks, merging_tokenizer) -> None:
    prompts = [render_prompt(t, 0, DEFAULT, merging_tokenizer, variant="training") for t in arc_tasks[:200]]
    all_offsets = tokenize(merging_tokenizer, prompts)
    pieces = {prompts[0].text[s:e] for s, e in all_offsets[0]}
    assert "```\n\n" in pieces  # a grid's closing fence merged with the newlines after it
    for prompt, offsets in zip(prompts, all_offsets):
        labels = label_tokens(prompt, offsets)
        check_labels(prompt, offsets, labels)
        fence = [t for t, (s, e) in enumerate(offsets) if prompt.text[s:e] == "```\n\n"]
        assert all(labels.segments[t] > segments.SYSTEM for t in fence)  # stays with its grid


def test_merged_letters_label_the_first_cell_and_count_the_rest(arc_tasks, merging_tokenizer) -> None:
    encoder = build_encoder("Shape(ReplaceNumber(Minimal))")  # symbols are letters: BPE merges them
    prompts = [render_prompt(t, 0, encoder, merging_tokenizer) for t in arc_tasks[:50]]
    merged = 0
    for prompt, offsets in zip(prompts, tokenize(merging_tokenizer, prompts)):
        labels = label_tokens(prompt, offsets)
        check_labels(prompt, offsets, labels, exact=False)
        assert (labels.cells[:, 0] >= 0).sum() + labels.merged_cells == len(prompt.cells)
        merged += labels.merged_cells
    assert merged > 0


def test_truncated_offsets_keep_labels_of_what_remains(arc_tasks, tokenizer) -> None:
    prompt = render_prompt(arc_tasks[0], 0, DEFAULT, tokenizer)
    (offsets,) = tokenize(tokenizer, [prompt])
    full = label_tokens(prompt, offsets)
    cut = label_tokens(prompt, offsets[:100])
    assert np.array_equal(cut.segments, full.segments[:100]) and np.array_equal(cut.cells, full.cells[:100])


def test_segment_names_and_selection() -> None:
    names = segments.segment_names
    assert names[0] == "other" and names[segments.TEST_INPUT] == "test-input"
    assert names[segments.example_label(3, "output")] == "example-3-output"
    assert segments.select_labels(["test-input", "answer"]) == [segments.TEST_INPUT, segments.ANSWER]
    assert len(segments.select_labels(["example-input"])) == segments.MAX_EXAMPLES
    with pytest.raises(ValueError, match=r"extraction.segments: unknown segment 'test_input'"):
        segments.select_labels(["test_input"])
