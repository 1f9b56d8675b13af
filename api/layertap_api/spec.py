"""The ActivationExtraction spec: what to run, on what data, where to write it.

One definition serves three readers: the CRD (generated from these models), the
operator (which builds the JobSet from a validated spec) and the worker (which
runs it: `layertap extract --config FILE` accepts a whole resource or its spec).
Field names are camelCase on the wire; every field carries a description that
ends up in `kubectl explain`.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from layertap_api.hub import is_hub, parse_hub_uri

DatasetFormat = Literal["arc-json", "arc-kaggle", "barc-jsonl", "text-jsonl", "parquet"]
ARC_FORMATS = ("arc-json", "arc-kaggle", "barc-jsonl")  # the formats mode predict reads
ComputeDtype = Literal["float32", "bfloat16"]
StorageDtype = Literal["float32", "bfloat16", "float16", "int8"]
OnNonFinite = Literal["warn", "fail"]
Positions = Literal["all", "last", "mean"]
# Where in a decoder block activations are captured, in block order (TransformerLens' hook
# names; docs/format.md maps each to its Hugging Face module).
Site = Literal["resid_pre", "attn_z", "attn_out", "resid_mid", "mlp_hidden", "mlp_out", "resid_post"]
SITES: tuple[Site, ...] = get_args(Site)
# Bounds the cost the API server estimates for the CEL rules that match a uri (cel.py).
URI_MAX_LENGTH = 4096
LayerIndex = Annotated[int, Field(ge=0, le=511, strict=True)]  # strict: `true` is no layer 1


class ApiModel(BaseModel):
    """Base for every API model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    def to_wire(self) -> dict:
        """The JSON form as stored in the resource (camelCase, defaults included)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ModelSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description=(
            "Hugging Face-format checkpoint: gs://bucket/path, a path inside the image or on a mounted volume, or a "
            "Hugging Face Hub model hf://ORG/NAME[@REVISION] (a branch, tag or commit sha; read through the Hub's "
            "cache, HF_HUB_CACHE)."
        ),
    )
    dtype: ComputeDtype = Field(default="bfloat16", description="Compute dtype of the forward pass.")

    @field_validator("uri")
    @classmethod
    def _hub_uri_well_formed(cls, uri: str) -> str:
        if is_hub(uri):
            parse_hub_uri(uri, "model")
        return uri


class PromptSpec(ApiModel):
    grid_encoder: str = Field(
        default="Shape(RowNumber(Minimal))",
        description="ARC grid encoder, composed by name, e.g. Shape(RowNumber(Minimal)). ARC formats only.",
    )
    template: str = Field(
        default="output-from-examples-v1",
        description="Prompt template name. ARC formats only.",
    )
    variant: Literal["inference", "training"] = Field(
        default="inference",
        description=(
            "inference: the prompt ends where the answer grid would start; training: the answer grid is included."
        ),
    )
    augmentations: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Extra randomly augmented copies per task (dihedral transforms, colour permutations, pair order).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the augmentations.")
    augment_kinds: list[Literal["dihedral", "colours", "train-order", "swap-test"]] = Field(
        default=["dihedral", "colours", "train-order", "swap-test"],
        min_length=1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "What an augmented copy may change: dihedral transform, colour permutation, train-pair order, train/test "
            "swap."
        ),
    )
    permute_background: bool = Field(
        default=False, description="Let colour permutations move colour 0 (the background); kept by default."
    )


class SelectionSpec(ApiModel):
    """Which tasks (ARC formats) or records (text formats) a run uses. Applied in this order,
    each step keeping dataset order: ids, offset, sample, limit; then maxSamples caps the prompts.
    Every host applies it to the same dataset in the same order, so every host selects the same."""

    ids: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Keep only these tasks, by ARC task id (text formats: a record's 0-based position among the "
            'records read, e.g. "17"), in dataset order. An id not in the dataset is an error.'
        ),
    )
    offset: int = Field(
        default=0, ge=0, description="Skip the first N tasks or records (those left by ids), in dataset order."
    )
    sample: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Keep a random subset of N of the tasks or records left after ids and offset, in dataset order; "
            "drawn from seed and their ids only, so the same on every host and for any host count. "
            "More than are left is an error."
        ),
    )
    limit: int | None = Field(
        default=None, ge=1, description="Keep at most the first N tasks or records left after ids, offset and sample."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random subset (sample).")

    @field_validator("ids")
    @classmethod
    def _ids_once(cls, ids: list[str] | None) -> list[str] | None:
        repeated = sorted(task_id for task_id, n in Counter(ids or ()).items() if n > 1)
        if repeated:
            raise ValueError(f"{', '.join(repeated[:5])} listed more than once; list each id once")
        return ids


class DatasetSpec(ApiModel):
    uri: str = Field(
        min_length=1,
        max_length=URI_MAX_LENGTH,
        description=(
            "Dataset file or directory: gs://... or a path; or, for text-jsonl and parquet, a Hugging Face Hub "
            "dataset hf://ORG/NAME[@REVISION] (see split, config)."
        ),
    )
    format: DatasetFormat = Field(
        description=(
            "How to read the dataset (an hf:// dataset: the format of the split's data files, parquet or text-jsonl)."
        )
    )
    column: str = Field(
        default="text",
        min_length=1,
        description=(
            "text-jsonl and parquet: the string field (text-jsonl) or column (parquet) holding each record's text."
        ),
    )
    split: str = Field(
        default="train",
        min_length=1,
        description="hf:// datasets: the split to read, by the repository's README configs or its file names.",
    )
    config: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "hf:// datasets: the configuration (the Hub's subset, config_name in the README). "
            "Unset: the one marked default, the one named default, or the only one."
        ),
    )
    max_samples: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many samples (prompts), counted after select. Unset: the whole dataset.",
    )
    select: SelectionSpec | None = Field(
        default=None,
        description=(
            "Which tasks (ARC formats; all prompts of a selected task are kept) or records (text formats) "
            "to use: ids, then offset, then a seeded random sample, then limit. Unset: all of them."
        ),
    )
    max_tokens: int = Field(
        default=2048, ge=8, le=131072, description="Longest prompt in tokens; longer ones follow overLimit."
    )
    over_limit: Literal["drop", "truncate", "shorten"] = Field(
        default="drop",
        description=(
            "What to do with a prompt over maxTokens: drop it, truncate it, or (ARC) remove train pairs until it fits."
        ),
    )
    skip_invalid: bool = Field(
        default=False,
        description=(
            "Skip records that cannot be read (tasks, rows or lines: not JSON, not UTF-8, missing or invalid "
            "fields), counted and reported, instead of failing on the first one. A truncated file still fails."
        ),
    )
    test_pairs: int = Field(
        default=1,
        ge=1,
        le=32,
        description=(
            "barc-jsonl rows whose examples are one unsplit list (BARC `examples`): the last testPairs "
            "pairs are test pairs, one prompt each; the others are the train pairs."
        ),
    )
    prompt: PromptSpec = Field(default_factory=PromptSpec, description="ARC prompt settings.")

    @model_validator(mode="after")
    def _hub_fields(self) -> DatasetSpec:
        if is_hub(self.uri):
            if self.format in ARC_FORMATS:
                raise ValueError(
                    f"dataset.format: an hf:// dataset is read as text (parquet or text-jsonl), not {self.format}"
                )
            try:
                parse_hub_uri(self.uri, "dataset")
            except ValueError as error:
                raise ValueError(f"dataset.uri: {error}") from None
        elif self.split != "train" or self.config is not None:
            field = "config" if self.config is not None else "split"
            raise ValueError(f"dataset.{field}: only hf:// datasets have splits and configs; remove it")
        return self


class ExtractionSpec(ApiModel):
    layers: list[LayerIndex] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "Decoder layers whose output residual stream is stored (0-based; layer i is Hugging Face "
            "hidden_states[i+1]). Unset: the upper part of the model, layers 10-23 for a 24-layer model."
        ),
    )
    sites: list[Site] | None = Field(
        default=None,
        min_length=1,
        max_length=len(SITES),
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description=(
            "What to store at each of the layers: resid_pre (the block's input), attn_z (each head's output "
            "before the output projection, heads x head size), attn_out, resid_mid (after attention's residual "
            "add), mlp_hidden (silu(gate) * up, intermediate width), mlp_out, resid_post (the block's output). "
            "Unset: resid_post."
        ),
    )
    positions: Positions = Field(
        default="all",
        description="all: every kept token; last: the last kept token of each sample; mean: the mean over kept tokens.",
    )
    segments: list[str] | None = Field(
        default=None,
        description="Keep only tokens of these prompt segments (e.g. test-input); unset keeps every segment.",
    )
    exclude_special_tokens: bool = Field(
        default=True, description="Drop BOS/EOS/pad/chat-control tokens before selecting positions."
    )
    storage_dtype: StorageDtype = Field(
        default="bfloat16", description="dtype of the stored activations (int8 stores a per-row scale)."
    )
    on_non_finite: OnNonFinite = Field(
        default="warn",
        description=(
            "When a stored value is NaN or infinite (seen in the statistics of each step): warn (a warning in the "
            "log and status.progress.nonFinite, once, and the run goes on) or fail (the run stops with an error "
            "naming the step, layer and site)."
        ),
    )
    batch_size: int = Field(
        default=8,
        ge=1,
        le=65536,
        description=(
            "Most rows per step across all hosts (a multiple of the data-parallel devices); each row packs whole "
            "prompts end to end, and the rows of one length are spread evenly over as few steps as this allows "
            "(on CPU, steps of at most 2048 tokens per device: more rows per step only run slower there)."
        ),
    )

    @model_validator(mode="after")
    def _layers_sane(self) -> ExtractionSpec:
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError("extraction.layers: duplicate layer indices; list each layer once")
        if self.sites is not None and len(set(self.sites)) != len(self.sites):
            raise ValueError("extraction.sites: duplicate sites; list each site once")
        return self


class OutputSpec(ApiModel):
    uri: str = Field(min_length=1, description="Where the run is written: gs://bucket/prefix or a path.")
    shard_size_mb: int = Field(default=256, ge=1, le=8192, description="Upper bound of one shard's size in MiB.")
    compilation_cache: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Where compiled XLA programs are kept so that a restarted worker does not compile again "
            "(gs://... or a path; share one between runs of the same model and shapes). Unset: <uri>/.jax-cache; "
            '"off": nowhere.'
        ),
    )
    hub_cache: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Multi-process runs with hf:// sources: where process 0 copies what it read from the Hugging Face Hub "
            "for the other processes, so the Hub is asked once and every host reads the same commit (gs://... or a "
            'path). Unset: <uri>/.hf-cache, readable by whoever may read the activations; "off": every process '
            "downloads for itself (pin a commit, hf://ORG/NAME@SHA, so that all read the same files)."
        ),
    )


class ViewsSpec(ApiModel):
    """The augmented views of each ARC test input that prediction answers and votes over."""

    dihedral: bool = Field(
        default=True, description="All 8 rotations and reflections of the task; false: the task as given only."
    )
    colour_permutations: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Extra copies of the views with colours 1-9 permuted (0, the background, kept).",
    )
    reorder_examples: bool = Field(
        default=False, description="Shuffle the order of the train pairs in each view but the first."
    )
    seed: int = Field(default=0, ge=0, description="Seed of the colour permutations and example orders.")


class SamplingSpec(ApiModel):
    temperature: float = Field(
        default=0.0, ge=0, le=10, description="0: greedy decoding; otherwise sampled at this temperature."
    )
    top_p: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Nucleus sampling: sample from the most probable tokens of this total probability.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        description="Seed of the sampling (per prompt: the same prompt draws the same tokens on any host).",
    )


class PredictionSpec(ApiModel):
    """ARC test-time inference (mode predict): answers generated for every view, voted into
    a Kaggle submission, scored when the dataset carries the solutions."""

    views: ViewsSpec = Field(default_factory=ViewsSpec, description="Augmented views of each test input.")
    max_new_tokens: int = Field(
        default=1024,
        ge=1,
        le=16384,
        description="Token budget of one answer (a 30x30 grid takes about 1000 with the default encoder).",
    )
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="Greedy or sampled decoding.")
    batch_size: int = Field(default=8, ge=1, le=4096, description="Prompts generated together, across all hosts.")
    activations: bool = Field(
        default=False,
        description="Also store the residual stream of extraction.layers over each prompt and its generated answer.",
    )


class JobSpec(ApiModel):
    """The part of the spec the worker runs; the resource's spec extends it with cluster fields."""

    mode: Literal["extract", "predict"] = Field(
        default="extract",
        description="extract: store activations over the prompts; predict: generate ARC answers (see prediction).",
    )
    model: ModelSpec = Field(description="The checkpoint to run.")
    dataset: DatasetSpec = Field(description="The prompts to run it on.")
    extraction: ExtractionSpec = Field(default_factory=ExtractionSpec, description="Which activations to keep.")
    prediction: PredictionSpec = Field(
        default_factory=PredictionSpec, description="How to generate answers (mode predict)."
    )
    output: OutputSpec = Field(description="Where to write them.")

    @model_validator(mode="after")
    def _predict_needs_arc(self) -> JobSpec:
        if self.mode == "predict" and self.dataset.format not in ARC_FORMATS:
            raise ValueError(
                f"mode predict answers ARC tasks: dataset.format must be one of {', '.join(ARC_FORMATS)}, not "
                f"{self.dataset.format}"
            )
        return self


class MeshSpec(ApiModel):
    """The device mesh (data x model). Unset: data parallel over every device."""

    model: int = Field(
        default=1,
        ge=1,
        le=1024,
        description=(
            "Size of the model (tensor-parallel) axis; must divide the device count (and the model's KV heads, checked "
            "by the worker)."
        ),
    )
    data: int | None = Field(
        default=None,
        ge=1,
        le=65536,
        description="Size of the data axis. Unset: devices / model; if set, data x model must equal the device count.",
    )


class ExpectedDevices(ApiModel):
    """The accelerator devices each worker host must have: what the resource asked for."""

    platform: Literal["tpu", "gpu", "cpu"] = Field(description="JAX's platform name of the devices.")
    per_host: int = Field(ge=1, description="Devices one worker process must see.")
    accelerator: str = Field(description="The node-pool accelerator, for messages.")


class WorkerSpec(JobSpec):
    """What a worker process runs: the job and how its devices are laid out.

    Built from a resource (`ActivationExtractionSpec.worker_spec()`), or locally from a job
    spec and `--model-parallel`; never read from a file under this shape.
    """

    mesh: MeshSpec = Field(default_factory=MeshSpec, description="The device mesh (data x model).")
    devices: ExpectedDevices | None = Field(
        default=None, description="The devices each host must have (a resource's accelerator); None: any."
    )
