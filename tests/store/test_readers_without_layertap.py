"""The one-liners in docs/format.md read a shard in a Python that cannot import layertap;
`to_hf_dataset` exports to Hugging Face datasets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layertap
from layertap.store import finalize_run, open_writer

from .units import add, make_units, meta_for

FORMAT_DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"


def one_liners() -> dict[str, str]:
    found = re.findall(r"<!-- one-liner: (\w+) -->\s*```python\n(.*?)\n```", FORMAT_DOC.read_text(), re.S)
    return dict(found)


def test_the_doc_has_the_one_liners():
    assert set(one_liners()) == {"safetensors", "numpy", "samples"}


def without_layertap(*lines: str) -> None:
    program = "\n".join(["import sys; sys.modules['layertap'] = None  # any import of layertap now fails", *lines])
    subprocess.run([sys.executable, "-c", program], check=True)


@pytest.mark.parametrize("storage_dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("name", ["safetensors", "numpy"])
def test_one_liner_reads_a_shard_without_layertap(tmp_path, name, storage_dtype):
    with open_writer(str(tmp_path / "run"), meta_for(storage_dtype, layers=[11, 12])) as writer:
        for unit in make_units(4, layers=[11, 12]):
            add(writer, **unit.kwargs())
    run = layertap.open(str(tmp_path / "run"))
    (shard,) = run.shards
    batch = run.read_layer(12, dtype=None)
    # the doc reads layer.12; the same line reads any tensor of the shard by its name
    for tensor, want in {"layer.12": batch.activations, "cell": batch.cell, "sample_index": batch.sample_index}.items():
        out = tmp_path / f"{tensor}.npy"
        without_layertap(
            f"path = {str(shard.local_path)!r}",
            one_liners()[name].replace('"layer.12"', repr(tensor)),
            f"import numpy; numpy.save({str(out)!r}, numpy.asarray(x).astype('float64'))",  # exact for all of them
        )
        np.testing.assert_array_equal(np.load(out), want.astype(np.float64))


def test_sample_provenance_reads_without_layertap(tmp_path):
    units = make_units(6)
    with open_writer(str(tmp_path / "run"), meta_for(), shard_bytes=5_000) as writer:
        for unit in units:
            add(writer, **unit.kwargs())
    finalize_run(str(tmp_path / "run"))
    out = tmp_path / "samples.json"
    without_layertap(
        f"run = {str(tmp_path / 'run')!r}",
        one_liners()["samples"],
        f"json.dump({{str(k): v for k, v in samples.items()}}, open({str(out)!r}, 'w'))",
    )
    got = {int(k): v for k, v in json.loads(out.read_text()).items()}
    assert got == {i: meta for u in units for i, meta in u.samples.items()}
    assert len(layertap.open(str(tmp_path / "run")).shards) > 1


def test_export_to_hugging_face_datasets(tmp_path):
    with open_writer(str(tmp_path / "run"), meta_for(), shard_bytes=10_000) as writer:
        for unit in make_units(10):
            add(writer, **unit.kwargs())
    run = layertap.open(str(tmp_path / "run"))
    want = run.read_layer(5, segments=["test-input"])
    assert len(run.shards) > 1
    # A fresh interpreter, as a user's would be: datasets' own imports (multiprocess,
    # fsspec, ...) stay out of the test process.
    run_dir, hf_dir, npz_file = str(tmp_path / "run"), str(tmp_path / "hf"), str(tmp_path / "ds.npz")
    program = f"""
import layertap, numpy as np
ds = layertap.open({run_dir!r}).to_hf_dataset(5, cache_dir={hf_dir!r}, segments=["test-input"])
ds = ds.with_format("numpy")
np.savez({npz_file!r}, activation=ds["activation"], token_id=ds["token_id"], segment=ds["segment"], cell=ds["cell"])
"""
    subprocess.run([sys.executable, "-c", program], check=True, cwd=tmp_path)
    got = np.load(tmp_path / "ds.npz")
    np.testing.assert_array_equal(got["activation"], want.activations)
    np.testing.assert_array_equal(got["token_id"], want.token_ids)
    np.testing.assert_array_equal(got["segment"], want.segment)
    np.testing.assert_array_equal(got["cell"], want.cell)
