"""Fixed shapes: the step compiles once per shape of the plan and the gather of what it stores
once per shape and capacity, however many steps the run has."""

from __future__ import annotations

import re

from compiles import counting_compiles

from .conftest import extract, write_jsonl


def texts(n: int) -> list[str]:
    # lengths vary from sample to sample, so only packing keeps the shapes fixed
    return [f"Sample {i}: " + "the quick brown fox " * (1 + i % 7) for i in range(n)]


def plan_of(output: str) -> tuple[int, int]:
    """(steps, compiled programs: shapes and gathers) from the plan line `layertap extract` prints."""
    found = re.search(r"plan +(\d+) steps? of .*\((\d+) compiled shapes?.*; (\d+) compaction programs?", output)
    steps, shapes, gathers = map(int, found.groups())
    return steps, shapes + gathers


def test_more_steps_compile_nothing_more(checkpoint, tmp_path, capsys):
    flags = ("--layers", "1-3", "--batch-size", "1")
    short, long = write_jsonl(tmp_path / "short.jsonl", texts(3)), write_jsonl(tmp_path / "long.jsonl", texts(40))
    assert extract(checkpoint, short, tmp_path / "warm", *flags) == 0  # first-use compiles of helpers
    capsys.readouterr()
    with counting_compiles() as few:
        assert extract(checkpoint, short, tmp_path / "few", *flags) == 0
    _few_steps, few_shapes = plan_of(capsys.readouterr().out)
    with counting_compiles() as many:
        assert extract(checkpoint, long, tmp_path / "many", *flags) == 0
    many_steps, many_shapes = plan_of(capsys.readouterr().out)
    assert few[0] >= few_shapes >= 1  # the step itself: the counter sees compiles
    assert many_steps > 2 * many_shapes  # most steps reuse compiled programs
    assert many[0] - many_shapes == few[0] - few_shapes  # one compile per shape, none per step
