"""ARC prompts in the arc24 templates, rendered through the tokenizer's chat template.

A prompt is built piece by piece so that the character span of every part (system
prompt, each example grid, the test input, the answer) and the start of every grid
cell are known exactly; `tokens.label_tokens` turns them into per-token labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from layertap.arc import segments
from layertap.arc.encoders import GridEncoder
from layertap.arc.task import Task
from layertap.errors import LayerTapError

Variant = Literal["inference", "training"]

_SYSTEM_V0 = (
    "You are a helpful AI assistant. Your job is to solve tasks from the Abstraction and Reasoning Challenge (ARC). \n"
    "The user will present you with sample input and output grids for each task. \n"
    "Your job will be to understand the transformation between the input and the output and apply it to the last input "
    "grid given by the user. \n"
    "The puzzle-like inputs and outputs present a grid where each square can be one of ten colors. A grid can be any "
    "height or width between 1x1 and 30x30.\n"
    "The background of the grid is typically colored with 0.\n"
    "The tasks from ARC are based on the following priors:\n"
    "\n"
    "- Objectness: Objects persist and cannot appear or disappear without reason. Objects can interact or not "
    "depending on the circumstances.\n"
    '- Goal-directed: Objects can be animate or inanimate. Some objects are "agents" - they have intentions and they '
    "pursue goals.\n"
    "- Numbers & counting: Objects can be counted or sorted by their shape, appearance, or movement using basic "
    "mathematics like addition, subtraction, and comparison.\n"
    "- Basic geometry & topology: Objects can be shapes like rectangles, triangles, and circles which can be mirrored, "
    "rotated, translated, deformed, combined, repeated, etc. Differences in distances can be detected.\n"
    "\n"
    "The transformations between input and output should be based on these priors.\n"
)
_INTRO_V0 = (
    "Let's see if you can solve this simple ARC task. These are some input-output grid examples that define the task.\n"
)
_SYSTEM_V1 = "You are a helpful assistant."
_INTRO_V1 = (
    "Let's see if you can solve this simple Abstraction and Reasoning Challenge (ARC) task.\n"
    "Below there are some input-output grid examples that define the task.\n"
    "Your job is to understand the transformation between the input and the output and apply it to the test input "
    "grid.\n"
    "The transformations are always based on the following priors: objectness, goal-directed, numbers & counting, and "
    "basic geometry & topology.\n"
)


@dataclass(frozen=True)
class Template:
    system: str
    intro: str


TEMPLATES: dict[str, Template] = {
    "output-from-examples-v0": Template(_SYSTEM_V0, _INTRO_V0),
    "output-from-examples-v1": Template(_SYSTEM_V1, _INTRO_V1),
}
ANSWER_HEADER = "### Output\n\n"


@dataclass(frozen=True)
class Prompt:
    """Prompt text with its parts located.

    spans: (start, end, label) character spans of labelled parts; the rest is label 0.
    cell_starts: [N] offset of the first character of each grid cell in `text`.
    cells: [N, 3] (row, col, colour) of those cells; cell_labels: [N] their grid's label.
    """

    text: str
    spans: tuple[tuple[int, int, int], ...]
    cell_starts: np.ndarray
    cells: np.ndarray
    cell_labels: np.ndarray


class _Builder:
    """Concatenates text while recording labelled spans and cell offsets."""

    def __init__(self, encoder: GridEncoder):
        self.encoder = encoder
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[tuple[int, int, int]] = []
        self.cell_starts: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []
        self.cell_labels: list[np.ndarray] = []

    def text(self, text: str, label: int | None = None) -> None:
        if label is not None:
            self.spans.append((self.length, self.length + len(text), label))
        self.parts.append(text)
        self.length += len(text)

    def grid(self, grid: np.ndarray, label: int) -> None:
        encoded = self.encoder.encode(grid)
        rows, cols = np.indices(grid.shape)
        self.cell_starts.append(self.length + encoded.cell_starts.ravel())
        self.cells.append(np.stack([rows.ravel(), cols.ravel(), grid.ravel()], axis=1))
        self.cell_labels.append(np.full(grid.size, label))
        self.text(encoded.text, label)

    def build(self) -> tuple[str, list, list, list, list]:
        return "".join(self.parts), self.spans, self.cell_starts, self.cells, self.cell_labels


def render_prompt(
    task: Task,
    test_index: int,
    encoder: GridEncoder,
    tokenizer,
    template: str = "output-from-examples-v1",
    variant: Variant = "inference",
) -> Prompt:
    """The chat-formatted prompt for one test input of `task`.

    inference: ends with the assistant's output prefix ("### Output\\n\\n```grid"), where the
    model would start writing the answer; training: includes the answer grid and the
    end-of-turn text the chat template adds after it.
    """
    if template not in TEMPLATES:
        raise LayerTapError(f"dataset.prompt.template: unknown template {template!r}; known: {', '.join(TEMPLATES)}")
    if len(task.train) > segments.MAX_EXAMPLES:
        raise LayerTapError(
            f"task {task.id}: {len(task.train)} train pairs, at most {segments.MAX_EXAMPLES} are supported"
        )
    chosen = TEMPLATES[template]
    test = task.test[test_index]
    if variant == "training" and test.output is None:
        raise LayerTapError(
            f"task {task.id}: test {test_index} has no output, which the training variant needs "
            "(give the solutions, e.g. the Kaggle *_solutions.json next to the challenges)"
        )

    user = _Builder(encoder)
    user.text(chosen.intro)
    for k, pair in enumerate(task.train, start=1):
        user.text(f"\n## Example {k}\n\n### Input\n\n")
        user.grid(pair.input, segments.example_label(k, "input"))
        user.text("\n\n### Output\n\n")
        user.grid(pair.output, segments.example_label(k, "output"))
        user.text("\n")
    user.text("\n## Test case\n\n### Input\n\n")
    user.grid(test.input, segments.TEST_INPUT)

    assistant = _Builder(encoder)
    assistant.text(ANSWER_HEADER)
    if variant == "training":
        assistant.grid(test.output, segments.ANSWER)
    else:
        assistant.text(encoder.answer_prefix, segments.ANSWER)

    return _through_chat_template(chosen.system, user, assistant, tokenizer, variant)


def _through_chat_template(system: str, user: _Builder, assistant: _Builder, tokenizer, variant: Variant) -> Prompt:
    user_text, *user_parts = user.build()
    answer_text, *answer_parts = assistant.build()
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": user_text},
        {"role": "assistant", "content": answer_text},
    ]
    if not getattr(tokenizer, "chat_template", None):
        raise LayerTapError("the model's tokenizer has no chat template (tokenizer_config.json 'chat_template')")
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)

    # The template only adds scaffolding around each message; find where each one landed.
    offsets = []
    cursor = 0
    for message in messages:
        at = rendered.find(message["content"], cursor)
        if at < 0:
            raise LayerTapError(
                f"the chat template changed the {message['role']} message's text; ARC prompts need it verbatim"
            )
        offsets.append(at)
        cursor = at + len(message["content"])
    text = rendered if variant == "training" else rendered[:cursor]

    spans = [(offsets[0], offsets[0] + len(system), segments.SYSTEM)]
    starts, cells, labels = [], [], []
    for base, (part_spans, part_starts, part_cells, part_labels) in zip(offsets[1:], (user_parts, answer_parts)):
        spans += [(base + s, base + e, label) for s, e, label in part_spans]
        starts += [base + s for s in part_starts]
        cells += part_cells
        labels += part_labels
    return Prompt(
        text=text,
        spans=tuple(spans),
        cell_starts=np.concatenate(starts).astype(np.int64),
        cells=np.concatenate(cells).astype(np.int16),
        cell_labels=np.concatenate(labels).astype(np.int16),
    )
