from __future__ import annotations

import pytest

from layertap.errors import LayerTapError
from layertap.model import load_tokenizer, special_token_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    return load_tokenizer(tiny_dir)


def test_loads_offline_with_transformers(tiny_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tiny_dir).get_vocab() == load_tokenizer(tiny_dir).get_vocab()


def test_digits_are_single_tokens(tokenizer):
    pieces = tokenizer.tokenize("grid 3210\n77")
    assert [p for p in pieces if p.strip("Ġ").isdigit()] == ["3", "2", "1", "0", "7", "7"]
    assert tokenizer.decode(tokenizer.encode("grid 3210\n77")) == "grid 3210\n77"


def test_special_tokens_are_known(tokenizer):
    ids = special_token_ids(tokenizer)
    named = {tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert ids == named
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_special_tokens_are_never_split(tokenizer):
    text = "<|im_start|>user\nhi<|im_end|>"
    specials = [i for i in tokenizer.encode(text) if i in special_token_ids(tokenizer)]
    assert specials == [tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_chat_template_is_qwen_style(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1 2"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1 2<|im_end|>\n<|im_start|>assistant\n"


def test_vocab_fits_the_model(tiny, tokenizer):
    config, _ = tiny
    assert len(tokenizer) <= config.vocab_size


def test_missing_tokenizer_names_the_directory(tmp_path):
    with pytest.raises(LayerTapError, match=f"{tmp_path}: no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_broken_tokenizer_names_the_file(tiny_dir, tmp_path):
    for name in ("tokenizer_config.json", "config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(LayerTapError, match=f"{tmp_path / 'tokenizer.json'}: cannot load the tokenizer"):
        load_tokenizer(tmp_path)
