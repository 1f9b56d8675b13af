"""dataset.select as a pure function: ids -> offset -> sample -> limit, in dataset order."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from layertap.data.selection import select
from layertap.errors import LayerTapError
from layertap_api.spec import SelectionSpec

KEYS = [f"t{i:02d}" for i in range(40)]


def chosen(spec: dict | None, keys=KEYS, **kwargs) -> list[str]:
    selection = None if spec is None else SelectionSpec.model_validate(spec)
    return list(select(iter(keys), lambda key: key, selection, uri="/data/tasks.json", **kwargs))


def test_unset_keeps_everything_and_passes_the_items_through():
    items = [object(), object()]
    assert list(select(items, str, None, uri="x")) == items
    assert chosen({}) == KEYS


def test_each_step_alone():
    assert chosen({"ids": ["t07", "t03"]}) == ["t03", "t07"]  # dataset order, not the list's
    assert chosen({"offset": 37}) == ["t37", "t38", "t39"]
    assert chosen({"limit": 3}) == ["t00", "t01", "t02"]
    subset = chosen({"sample": 5, "seed": 1})
    assert len(subset) == 5 and subset == sorted(subset) and set(subset) <= set(KEYS)


def test_order_of_application_is_ids_offset_sample_limit():
    ids = ["t30", "t02", "t10", "t11", "t20", "t25", "t05"]
    # ids in dataset order: t02 t05 t10 t11 t20 t25 t30; offset 2 drops t02 t05
    assert chosen({"ids": ids, "offset": 2}) == ["t10", "t11", "t20", "t25", "t30"]
    spec = {"ids": ids, "offset": 2, "sample": 3, "seed": 4}
    subset = chosen(spec)
    assert len(subset) == 3 and set(subset) <= {"t10", "t11", "t20", "t25", "t30"} and subset == sorted(subset)
    # limit comes last: the first 2 of the sampled 3, not a sample of the first 2
    assert chosen({**spec, "limit": 2}) == subset[:2]
    assert chosen({"offset": 5, "limit": 2}) == ["t05", "t06"]


def test_the_sample_depends_on_the_seed_and_the_keys_only():
    a = chosen({"sample": 10, "seed": 7})
    assert chosen({"sample": 10, "seed": 7}) == a  # the same on every call, host and process
    assert chosen({"sample": 10, "seed": 8}) != a
    # Items are kept by their key's rank, not by position: a larger sample contains a
    # smaller one, the dataset read in another order gives the same set, and in a longer
    # dataset the items also in this one are this one's sample of that size.
    assert set(chosen({"sample": 5, "seed": 7})) <= set(a)
    assert chosen({"sample": 10, "seed": 7}, keys=KEYS[::-1]) == a[::-1]
    longer = [f"u{i}" for i in range(40)] + KEYS
    shared = [key for key in chosen({"sample": 20, "seed": 7}, keys=longer) if key in KEYS]
    assert 0 < len(shared) < 20 and shared == chosen({"sample": len(shared), "seed": 7})
    subsets = {tuple(chosen({"sample": 10, "seed": seed})) for seed in range(20)}
    assert len(subsets) == 20  # different seeds, different subsets
    counts = dict.fromkeys(KEYS, 0)
    for seed in range(400):
        for key in chosen({"sample": 10, "seed": seed}):
            counts[key] += 1
    assert min(counts.values()) > 50 and max(counts.values()) < 150  # each key about 100 times: uniform-ish


def test_the_sample_is_independent_of_how_the_stream_is_read():
    spec = SelectionSpec(sample=6, seed=3)
    from_list = list(select(KEYS, lambda k: k, spec, uri="x"))
    from_generator = list(select((k for k in KEYS), lambda k: k, spec, uri="x"))
    assert from_list == from_generator


def test_nothing_is_read_before_the_first_item_is_asked_for():
    def boom():
        raise AssertionError("read")
        yield

    selected = select(boom(), str, SelectionSpec(ids=["a"]), uri="x")
    with pytest.raises(AssertionError, match="read"):
        next(selected)


def test_offset_and_limit_stream_without_reading_the_rest():
    read = []

    def keys():
        for key in KEYS:
            read.append(key)
            yield key

    assert list(select(keys(), lambda k: k, SelectionSpec(offset=2, limit=3), uri="x")) == ["t02", "t03", "t04"]
    assert len(read) == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"ids": ["t01", "nope", "t02", "zz"]},
            r"^dataset.select.ids: task\(s\) nope, zz not in /data/tasks.json \(40 tasks\)$",
        ),
        (
            {"ids": [f"x{i}" for i in range(8)]},
            r"^dataset.select.ids: task\(s\) x0, x1, x2, x3, x4 and 3 more not in /data/tasks.json",
        ),
        ({"offset": 50}, r"^dataset.select.offset: 50 is past the end of /data/tasks.json \(40 tasks\)$"),
        ({"offset": 40}, r"^dataset.select.offset: 40 is past the end of /data/tasks.json \(40 tasks\)$"),
        (
            {"ids": ["t01"], "offset": 1},
            r"dataset.select.offset: 1 is past the end of /data/tasks.json \(1 task with dataset.select.ids\)",
        ),
        ({"sample": 41}, r"^dataset.select.sample: 41 asked, but /data/tasks.json has only 40 tasks$"),
        (
            {"offset": 30, "sample": 11},
            r"dataset.select.sample: 11 asked, but /data/tasks.json has only 10 tasks left after dataset.select.offset",
        ),
    ],
)
def test_bad_selections_name_the_field_and_the_dataset(spec, message):
    with pytest.raises(LayerTapError, match=message):
        chosen(spec)


def test_an_offset_on_an_empty_dataset_is_named_but_an_empty_dataset_alone_is_not_a_selection_error():
    assert chosen({}, keys=[]) == [] and chosen({"limit": 3}, keys=[]) == []
    with pytest.raises(LayerTapError, match=r"offset: 1 is past the end of /data/tasks.json \(0 tasks\)"):
        chosen({"offset": 1}, keys=[])


def test_records_are_named_as_records_with_a_hint():
    with pytest.raises(LayerTapError, match=r"record\(s\) 9 not in /data/tasks.json \(3 records; ids are positions\)"):
        chosen({"ids": ["9"]}, keys=["0", "1", "2"], unit="record", ids_hint="ids are positions")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"ids": ["a", "b", "a"]}, "ids"),
        ({"ids": []}, "ids"),
        ({"ids": [""]}, "ids.0"),
        ({"offset": -1}, "offset"),
        ({"sample": 0}, "sample"),
        ({"limit": 0}, "limit"),
        ({"seed": -1}, "seed"),
    ],
)
def test_the_spec_refuses_bad_values(spec, field):
    with pytest.raises(ValidationError) as error:
        SelectionSpec.model_validate(spec)
    assert ".".join(str(part) for part in error.value.errors()[0]["loc"]) == field
    if spec.get("ids") == ["a", "b", "a"]:
        assert "a listed more than once" in str(error.value)


def test_ids_with_a_sample_and_camel_case_wire_form():
    spec = SelectionSpec.model_validate({"ids": ["t01", "t02", "t03"], "sample": 2, "seed": 5})
    assert spec.to_wire() == {"ids": ["t01", "t02", "t03"], "offset": 0, "sample": 2, "seed": 5}
    assert len(chosen(spec.to_wire())) == 2
