"""Generation: a prefill, then decode steps in one on-device loop, with a fixed-size KV cache.

One call generates for a batch of right-padded prompts. Its shapes depend only on the batch
size, the prompt bucket length and the token budget, so a run that keeps those fixed
compiles once. The loop (`lax.while_loop`) stops when every row has stopped, with no host
round trip per token. Sampling keys derive from (seed, the row's sample id, step), so a
sample's tokens do not depend on which batch or host generated it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from layertap.model.causal_lm import CausalLM, empty_caches
from layertap.model.config import DecoderConfig
from layertap.model.modules import Dtype
from layertap.model.tap import LayerTap


@dataclass(frozen=True)
class Sampling:
    """temperature 0: greedy (argmax). Otherwise softmax(logits / temperature), restricted to
    the smallest set of tokens whose probability reaches `top_p` (nucleus sampling)."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class RunStop:
    """Stop once the text holds `length` repeats of one character (a code fence: ``` ), found
    across token boundaries: per vocabulary entry, how many of the character it starts with
    (`lead`), ends with (`tail`), holds in all when it is nothing else (`whole`, else -1), and
    whether it holds the whole run inside (`inside`). The loop carries the current run."""

    lead: np.ndarray  # [V] int32
    tail: np.ndarray  # [V] int32
    whole: np.ndarray  # [V] int32
    inside: np.ndarray  # [V] bool
    length: int

    @classmethod
    def of_texts(cls, texts: Sequence[str], char: str = "`", length: int = 3) -> RunStop:
        """From each token id's text, in id order."""
        lead = np.array([len(t) - len(t.lstrip(char)) for t in texts], np.int32)
        tail = np.array([len(t) - len(t.rstrip(char)) for t in texts], np.int32)
        whole = np.array([len(t) if t and not t.strip(char) else -1 for t in texts], np.int32)
        inside = np.array([char * length in t for t in texts], bool)
        return cls(lead, tail, whole, inside, length)

    def step(self, run_b: jax.Array, token_b: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(whether `token_b` completes the run, the run after it)."""
        lead, tail, whole, inside = (
            jnp.asarray(table)[token_b] for table in (self.lead, self.tail, self.whole, self.inside)
        )
        return inside | (run_b + lead >= self.length), jnp.where(whole >= 0, run_b + whole, tail)


@flax.struct.dataclass
class Generated:
    """tokens [B, N] (after a row stops: `pad_id`), logprobs [B, N] (of each chosen token under
    the model's own distribution, temperature 1), count [B] (tokens generated, the stop token
    included), taps site -> [L, B, P + N, *site shape] (the tap's sites and layers over prompt
    slots then generated tokens; None without a tap). The last generated token is never run
    through the model, so its taps are zero (a stopping token's activations are those of the
    step before)."""

    tokens: jax.Array
    logprobs: jax.Array
    count: jax.Array
    taps: dict[str, jax.Array] | None = None


GenerateFn = Callable[[dict, jax.Array, jax.Array, jax.Array], Generated]


def make_generate_fn(
    config: DecoderConfig,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    sampling: Sampling = Sampling(),
    compute_dtype: Dtype = jnp.float32,
    pad_id: int = 0,
    tap: LayerTap | None = None,
    stop_run: RunStop | None = None,
) -> GenerateFn:
    """`(params, prompt_ids[B, P], length[B], sample_id[B]) -> Generated`, pure and not yet
    jitted. Rows are right-padded prompts of `length` tokens (>= 1); a row stops after it
    generates one of `stop_ids`, the token that completes `stop_run`, or `max_new_tokens`
    tokens. params must hold the head (`load_checkpoint(..., head=True)`)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    model = CausalLM(config, jnp.dtype(compute_dtype), tap)
    is_stop_v = np.zeros(config.vocab_size, dtype=bool)
    is_stop_v[list(stop_ids)] = True
    choose = _chooser(sampling)

    def generate(params: dict, prompt_bp: jax.Array, length_b: jax.Array, sample_id_b: jax.Array) -> Generated:
        batch, prompt_len = prompt_bp.shape
        keys_b = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(sampling.seed), i))(sample_id_b)
        caches = empty_caches(config, batch, prompt_len + max_new_tokens, model.dtype)
        variables = {"params": params}

        def run(method, *args):
            """The model's (logits, caches) and what the tap captured (the sites it sowed)."""
            if tap is None:
                return *model.apply(variables, *args, method=method), None
            (logits_bv, caches), sown = model.apply(variables, *args, method=method, mutable=["taps"])
            return logits_bv, caches, tap.collect(sown["taps"])

        logits_bv, caches, prompt_taps = run(CausalLM.prefill, prompt_bp, length_b, caches)
        token_b, logprob_b = choose(logits_bv, keys_b, 0)
        stop_v = jnp.asarray(is_stop_v)

        def stops(token_b: jax.Array, run_b: jax.Array) -> tuple[jax.Array, jax.Array]:
            if stop_run is None:
                return stop_v[token_b], run_b
            closes_b, run_b = stop_run.step(run_b, token_b)
            return stop_v[token_b] | closes_b, run_b

        done_b, run_b = stops(token_b, jnp.zeros_like(length_b))
        tokens_bn = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token_b)
        logprobs_bn = jnp.zeros((batch, max_new_tokens), jnp.float32).at[:, 0].set(logprob_b)
        taps = None
        if tap is not None:  # prompt slots, then one slot per generated token
            taps = {
                site: jnp.zeros((*at.shape[:2], prompt_len + max_new_tokens, *at.shape[3:]), at.dtype)
                .at[:, :, :prompt_len]
                .set(at)
                for site, at in prompt_taps.items()
            }
        state = (jnp.int32(1), token_b, done_b, run_b, jnp.ones_like(length_b), tokens_bn, logprobs_bn, caches, taps)

        def running(state) -> jax.Array:
            step, _, done_b, *_ = state
            return (step < max_new_tokens) & ~jnp.all(done_b)

        def step_once(state):
            step, token_b, done_b, run_b, count_b, tokens_bn, logprobs_bn, caches, taps = state
            position_b = length_b + step - 1  # where the previous token sits
            logits_bv, caches, step_taps = run(CausalLM.decode, token_b, position_b, caches)
            token_b, logprob_b = choose(logits_bv, keys_b, step)
            token_b = jnp.where(done_b, pad_id, token_b)
            tokens_bn = tokens_bn.at[:, step].set(token_b)
            logprobs_bn = logprobs_bn.at[:, step].set(jnp.where(done_b, 0.0, logprob_b))
            if taps is not None:  # the previous token's streams, at its slot after the prompt bucket
                taps = {
                    site: jax.lax.dynamic_update_slice_in_dim(at, step_taps[site], prompt_len + step - 1, axis=2)
                    for site, at in taps.items()
                }
            count_b = count_b + (~done_b).astype(count_b.dtype)
            stopping_b, run_b = stops(token_b, run_b)
            return step + 1, token_b, done_b | stopping_b, run_b, count_b, tokens_bn, logprobs_bn, caches, taps

        _, _, _, _, count_b, tokens_bn, logprobs_bn, _, taps = jax.lax.while_loop(running, step_once, state)
        return Generated(tokens_bn, logprobs_bn, count_b, taps)

    return generate


def _chooser(sampling: Sampling) -> Callable[[jax.Array, jax.Array, int | jax.Array], tuple[jax.Array, jax.Array]]:
    """(logits [B, V], keys [B], step) -> (token [B], its log-probability [B])."""

    def choose(logits_bv: jax.Array, keys_b: jax.Array, step) -> tuple[jax.Array, jax.Array]:
        logprobs_bv = jax.nn.log_softmax(logits_bv, axis=-1)
        if sampling.temperature == 0:
            token_b = jnp.argmax(logits_bv, axis=-1).astype(jnp.int32)
        else:
            scaled_bv = logits_bv / sampling.temperature
            if sampling.top_p < 1:
                scaled_bv = _nucleus(scaled_bv, sampling.top_p)
            step_keys_b = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys_b)
            token_b = jax.vmap(jax.random.categorical)(step_keys_b, scaled_bv).astype(jnp.int32)
        return token_b, jnp.take_along_axis(logprobs_bv, token_b[:, None], axis=-1)[:, 0]

    return choose


def _nucleus(logits_bv: jax.Array, top_p: float) -> jax.Array:
    """Logits outside the smallest most-probable set of mass >= top_p set to -inf."""
    sorted_bv = jnp.sort(logits_bv, axis=-1)[:, ::-1]
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    mass_before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv
    kept_b = jnp.sum(mass_before_bv < top_p, axis=-1)  # >= 1: the top token is always kept
    threshold_b = jnp.take_along_axis(sorted_bv, (kept_b - 1)[:, None], axis=-1)
    return jnp.where(logits_bv >= threshold_b, logits_bv, -jnp.inf)
