"""The planner on the real ARC-AGI-1 prompts at maxTokens 2048: under 5% padding in at most
4 compiled shapes (#17), on the evaluation prompts alone (231 fit 2048 tokens) and on
training and evaluation together."""

from __future__ import annotations

import pytest

from layertap.arc.builtin import write_builtin_tasks
from layertap.arc.dataset import iter_samples
from layertap.extract.plan import _bucketed_plan, make_plan
from layertap_api.spec import DatasetSpec

QWEN_0_5B_ATTENTION = 1.2e-4  # prices.attention_weight of Qwen2.5-0.5B


ARC_AGI_1_SPLITS = [("eval",), pytest.param(("train", "eval"), marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=ARC_AGI_1_SPLITS, ids="+".join)
def arc_agi_1_lengths(request, tmp_path_factory, tokenizer) -> dict[int, int]:
    directory = write_builtin_tasks(tmp_path_factory.mktemp("arc-agi-1"), "arcagi1", splits=request.param)
    spec = DatasetSpec.model_validate({"uri": str(directory), "format": "arc-kaggle", "maxTokens": 2048})
    return {s.index: len(s.token_ids) for s in iter_samples(spec, tokenizer)}


@pytest.mark.parametrize("rows_per_step", [1, 8, 16])
def test_arc_agi_1_prompts_pad_under_5_percent_in_at_most_4_shapes(arc_agi_1_lengths, rows_per_step):
    assert len(arc_agi_1_lengths) > 200 and max(arc_agi_1_lengths.values()) <= 2048
    plan = make_plan(arc_agi_1_lengths, rows_per_step, attention_weight=QWEN_0_5B_ATTENTION)
    assert plan.padding_fraction < 0.05 and len(plan.shapes) <= 4
    split_by_length = _bucketed_plan(arc_agi_1_lengths, rows_per_step, 4)  # the planner before #17
    assert split_by_length.padding_fraction > 0.12
