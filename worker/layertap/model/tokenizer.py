"""The checkpoint's tokenizer (tokenizer.json + chat template) and its special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layertap.errors import LayerTapError
from layertap.model.checkpoint import resolve_checkpoint_dir


def load_tokenizer(path: str | Path, cache_dir: str | Path | None = None) -> Any:
    """A transformers fast tokenizer from a local checkpoint directory or gs:// URI (offline)."""
    directory = resolve_checkpoint_dir(path, cache_dir)
    if not (directory / "tokenizer.json").exists():
        raise LayerTapError(f"{directory}: no tokenizer.json (LayerTap needs a fast tokenizer)")
    from transformers import AutoTokenizer  # slow to import; only the worker needs it

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise LayerTapError(f"{directory / 'tokenizer.json'}: cannot load the tokenizer ({error})") from error


def special_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of BOS/EOS/pad/<|im_start|>/<|im_end|> and every other added special token."""
    ids = {token_id for token_id in tokenizer.all_special_ids if token_id is not None}
    ids.update(token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special)
    return frozenset(ids)
