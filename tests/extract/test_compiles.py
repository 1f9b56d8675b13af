"""Fixed shapes: the step compiles once, however many steps the run has."""

from __future__ import annotations

from compiles import counting_compiles

from .conftest import extract, write_jsonl


def texts(n: int) -> list[str]:
    # lengths vary from sample to sample, so only packing keeps the shapes fixed
    return [f"Sample {i}: " + "the quick brown fox " * (1 + i % 7) for i in range(n)]


def test_more_steps_compile_nothing_more(checkpoint, tmp_path):
    flags = ("--layers", "1-3", "--batch-size", "1")
    short, long = write_jsonl(tmp_path / "short.jsonl", texts(3)), write_jsonl(tmp_path / "long.jsonl", texts(40))
    assert extract(checkpoint, short, tmp_path / "warm", *flags) == 0  # first-use compiles of helpers
    with counting_compiles() as few:
        assert extract(checkpoint, short, tmp_path / "few", *flags) == 0
    with counting_compiles() as many:
        assert extract(checkpoint, long, tmp_path / "many", *flags) == 0
    assert few[0] >= 1  # the step itself: the counter sees compiles
    assert many[0] == few[0]
