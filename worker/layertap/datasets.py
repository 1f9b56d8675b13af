"""Dataset spec -> the samples a run feeds: plain text (`layertap.data.text`) or ARC
prompts (`layertap.arc`), by `dataset.format`, with the fingerprints of the files read."""

from __future__ import annotations

from dataclasses import replace

from layertap.data.dataset import Dataset
from layertap.data.text import SUFFIXES as TEXT_FORMATS
from layertap.io import sources
from layertap_api.spec import DatasetSpec


def load_dataset(spec: DatasetSpec, tokenizer) -> Dataset:
    """Read, tokenize and limit the dataset; an empty result is an error naming the file."""
    with sources.recording() as read:
        dataset = _load(spec, tokenizer)
    return replace(dataset, files={name: source.fingerprint() for name, source in sorted(read.items())})


def _load(spec: DatasetSpec, tokenizer) -> Dataset:
    if spec.format in TEXT_FORMATS:
        from layertap.data.text import load_text_dataset

        return load_text_dataset(spec, tokenizer)
    from layertap.arc.dataset import load_arc_dataset  # the ARC pipeline only for ARC formats

    return load_arc_dataset(spec, tokenizer)
