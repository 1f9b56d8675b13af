"""Train a small TopK sparse autoencoder on one layer of a LayerTap run, fed by `run.loader`.

    python examples/train_sae.py layertap-demo/activations --layer 3 --steps 300 --out sae

A TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): each token's
activation x (scaled so that its mean norm is sqrt(D)) is encoded as the k largest of
relu(W_enc (x - b_dec) + b_enc), decoded as z W_dec + b_dec, and trained on the mean
squared error with Adam; the decoder's rows are kept at unit norm. Every `--save-every`
steps it writes OUT/sae.safetensors (W_enc [D, F], W_dec [F, D], b_enc, b_dec, for
`layertap report --quantity direction:OUT/sae.safetensors --tensor W_dec --feature N`) and
OUT/checkpoint.safetensors (the parameters, Adam's state, and in its metadata the step and the
loader's state), each written whole and then renamed into place: rerunning the command
resumes from the checkpoint on the very next batch, and trains on as if it had never
stopped. Each batch is laid over every device of the process (data parallel: the loader's
`sharding`), the SAE replicated. docs/train-sae.md walks through it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors import safe_open
from safetensors.numpy import save

import layertap
from layertap.errors import LayerTapError
from layertap.io import open_store


def init(key, width: int, features: int, mean: np.ndarray) -> dict:
    decoder = jax.random.normal(key, (features, width))
    decoder = decoder / jnp.linalg.norm(decoder, axis=1, keepdims=True)
    return {"W_enc": decoder.T, "W_dec": decoder, "b_enc": jnp.zeros(features), "b_dec": jnp.asarray(mean)}


def encode(params: dict, x: jax.Array, k: int) -> jax.Array:
    pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
    values, indices = jax.lax.top_k(pre, k)
    return jnp.zeros_like(pre).at[jnp.arange(len(x))[:, None], indices].set(jax.nn.relu(values))


def loss_fn(params: dict, x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    z = encode(params, x, k)
    error = ((z @ params["W_dec"] + params["b_dec"] - x) ** 2).sum(-1).mean()
    explained = 1 - error / ((x - x.mean(0)) ** 2).sum(-1).mean()  # fraction of variance explained
    return error, explained


CHECKPOINT = "checkpoint.safetensors"


def write_whole(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """LayerTap's local store writes beside, then renames: a kill leaves the last file whole."""
    open_store(path.parent).write(path.name, save(arrays, metadata=metadata))


def save_checkpoint(path: Path, params: dict, opt_state, state: dict) -> None:
    """The parameters as trained and Adam's state, each leaf named by its path in the tree,
    and `state` (step, loader state) in the file's metadata: one file, so always a pair."""
    leaves = jax.tree_util.tree_flatten_with_path({"params": params, "adam": opt_state})[0]
    arrays = {jax.tree_util.keystr(key): np.asarray(leaf) for key, leaf in leaves}
    write_whole(path, arrays, {"state": json.dumps(state)})


def load_checkpoint(path: Path, params: dict, opt_state) -> tuple[dict, object, dict]:
    """`save_checkpoint`'s file into trees shaped like the fresh `params` and `opt_state`."""
    leaves, tree = jax.tree_util.tree_flatten_with_path({"params": params, "adam": opt_state})
    loaded = []
    with safe_open(str(path), framework="np") as file:
        state, names = json.loads(file.metadata()["state"]), set(file.keys())
        for key, fresh in leaves:
            name = jax.tree_util.keystr(key)
            if name not in names:
                raise LayerTapError(f"{path} has no {name}: it is not this script's checkpoint; pass a new --out")
            tensor = file.get_tensor(name)
            if tensor.shape != fresh.shape:
                raise LayerTapError(
                    f"{path}: {name} is {list(tensor.shape)}, not {list(fresh.shape)}: it was trained with other "
                    "--features or on another layer or site; pass a new --out"
                )
            loaded.append(jnp.asarray(tensor))
    loaded = jax.tree_util.tree_unflatten(tree, loaded)
    return loaded["params"], loaded["adam"], state


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a LayerTap run (local path or gs://)")
    parser.add_argument("--layer", type=int, help="default: the run's last layer")
    parser.add_argument("--site", default="resid_post")
    parser.add_argument("--segments", help="comma-separated segment names to train on (default: every token)")
    parser.add_argument("--features", type=positive, default=256)
    parser.add_argument("--k", type=positive, default=8, help="active features per token")
    parser.add_argument("--batch-size", type=positive, default=1024)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=positive, default=100)
    parser.add_argument("--out", default="sae", help="directory of sae.safetensors and checkpoint.safetensors")
    args = parser.parse_args(argv)
    if args.k > args.features:
        parser.error(
            f"--k {args.k} is more than --features {args.features}: a token cannot use more features than exist"
        )
    try:
        return train(args)
    except LayerTapError as error:  # a run, layer or site that is not there: what to change, no traceback
        parser.error(str(error))


def train(args: argparse.Namespace) -> dict:
    run = layertap.open(args.run)
    layer = args.layer if args.layer is not None else run.layers[-1]
    stats = run.stats().layer(layer, site=args.site)  # kept while extracting: no pass over the data
    width = int(np.prod(run.shape(args.site)))
    scale = float(np.sqrt(width) / stats.norm_mean)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "state.json").exists() and not (out / CHECKPOINT).exists():
        raise LayerTapError(f"{out} was written by an older train_sae.py (no Adam state to resume): pass a new --out")
    optimizer = optax.adam(args.lr)
    params = init(jax.random.key(args.seed), width, args.features, stats.mean * scale)
    opt_state = optimizer.init(params)
    saved = None
    if (out / CHECKPOINT).exists():  # resume: the parameters, Adam's state and the loader where they stopped
        params, opt_state, saved = load_checkpoint(out / CHECKPOINT, params, opt_state)
        if (saved["layer"], saved["site"]) != (layer, args.site):
            raise LayerTapError(
                f"{out} trains layer {saved['layer']} ({saved['site']}), not {layer} ({args.site}): pass a new --out"
            )
        scale = saved["scale"]
    loader = run.loader(
        layer,
        site=args.site,
        batch_size=args.batch_size,
        seed=args.seed,
        epochs=None,  # as many epochs as the steps need
        drop_last=True,  # one shape: one compiled step
        format="jax",
        sharding=NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data")),  # rows over the devices
        segments=None if args.segments is None else args.segments.split(","),
        state=None if saved is None else saved["loader"],
    )

    @jax.jit
    def step(params, opt_state, x):
        x = x.reshape(len(x), -1) * scale
        (loss, explained), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, args.k)
        updates, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        params["W_dec"] = params["W_dec"] / jnp.linalg.norm(params["W_dec"], axis=1, keepdims=True)
        return params, opt_state, loss, explained

    def save(done: int) -> None:
        arrays = {name: np.asarray(value, np.float32) for name, value in params.items()}
        arrays["b_dec"] = arrays["b_dec"] / scale  # in the run's units, like the activations
        write_whole(out / "sae.safetensors", arrays)
        state = {"step": done, "loader": loader.state(), "layer": layer, "site": args.site, "scale": scale}
        save_checkpoint(out / CHECKPOINT, params, opt_state, state)

    first = saved["step"] if saved else 0
    if first >= args.steps:
        print(f"{out} is at step {first} already (--steps {args.steps})")
        return {"losses": [], "out": str(out), "layer": layer}
    losses = []
    try:
        for done, x in enumerate(loader, first + 1):
            params, opt_state, loss, explained = step(params, opt_state, x)
            losses.append(float(loss))
            if done % 50 == 0 or done == first + 1:
                print(f"step {done}: loss {float(loss):.4f}, variance explained {float(explained):.3f}")
            if done % args.save_every == 0 or done == args.steps:
                save(done)
            if done == args.steps:
                break
    except KeyboardInterrupt:  # a checkpoint is written whole or not at all: the last one is intact
        if (out / CHECKPOINT).exists():
            step_saved = load_checkpoint(out / CHECKPOINT, params, opt_state)[2]["step"]
            print(f"interrupted; {out / CHECKPOINT} is at step {step_saved}: the same command resumes from there")
        else:
            print(f"interrupted before the first checkpoint (every --save-every {args.save_every} steps)")
        raise SystemExit(130) from None
    # the features most often active on the last batch: ones worth drawing over the grids
    active = np.asarray((encode(params, jnp.asarray(x).reshape(len(x), -1) * scale, args.k) > 0).mean(0))
    top = [int(f) for f in np.argsort(-active)[:3]]
    print(f"most often active: features {top} ({', '.join(f'{active[f]:.0%}' for f in top)} of tokens); draw one:")
    print(
        f"  layertap report {args.run} --layer {layer} --quantity direction:{out}/sae.safetensors --tensor W_dec "
        f"--feature {top[0]} --output {out}/report"
    )
    return {"losses": losses, "out": str(out), "layer": layer, "top_features": top}


if __name__ == "__main__":
    main()
