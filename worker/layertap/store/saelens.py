"""Train a SAELens SAE on a run, reading the run directly (the `sae` extra: sae-lens).

    import layertap
    from layertap.store import saelens
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig

    run = layertap.open("layertap-demo/activations")
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=64, d_sae=256, k=8))
    trainer = saelens.trainer(run, 3, sae, tokens=300 * 1024, batch_size=1024, lr=3e-3)
    trainer.fit()                          # SAELens' own loop, optimizer and losses
    sae.save_model("sae")                  # SAELens' files, in the run's units; cfg.json names the run

SAELens' `SAETrainer` takes any iterator of [batch, d_in] tensors as its data provider;
`run.loader(format="torch")` is one, so nothing is exported and no model is run (its
`LanguageModelSAETrainingRunner` would load a TransformerLens model even for cached
activations). Every epoch gives each of the run's tokens once; the last batch of an epoch
may be short. With `normalize_activations="expected_average_only_in"` the scaling factor
comes from `run.stats()` (kept while extracting) rather than from SAELens reading 1,000
batches of the loader first. A checkpoint holds the loader's position too
(`layertap-loader.json`): `trainer(..., resume=path)` goes on with the very next batch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from layertap.errors import LayerTapError
from layertap.io import open_store
from layertap.store import layout

LOADER_STATE = "layertap-loader.json"  # next to SAELens' files in a checkpoint


class Activations:
    """SAELens' data provider: the loader's batches as [batch, d_in] float32 tensors."""

    def __init__(self, run, layer: int, *, batch_size: int, site: str, **loader_options) -> None:
        self.loader = run.loader(layer, site=site, batch_size=batch_size, format="torch", **loader_options)
        self._batches = iter(self.loader)

    def __iter__(self) -> Activations:
        return self

    def __next__(self):
        batch = next(self._batches)
        return batch.reshape(len(batch), -1)  # attn_z: [batch, heads, head size] -> [batch, d_in]


def trainer(
    run,
    layer: int,
    sae,
    *,
    tokens: int,
    batch_size: int,
    lr: float = 3e-4,
    site: str = layout.DEFAULT_SITE,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_path: str | Path | None = None,
    n_checkpoints: int = 0,
    resume: str | Path | None = None,
    **loader_options,
):
    """A SAELens `SAETrainer` for `sae` fed by `run.loader(layer, ...)`; `trainer.fit()` trains
    on `tokens` tokens, in as many epochs as that takes. `loader_options` go to the loader
    (segments, tasks, positions, exclude_tokens, buffer_bytes, ...)."""
    from sae_lens import LoggingConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig

    d_in = math.prod(run.shape(site))
    if sae.cfg.d_in != d_in:
        raise LayerTapError(
            f"{run.uri}: layer {layer} ({site}) has {d_in} dimensions, the SAE's d_in is {sae.cfg.d_in}"
        )
    sae.cfg.metadata.layertap = {"run": run.uri, "layer": layer, "site": site}  # kept in SAELens' cfg.json
    state = None
    if resume is not None:
        saved = Path(resume) / LOADER_STATE
        if not saved.is_file():
            raise LayerTapError(
                f"resume={str(resume)!r}: no {LOADER_STATE} there, so not a checkpoint this trainer wrote, or one "
                "whose writing was cut short (pass a directory under its checkpoint_path: the latest whole one)"
            )
        state = json.loads(saved.read_text())  # whole or absent: written beside, then renamed
        sae.load_weights_from_checkpoint(str(resume))
    loader_options = {"seed": seed, "epochs": None, **loader_options}
    activations = Activations(run, layer, batch_size=batch_size, site=site, state=state, **loader_options)

    def save_loader_state(checkpoint_path: Path | None) -> None:
        if checkpoint_path is not None:  # after SAELens' files: its presence says the checkpoint is whole
            open_store(checkpoint_path).write(LOADER_STATE, json.dumps(activations.loader.state()).encode())

    config = SAETrainerConfig(
        total_training_samples=tokens,
        train_batch_size_samples=batch_size,
        lr=lr,
        lr_end=lr,
        device=device,
        checkpoint_path=None if checkpoint_path is None else str(checkpoint_path),
        n_checkpoints=n_checkpoints,
        save_final_checkpoint=checkpoint_path is not None,
        logger=LoggingConfig(log_to_wandb=False),
    )
    out = SAETrainer(cfg=config, sae=sae, data_provider=activations, save_checkpoint_fn=save_loader_state)
    if resume is not None:
        out.load_trainer_state(resume)  # Adam's moments, the step, the scaling factor
    elif sae.cfg.normalize_activations == "expected_average_only_in":
        # SAELens' factor, sqrt(d_in) / mean norm, from the statistics: no batches spent on it
        out.activation_scaler.scaling_factor = math.sqrt(d_in) / run.stats().layer(layer, site=site).norm_mean
    return out
