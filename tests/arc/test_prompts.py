from __future__ import annotations

from pathlib import Path

import pytest

from layertap.arc.encoders import build_encoder
from layertap.arc.prompts import render_prompt
from layertap.errors import LayerTapError

GOLDEN = Path(__file__).parent / "golden"
DEFAULT = build_encoder("Shape(RowNumber(Minimal))")


@pytest.mark.parametrize(
    ("task_id", "template", "variant"),
    [
        ("6150a2bd", "output-from-examples-v1", "inference"),
        ("6150a2bd", "output-from-examples-v1", "training"),
        ("d631b094", "output-from-examples-v0", "inference"),
        ("833966f4", "output-from-examples-v1", "training"),  # ARC-AGI-2
    ],
)
def test_golden_prompt_text(arc_tasks, tokenizer, task_id, template, variant) -> None:
    """The golden files equal what arc24's templates render through the same chat template."""
    task = next(t for t in arc_tasks if t.id == task_id)
    prompt = render_prompt(task, 0, DEFAULT, tokenizer, template, variant)
    golden = (GOLDEN / f"{task_id}-{template.rsplit('-', 1)[1]}-{variant}.txt").read_text()
    assert prompt.text == golden


def test_inference_ends_at_the_output_prefix_training_includes_the_answer(arc_tasks, tokenizer) -> None:
    task = next(t for t in arc_tasks if t.id == "6150a2bd")
    inference = render_prompt(task, 0, DEFAULT, tokenizer, variant="inference")
    training = render_prompt(task, 0, DEFAULT, tokenizer, variant="training")
    assert inference.text.endswith("<|im_start|>assistant\n### Output\n\n```grid")
    answer = DEFAULT.to_text(task.test[0].output)
    assert training.text.startswith(inference.text)
    assert training.text.endswith(f"### Output\n\n{answer}<|im_end|>\n")
    assert len(training.cells) == len(inference.cells) + task.test[0].output.size


def test_one_prompt_per_test_input(arc_tasks, tokenizer) -> None:
    task = next(t for t in arc_tasks if len(t.test) > 1)
    texts = [render_prompt(task, i, DEFAULT, tokenizer).text for i in range(len(task.test))]
    for i, text in enumerate(texts):
        assert text.split("## Test case")[1].count(DEFAULT.to_text(task.test[i].input)) == 1
    assert len(set(texts)) == len(texts)


def test_training_variant_needs_the_answer(arc_tasks, tokenizer) -> None:
    task = next(t for t in arc_tasks if t.id == "6150a2bd")
    unsolved = type(task)(task.id, task.train, (type(task.test[0])(task.test[0].input, None),))
    with pytest.raises(LayerTapError, match=r"task 6150a2bd: test 0 has no output.*solutions"):
        render_prompt(unsolved, 0, DEFAULT, tokenizer, variant="training")
    with pytest.raises(LayerTapError, match=r"unknown template 'v9'"):
        render_prompt(task, 0, DEFAULT, tokenizer, template="v9")


def _with_template(tokenizer, template: str):
    from copy import deepcopy

    other = deepcopy(tokenizer)
    other.chat_template = template
    return other


def test_templates_that_add_scaffolding_work_and_ones_that_edit_text_are_refused(arc_tasks, tokenizer) -> None:
    task = next(t for t in arc_tasks if t.id == "6150a2bd")
    thinking = _with_template(
        tokenizer,
        (
            "{%- for m in messages %}<|im_start|>{{ m['role'] }}\n"
            "{%- if m['role'] == 'assistant' %}<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n{%- "
            "endfor %}"
        ),
    )
    prompt = render_prompt(task, 0, DEFAULT, thinking)
    assert prompt.text.endswith("<|im_start|>assistant<think>\n\n</think>\n\n### Output\n\n```grid")
    trimming = _with_template(tokenizer, "{%- for m in messages %}{{ m['content'] | trim }}\n{%- endfor %}")
    with pytest.raises(LayerTapError, match=r"chat template changed the system message's text"):
        render_prompt(task, 0, DEFAULT, trimming, template="output-from-examples-v0")
