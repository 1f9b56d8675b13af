"""Dataset spec -> the samples a run feeds: plain text (`layertap.data.text`) or ARC
prompts (`layertap.arc`), by `dataset.format`."""

from __future__ import annotations

from layertap_api.spec import DatasetSpec

from layertap.data.dataset import Dataset
from layertap.data.text import SUFFIXES as TEXT_FORMATS


def load_dataset(spec: DatasetSpec, tokenizer) -> Dataset:
    """Read, tokenize and limit the dataset; an empty result is an error naming the file."""
    if spec.format in TEXT_FORMATS:
        from layertap.data.text import load_text_dataset

        return load_text_dataset(spec, tokenizer)
    from layertap.arc.dataset import load_arc_dataset  # the ARC pipeline only for ARC formats

    return load_arc_dataset(spec, tokenizer)
