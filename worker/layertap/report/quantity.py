"""The per-token quantity drawn over the ARC grids: `--quantity norm | pca:K | direction:FILE`.

- norm: the token's L2 norm.
- pca:K: the token's coordinate on the K-th principal component (1 = largest) of the drawn
  grid tokens, centred on their mean (each component's sign: its largest loading positive).
- direction:FILE: the token's component along a vector v, x . v / |v|. FILE is a .npy or a
  .safetensors file holding one vector [W] (W: the site's width, flattened), or a matrix
  with one axis W (an SAE's decoder [F, W] or encoder [W, F]) of which `--feature N` picks
  feature N; a .safetensors file with several tensors needs `--tensor NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layertap.errors import LayerTapError


@dataclass(frozen=True)
class Quantity:
    kind: str  # norm | pca | direction
    label: str  # how titles and colour bars name it
    component: int = 0  # pca: K, 1-based
    vector: np.ndarray | None = None  # direction: [W] float64, unit length

    @property
    def signed(self) -> bool:
        """Centred on zero (drawn with a diverging colour map)."""
        return self.kind != "norm"


def parse_quantity(text: str, width: int, *, feature: int | None = None, tensor: str | None = None) -> Quantity:
    """`--quantity` (with `--feature`, `--tensor`) for a site `width` values wide; the
    direction's file is read and checked here, before anything is drawn."""
    kind, _, argument = text.partition(":")
    if kind != "direction" and (feature is not None or tensor is not None):
        raise LayerTapError(f"--feature and --tensor go with --quantity direction:FILE, not {text!r}")
    if kind == "norm" and not argument:
        return Quantity("norm", "norm")
    if kind == "pca":
        try:
            component = int(argument)
        except ValueError:
            component = 0
        if component < 1:
            raise LayerTapError(f"--quantity {text!r}: pca:K needs a component K >= 1 (pca:1 is the largest)")
        return Quantity("pca", f"PCA component {component}", component=component)
    if kind == "direction" and argument:
        vector, name = load_direction(Path(argument), width, feature=feature, tensor=tensor)
        return Quantity("direction", f"direction {name}", vector=vector)
    raise LayerTapError(f"--quantity {text!r}: expected norm, pca:K or direction:FILE")


def load_direction(
    path: Path, width: int, *, feature: int | None = None, tensor: str | None = None
) -> tuple[np.ndarray, str]:
    """A unit vector [width] from a file, and how to name it."""
    array, name = _read_array(path, tensor)
    if not np.can_cast(array.dtype, np.float64, "same_kind"):  # text, objects, complex numbers
        raise LayerTapError(f"--quantity direction: {name} holds {array.dtype} values; a direction is real numbers")
    array = np.asarray(array, np.float64)
    if array.ndim == 1 or (array.ndim > 1 and array.size == width and feature is None):
        if feature is not None:
            raise LayerTapError(
                f"--feature {feature}: {name} holds one vector {list(array.shape)}, not a matrix of features"
            )
        if array.size != width:
            raise LayerTapError(
                f"--quantity direction: {name} has width {array.size}; the site is {width} wide (a vector [{width}] is "
                "expected)"
            )
        vector = array.reshape(-1)
    elif array.ndim == 2:
        if array.shape[1] == width:  # decoder [F, W] (also a square matrix: rows are features)
            features = array
        elif array.shape[0] == width:  # encoder [W, F]
            features = array.T
        else:
            raise LayerTapError(
                f"--quantity direction: {name} is a matrix {list(array.shape)} with no axis of the site's width {width}"
            )
        if feature is None:
            raise LayerTapError(
                f"--quantity direction: {name} is a matrix {list(array.shape)}; pick a feature with --feature N"
            )
        if not 0 <= feature < len(features):
            raise LayerTapError(f"--feature {feature}: {name} has features 0..{len(features) - 1}")
        vector = features[feature]
        name = f"{name} feature {feature}"
    else:
        raise LayerTapError(
            f"--quantity direction: {name} has shape {list(array.shape)}; expected a vector [{width}] or a matrix"
        )
    length = float(np.linalg.norm(vector))
    if not np.isfinite(length) or length == 0:
        raise LayerTapError(
            f"--quantity direction: {name} is {'zero' if length == 0 else 'not finite'}; it has no direction"
        )
    return vector / length, name


def _read_array(path: Path, tensor: str | None) -> tuple[np.ndarray, str]:
    if not path.is_file():
        raise LayerTapError(f"--quantity direction: {path} is not a file")
    if path.suffix == ".npy":
        if tensor is not None:
            raise LayerTapError(f"--tensor {tensor}: {path} is a .npy file, which holds one array")
        try:
            return np.load(path, allow_pickle=False), path.name
        except (ValueError, EOFError) as error:  # an empty file is an EOFError
            raise LayerTapError(f"--quantity direction: {path} is not a numpy array file ({error})") from None
    if path.suffix == ".safetensors":
        import ml_dtypes  # noqa: F401 - teaches numpy bfloat16, which safetensors' "np" needs
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "np") as file:
                names = list(file.keys())
                if tensor is None and len(names) != 1:
                    raise LayerTapError(
                        f"--quantity direction: {path} holds {len(names)} tensors ({', '.join(names)}); name one with "
                        "--tensor"
                    )
                tensor = names[0] if tensor is None else tensor
                if tensor not in names:
                    raise LayerTapError(f"--tensor {tensor}: not in {path} (tensors: {', '.join(names)})")
                return file.get_tensor(tensor), f"{path.name}:{tensor}"
        except SafetensorError as error:
            raise LayerTapError(f"--quantity direction: {path} is not a safetensors file ({error})") from None
    raise LayerTapError(f"--quantity direction: {path} should be a .npy or .safetensors file")


def token_values(quantity: Quantity, activations: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """The quantity of every row of `activations` [n, ...]; PCA is fitted on the rows where
    `fit` is true (the drawn grid tokens)."""
    x = np.asarray(activations, np.float64).reshape(len(activations), -1)
    if quantity.kind == "norm":
        return np.linalg.norm(x, axis=1)
    if quantity.kind == "direction":
        return x @ quantity.vector
    rows = x[fit]
    k = quantity.component
    if len(rows) <= k:
        raise LayerTapError(f"--quantity pca:{k}: the drawn grids have {len(rows)} tokens; PCA needs more than {k}")
    if k > x.shape[1]:
        raise LayerTapError(f"--quantity pca:{k}: the site is {x.shape[1]} wide, so it has {x.shape[1]} components")
    centre = rows.mean(axis=0)
    _, _, components = np.linalg.svd(rows - centre, full_matrices=False)
    axis = components[k - 1]
    axis = axis * np.sign(axis[np.argmax(np.abs(axis))])  # the SVD's sign is arbitrary: fix it
    return (x - centre) @ axis
