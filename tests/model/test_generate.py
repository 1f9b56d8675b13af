"""Generation with a KV cache: the same tokens as transformers' `generate`, the same logits at
every step (float32 bound of the hidden-state parity), stopping, sampling, and one compile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compiles import counting_compiles

from layertap.errors import LayerTapError
from layertap.model import load_checkpoint, write_random_checkpoint
from layertap.model.causal_lm import CausalLM, empty_caches
from layertap.model.generate import Sampling, make_generate_fn
from layertap.model.tap import LayerTap

from .test_parity import CONFIGS, FLOAT32_BOUND

torch = pytest.importorskip("torch", reason="compares against transformers' PyTorch Qwen2 (pip install .[parity])")
transformers = pytest.importorskip("transformers")

NEW_TOKENS = 12


# The widest configs generate for minutes on 2 cores: the fast tier (tests/run.sh) runs the others.
SLOW_TO_GENERATE = {"qwen2.5-0.5b-shaped", "untied-wide-heads"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=pytest.mark.slow) if name in SLOW_TO_GENERATE else name for name in CONFIGS],
)
def checkpoint(request, tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp(request.param), seed=7, **CONFIGS[request.param])


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint, head=True)


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    return transformers.AutoModelForCausalLM.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="eager"
    ).eval()


def prompts(vocab_size: int, lengths: list[int], seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, length).astype(np.int32) for length in lengths]


def padded(rows: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    batch = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch, np.array([len(row) for row in rows], np.int32)


def hf_generate(hf_model, row: np.ndarray, new_tokens: int):
    with torch.inference_mode():
        out = hf_model.generate(
            torch.from_numpy(row[None]).long(),
            attention_mask=torch.ones(1, len(row), dtype=torch.long),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, len(row) :].numpy(), np.stack([step[0].float().numpy() for step in out.logits])


def test_greedy_generation_yields_transformers_tokens_for_a_padded_batch(model, hf_model):
    config, params = model
    rows = prompts(config.vocab_size, [9, 31, 4, 17])
    batch, lengths = padded(rows, 32)
    generate = jax.jit(make_generate_fn(config, NEW_TOKENS))
    out = generate(params, batch, lengths, np.arange(len(rows), dtype=np.int32))
    for i, row in enumerate(rows):
        theirs, _ = hf_generate(hf_model, row, NEW_TOKENS)
        assert np.asarray(out.tokens[i]).tolist() == theirs.tolist(), f"row {i} (prompt of {len(row)} tokens)"
    assert np.asarray(out.count).tolist() == [NEW_TOKENS] * len(rows)


def test_every_steps_logits_match_transformers(model, hf_model):
    """Prefill then decode steps, fed transformers' own tokens: the logits of each step."""
    config, params = model
    (row,) = prompts(config.vocab_size, [21], seed=3)
    tokens, expected = hf_generate(hf_model, row, NEW_TOKENS)
    lm = CausalLM(config)
    caches = empty_caches(config, 1, 24 + NEW_TOKENS, jnp.float32)
    batch, lengths = padded([row], 24)
    logits, caches = lm.apply({"params": params}, batch, lengths, caches, method=CausalLM.prefill)
    ours = [np.asarray(logits[0])]
    for step, token in enumerate(tokens[:-1]):
        position = np.array([len(row) + step], np.int32)
        logits, caches = lm.apply(
            {"params": params}, np.array([token], np.int32), position, caches, method=CausalLM.decode
        )
        ours.append(np.asarray(logits[0]))
    errors = np.abs(np.stack(ours) - expected).max(axis=-1) / np.sqrt(np.mean(np.square(expected), axis=-1))
    print(f"\nlogits max|err|/rms per step: {np.array2string(errors, precision=2)}")
    assert errors.max() <= FLOAT32_BOUND


@pytest.mark.family_agnostic
def test_a_row_stops_at_a_stop_token_and_the_others_go_on(model):
    config, params = model
    rows = prompts(config.vocab_size, [6, 11])
    batch, lengths = padded(rows, 16)
    free = jax.jit(make_generate_fn(config, NEW_TOKENS))(params, batch, lengths, np.arange(2, dtype=np.int32))
    stop = int(free.tokens[0, 3])  # row 0's 4th token becomes a stop token
    stopped = make_generate_fn(config, NEW_TOKENS, stop_ids=[stop], pad_id=-1)(
        params, batch, lengths, np.arange(2, dtype=np.int32)
    )
    first = np.asarray(free.tokens[0]).tolist().index(stop) + 1
    assert int(stopped.count[0]) == first
    assert np.asarray(stopped.tokens[0, :first]).tolist() == np.asarray(free.tokens[0, :first]).tolist()
    assert (np.asarray(stopped.tokens[0, first:]) == -1).all() and (np.asarray(stopped.logprobs[0, first:]) == 0).all()
    if stop not in np.asarray(free.tokens[1]).tolist():
        assert np.asarray(stopped.tokens[1]).tolist() == np.asarray(free.tokens[1]).tolist()


@pytest.mark.family_agnostic
def test_logprobs_are_those_of_the_chosen_tokens(model, hf_model):
    config, params = model
    (row,) = prompts(config.vocab_size, [10], seed=5)
    tokens, logits = hf_generate(hf_model, row, NEW_TOKENS)
    out = make_generate_fn(config, NEW_TOKENS)(params, *padded([row], 10), np.zeros(1, np.int32))
    expected = torch.log_softmax(torch.from_numpy(logits), -1).numpy()[np.arange(NEW_TOKENS), tokens]
    np.testing.assert_allclose(np.asarray(out.logprobs[0]), expected, atol=1e-4)


@pytest.mark.family_agnostic
def test_sampling_is_seeded_per_sample_not_per_batch(model):
    config, params = model
    rows = prompts(config.vocab_size, [8, 5, 13])
    # A random model's distribution is sharp (the tied one repeats its last token): a high
    # temperature makes the draw matter.
    sampling = Sampling(temperature=50.0, top_p=0.9, seed=11)
    generate = jax.jit(make_generate_fn(config, NEW_TOKENS, sampling=sampling))
    together = generate(params, *padded(rows, 16), np.array([0, 1, 2], np.int32))
    again = generate(params, *padded(rows, 16), np.array([0, 1, 2], np.int32))
    alone = generate(params, *padded(rows[2:], 16), np.array([2], np.int32))
    assert np.array_equal(together.tokens, again.tokens)
    assert np.asarray(alone.tokens[0]).tolist() == np.asarray(together.tokens[2]).tolist()
    other_seed = make_generate_fn(config, NEW_TOKENS, sampling=Sampling(temperature=50.0, top_p=0.9, seed=12))
    assert not np.array_equal(
        other_seed(params, *padded(rows, 16), np.array([0, 1, 2], np.int32)).tokens, together.tokens
    )


@pytest.mark.family_agnostic
def test_a_tiny_nucleus_is_greedy(model):
    config, params = model
    rows = prompts(config.vocab_size, [8, 5])
    greedy = make_generate_fn(config, NEW_TOKENS)(params, *padded(rows, 8), np.arange(2, dtype=np.int32))
    nucleus = make_generate_fn(config, NEW_TOKENS, sampling=Sampling(temperature=0.7, top_p=1e-6, seed=3))
    assert np.array_equal(nucleus(params, *padded(rows, 8), np.arange(2, dtype=np.int32)).tokens, greedy.tokens)


@pytest.mark.family_agnostic
def test_taps_during_generation_are_the_extraction_forwards(model):
    """Every site tapped while generating equals an extraction forward over prompt + output:
    the same tap, the same blocks, sown in the same places."""
    from layertap.model import make_extract_fn
    from layertap_api.spec import SITES

    config, params = model
    (row,) = prompts(config.vocab_size, [7], seed=9)
    tap = LayerTap((1, config.num_hidden_layers - 1), tuple(SITES))
    out = make_generate_fn(config, NEW_TOKENS, tap=tap)(params, *padded([row], 8), np.zeros(1, np.int32))
    assert sorted(out.taps) == sorted(SITES)
    sequence = np.concatenate([row, np.asarray(out.tokens[0, :-1])])[None]
    positions = np.arange(sequence.shape[1], dtype=np.int32)[None]
    expected = make_extract_fn(config, tap)(params, sequence, positions, np.ones_like(sequence))
    for site in SITES:
        taps = np.asarray(out.taps[site][:, 0])
        ours = np.concatenate([taps[:, : len(row)], taps[:, 8 : 8 + NEW_TOKENS - 1]], axis=1)
        want = np.asarray(expected[site][:, 0])
        assert ours.shape == want.shape, site
        np.testing.assert_allclose(ours, want, atol=1e-4 * float(np.sqrt(np.mean(np.square(want)))), err_msg=site)


@pytest.mark.family_agnostic
def test_generation_compiles_once_for_fixed_shapes(model):
    config, params = model
    generate = jax.jit(make_generate_fn(config, NEW_TOKENS))
    generate(params, *padded(prompts(config.vocab_size, [5, 9]), 16), np.arange(2, dtype=np.int32))
    with counting_compiles() as compiles:
        for seed in range(3):
            rows = prompts(config.vocab_size, [3 + seed, 14 - seed], seed=seed)
            jax.block_until_ready(generate(params, *padded(rows, 16), np.arange(2, dtype=np.int32)).tokens)
    assert compiles[0] == 0


def test_an_untied_checkpoint_without_its_head_is_refused(tmp_path):
    directory = write_random_checkpoint(tmp_path, seed=0, tie_word_embeddings=False)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, directory / "model.safetensors")
    load_checkpoint(directory)  # extraction never needs it
    with pytest.raises(LayerTapError, match="lm_head.weight.*generation needs the LM head"):
        load_checkpoint(directory, head=True)


@pytest.mark.family_agnostic
def test_a_row_stops_where_its_tokens_complete_a_fence(model):
    from layertap.model.generate import RunStop

    config, params = model
    batch, lengths = padded(prompts(config.vocab_size, [6]), 8)
    free = make_generate_fn(config, NEW_TOKENS)(params, batch, lengths, np.zeros(1, np.int32))
    tokens = np.asarray(free.tokens[0]).tolist()
    texts = ["a"] * config.vocab_size
    texts[tokens[-1]] = "x``"  # two backticks; the run completes where a token after it adds one more
    texts[tokens[-2]] = "`" if tokens[-2] != tokens[-1] else texts[tokens[-1]]
    run = [0]
    expected = None
    for position, token in enumerate(tokens, 1):  # the same rule, on the host
        text = texts[token]
        lead = len(text) - len(text.lstrip("`"))
        if "```" in text or run[0] + lead >= 3:
            expected = position
            break
        run[0] = run[0] + len(text) if text and not text.strip("`") else len(text) - len(text.rstrip("`"))
    stopped = make_generate_fn(config, NEW_TOKENS, stop_run=RunStop.of_texts(texts))(
        params, batch, lengths, np.zeros(1, np.int32)
    )
    assert int(stopped.count[0]) == (expected or NEW_TOKENS)
