"""Property test (hypothesis, derandomized) of config.json: any JSON value in place of any
field a checkpoint's config may hold (or of the whole file) gives a DecoderConfig or a
LayerTapError whose one line starts with the file's path; never another exception."""

from __future__ import annotations

import json

import pytest
from derandomized import DERANDOMIZED
from hypothesis import given, settings
from hypothesis import strategies as st

from layertap.errors import LayerTapError
from layertap.model import write_random_checkpoint
from layertap.model.config import DecoderConfig

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=6,
)
ROPE_KEYS = ["rope_type", "type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("ckpt")
    write_random_checkpoint(directory)
    return json.loads((directory / "config.json").read_text())


@st.composite
def configs(draw, valid: dict):
    """The valid config with a few fields set to any value or removed; sometimes no object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    raw = json.loads(json.dumps(valid))
    keys = [*sorted(valid), "rope_scaling", "rope_parameters", "rope_theta", "use_sliding_window", "mlp_bias"]
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["set", "delete", "rope"]))
        if action == "delete":
            raw.pop(key, None)
        elif action == "rope":
            raw[draw(st.sampled_from(["rope_scaling", "rope_parameters"]))] = draw(
                st.dictionaries(st.sampled_from(ROPE_KEYS), JSON_VALUES | st.sampled_from(["llama3", "default"]))
                | JSON_VALUES
            )
        else:
            raw[key] = draw(JSON_VALUES)
    return raw


@settings(DERANDOMIZED, max_examples=300)
@given(data=st.data())
def test_any_config_json_is_a_config_or_a_clear_error(tmp_path, config, data):
    raw = data.draw(configs(config))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    try:
        decoded = DecoderConfig.from_file(tmp_path)
    except LayerTapError as error:
        message = str(error)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
    else:
        assert decoded.num_hidden_layers >= 1 and decoded.hidden_size >= 1
