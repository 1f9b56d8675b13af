"""Every attention implementation behind `packed_causal_attention`, checked on CPU.

"xla" runs as is; "splash" runs its Pallas kernel in interpret mode (the HLO interpreter,
and once the TPU interpreter `pltpu.InterpretParams`); "cudnn" runs the same
`jax.nn.dot_product_attention` call with the same segment mask and `is_causal` that a GPU
gives cuDNN, through JAX's XLA implementation. Each is compared with a float64 numpy
reference and with the "xla" path on packed rows (several segments, padding, a row of
padding only), grouped-query heads (G = 3) and lengths that are and are not multiples of
128. Tolerances: float32 1e-5 absolute (outputs are averages of N(0, 1) values; the paths
differ by about 3e-6), bfloat16 5e-2 (about 2e-2 seen).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from layertap.errors import LayerTapError
from layertap.model import attention
from layertap.model.attention import (
    ENV_ATTENTION,
    IMPLEMENTATIONS,
    attention_mask,
    choose_implementation,
    packed_causal_attention,
    segment_mask,
    splash_layout,
)

from .conftest import dense_attention as reference
from .conftest import random_ids

HIGHEST = jax.lax.Precision.HIGHEST
F32_ATOL = 1e-5
BF16_ATOL = 5e-2
B, K, G, H = 3, 2, 3, 16


def packed_segments(length: int) -> np.ndarray:
    """Row 0: four packed sequences and trailing padding; row 1: one sequence filling the
    row; row 2: padding only."""
    cuts = [0, length // 5, length // 2, length // 2 + 3, length - length // 8, length]
    row0 = np.concatenate([np.full(b - a, i + 1 if i < 4 else 0) for i, (a, b) in enumerate(itertools.pairwise(cuts))])
    return np.stack([row0, np.ones(length), np.zeros(length)]).astype(np.int32)


def inputs(length: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, K, length, G, H)).astype(np.float32) * H**-0.5  # pre-scaled, as the model does
    k, v = rng.normal(size=(2, B, K, length, H)).astype(np.float32)
    return q, k, v, packed_segments(length)


CASES = [("xla", None), ("cudnn", None), ("splash", None), ("splash", pltpu.InterpretParams())]
CASE_IDS = ["xla", "cudnn-mask-via-xla", "splash-interpret", "splash-tpu-interpreter"]


@pytest.mark.parametrize("length", [128, 200])
@pytest.mark.parametrize("impl, interpret", CASES, ids=CASE_IDS)
def test_each_implementation_matches_the_reference_and_the_xla_path(impl, interpret, length):
    q, k, v, segments = inputs(length)
    expected = reference(q, k, v, segments)
    # The data can tell a right mask from a wrong one: ignoring segments moves the output.
    assert np.abs(reference(q, k, v, np.ones_like(segments)) - expected).max() > 0.1

    run = jax.jit(lambda *args: packed_causal_attention(*args, HIGHEST, impl, interpret=interpret))
    out = np.asarray(run(*map(jnp.asarray, (q, k, v, segments))))
    assert out.shape == q.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=F32_ATOL, rtol=0)
    xla = np.asarray(packed_causal_attention(*map(jnp.asarray, (q, k, v, segments)), HIGHEST, "xla"))
    np.testing.assert_allclose(out, xla, atol=F32_ATOL, rtol=0)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bfloat16_operands(impl):
    """The fused kernels' dtype (the one they are chosen for on GPU and TPU)."""
    q, k, v, segments = inputs(200, seed=1)
    args = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)] + [jnp.asarray(segments)]
    out = packed_causal_attention(*args, jax.lax.Precision.DEFAULT, impl)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), reference(q, k, v, segments), atol=BF16_ATOL, rtol=0)


def test_cudnn_mask_with_is_causal_is_the_xla_paths_mask():
    """What cuDNN is given (a same-segment mask, causality from is_causal) allows exactly the
    pairs that the XLA path allows."""
    segments = jnp.asarray(packed_segments(200))
    causal_ts = np.tril(np.ones((200, 200), bool))
    given = np.asarray(segment_mask(segments))[:, 0] & causal_ts
    np.testing.assert_array_equal(given, np.asarray(attention_mask(segments, 0, 200)))


def test_cudnn_path_calls_dot_product_attention_as_a_gpu_would(monkeypatch):
    """The arguments jax.nn.dot_product_attention receives: cuDNN's kernel only for 16-bit
    operands on CUDA, else XLA's; scale 1 (queries arrive scaled), is_causal, the mask."""
    seen = []

    def spy(query, key, value, bias=None, mask=None, **kwargs):
        seen.append({"shapes": (query.shape, key.shape, mask.shape, mask.dtype), **kwargs})
        return jnp.zeros_like(query)

    monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
    q, k, v, segments = inputs(40)
    packed_causal_attention(*map(jnp.asarray, (q, k, v, segments)), HIGHEST, "cudnn")
    monkeypatch.setattr(attention, "_on_cuda", lambda: True)
    packed_causal_attention(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), jnp.asarray(segments), HIGHEST, "cudnn")
    packed_causal_attention(*map(jnp.asarray, (q, k, v, segments)), HIGHEST, "cudnn")  # float32: no cuDNN kernel
    shapes = ((B, 40, K * G, H), (B, 40, K, H), (B, 1, 40, 40), np.dtype(bool))
    common = {"shapes": shapes, "scale": 1.0, "is_causal": True}
    assert seen == [
        {**common, "implementation": "xla"},
        {**common, "implementation": "cudnn"},
        {**common, "implementation": "xla"},
    ]


def test_splash_pads_to_lanes_and_picks_the_largest_block():
    assert splash_layout(1) == (128, 128)
    assert splash_layout(128) == (128, 128)
    assert splash_layout(200) == (256, 256)
    assert splash_layout(384) == (384, 128)
    assert splash_layout(2048) == (2048, 512)
    assert splash_layout(2050) == (2176, 128)


def test_splash_is_partitioned_per_rows_and_kv_heads(tmp_path):
    """On a 2 x 2 (data, model) mesh of CPU devices the kernel runs on each device's rows and
    KV heads, with no collective, and matches the unsharded XLA path (a fresh process: the
    device count is fixed when JAX starts)."""
    script = tmp_path / "sharded.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            import numpy as np, jax, jax.numpy as jnp
            from jax.sharding import NamedSharding, PartitionSpec as P
            from layertap.model import attention
            from layertap.model.attention import packed_causal_attention

            local_shapes = []
            local = attention._local_splash
            attention._local_splash = lambda kernel, q, *rest: local_shapes.append(q.shape) or local(kernel, q, *rest)
            mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
            rng = np.random.default_rng(0)
            q = rng.normal(size=(4, 2, 200, 3, 16)).astype(np.float32)
            k, v = rng.normal(size=(2, 4, 2, 200, 16)).astype(np.float32)
            s = np.ones((4, 200), np.int32); s[0, 60:] = 2; s[0, 150:] = 0; s[3, 100:] = 0
            rows_heads, rows = NamedSharding(mesh, P("data", "model")), NamedSharding(mesh, P("data"))
            run = jax.jit(lambda *a: packed_causal_attention(*a, jax.lax.Precision.HIGHEST, "splash"),
                          in_shardings=(rows_heads,) * 3 + (rows,), out_shardings=rows_heads)
            out = run(q, k, v, s)
            xla = packed_causal_attention(*map(jnp.asarray, (q, k, v, s)), jax.lax.Precision.HIGHEST, "xla")
            hlo = run.lower(q, k, v, s).compile().as_text()
            print(json.dumps({
                "diff": float(jnp.abs(out - xla).max()),
                "local_shape": list(local_shapes[-1]),
                "collectives": any(c in hlo for c in ("all-gather", "all-to-all", "collective-permute", "all-reduce")),
            }))
            """
        )
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    worker = str(Path(attention.__file__).parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [worker, env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["diff"] < F32_ATOL
    assert report["local_shape"] == [2, 1, 200, 3, 16]  # 2 of 4 rows, 1 of 2 KV heads per device
    assert report["collectives"] is False


@pytest.mark.parametrize("impl", ["cudnn", "splash"])
def test_the_model_forward_through_each_implementation(monkeypatch, tiny, impl):
    """`$LAYERTAP_ATTENTION` switches what `Attention` runs; the tiny model's taps (G = 2,
    packed rows with padding) agree with the XLA path's."""
    from layertap.model import make_extract_fn

    config, params = tiny
    length = 40
    ids = random_ids(config.vocab_size, 2, length)
    segments = np.array([[1] * 13 + [2] * 20 + [0] * 7, [1] * length], np.int32)
    positions = np.array([list(range(13)) + list(range(20)) + [0] * 7, list(range(length))], np.int32)
    batch = tuple(map(jnp.asarray, (ids, positions, segments)))

    def taps():
        return jax.jit(make_extract_fn(config, [1, 3]))(params, *batch)["resid_post"]

    monkeypatch.setenv(ENV_ATTENTION, "xla")
    expected = np.asarray(taps())
    monkeypatch.setenv(ENV_ATTENTION, impl)
    np.testing.assert_allclose(np.asarray(taps()), expected, atol=F32_ATOL, rtol=0)


def test_choice_by_backend_and_dtype():
    env: dict[str, str] = {}
    assert choose_implementation(jnp.float32, 64, env) == "xla"  # this machine: CPU
    assert choose_implementation(jnp.bfloat16, 64, env) == "xla"
    assert choose_implementation(jnp.bfloat16, 64, env, "tpu") == "splash"
    assert choose_implementation(jnp.float32, 64, env, "tpu") == "xla"  # float32 keeps HIGHEST dots
    assert choose_implementation(jnp.bfloat16, 64, env, "cuda") == "cudnn"
    assert choose_implementation(jnp.float16, 128, env, "cuda") == "cudnn"
    assert choose_implementation(jnp.float32, 64, env, "cuda") == "cudnn"  # JAX's reference, HIGHEST dots
    assert choose_implementation(jnp.float32, 12, env, "cuda") == "cudnn"  # the reference takes any head width
    assert choose_implementation(jnp.bfloat16, 12, env, "cuda") == "xla"  # head width not a multiple of 8
    assert choose_implementation(jnp.bfloat16, 64, env, "rocm") == "xla"


def test_xla_is_not_offered_on_a_cuda_gpu():
    forced = {ENV_ATTENTION: "xla"}
    for dtype in (jnp.bfloat16, jnp.float32):
        with pytest.raises(LayerTapError, match=r"xla is not offered on a CUDA GPU.*cudnn"):
            choose_implementation(dtype, 64, forced, "cuda")
    assert choose_implementation(jnp.bfloat16, 64, forced, "cpu") == "xla"
    assert choose_implementation(jnp.bfloat16, 64, forced, "tpu") == "xla"


def test_float32_on_the_cudnn_path_dots_at_the_precision_asked():
    """float32 has no cuDNN kernel: the path runs JAX's reference attention, whose dots would
    take a GPU's default precision (TensorFloat-32) unless told; float32 parity needs HIGHEST."""
    q, k, v, segments = map(jnp.asarray, inputs(16))

    def dots(precision, dtype=jnp.float32):
        args = [x.astype(dtype) for x in (q, k, v)] + [segments]
        jaxpr = jax.make_jaxpr(lambda *a: packed_causal_attention(*a, precision, "cudnn"))(*args)
        return [eqn.params["precision"] for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == "dot_general"]

    highest = dots(HIGHEST)
    assert len(highest) == 2 and all(p == (HIGHEST, HIGHEST) for p in highest)  # QK^T and PV
    default = jax.lax.Precision.DEFAULT
    assert all(p in (None, (default, default)) for p in dots(default))  # the precision asked, not a fixed one
    assert dots(HIGHEST, jnp.bfloat16) == dots(default, jnp.bfloat16)  # 16-bit: as JAX runs it (cuDNN on a GPU)


def test_choice_from_the_environment():
    assert choose_implementation(jnp.float32, 64, {ENV_ATTENTION: "splash"}) == "splash"
    assert choose_implementation(jnp.float32, 64, {ENV_ATTENTION: " CUDNN "}) == "cudnn"
    assert choose_implementation(jnp.float32, 64, {ENV_ATTENTION: "auto"}) == "xla"
    with pytest.raises(LayerTapError, match=rf"\${ENV_ATTENTION}='flash'.*auto, xla, cudnn, splash"):
        choose_implementation(jnp.float32, 64, {ENV_ATTENTION: "flash"})


def test_unknown_implementation_is_refused():
    q, k, v, segments = inputs(8)
    with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
        packed_causal_attention(*map(jnp.asarray, (q, k, v, segments)), HIGHEST, "flash")
