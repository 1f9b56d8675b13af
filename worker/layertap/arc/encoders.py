"""Grid encoders: an ARC grid as text, and back, in the conventions of arc24.

Encoders compose: `Shape(RowNumber(Minimal))` writes

    ```grid shape: 2x3
    1 012
    2 340
    ```

Each encoding also reports where every cell's text starts, so that prompt tokens can
be mapped to grid cells without guessing. Encoders are built from a spec string that
is parsed (never evaluated): `build_encoder("Shape(RowNumber(Minimal))")`.
"""

from __future__ import annotations

import ast
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from layertap.arc.grids import GridError, to_grid

DEFAULT_ENCODER = "Shape(RowNumber(Minimal))"


@dataclass(frozen=True)
class Encoded:
    """A grid's text and, per cell, the offset in `text` where the cell's characters start."""

    text: str
    cell_starts: np.ndarray  # [H, W] int64


class GridEncoder(ABC):
    """Grid <-> text. `answer_prefix` is the text every encoding starts with (what an inference
    prompt ends with); `str(encoder)` is its canonical spec."""

    answer_prefix: str = ""

    @abstractmethod
    def encode(self, grid: np.ndarray) -> Encoded: ...

    @abstractmethod
    def decode(self, text: str) -> np.ndarray: ...

    def to_text(self, grid: np.ndarray) -> str:
        return self.encode(np.asarray(grid)).text


def _row_major_starts(height: int, width: int, cell_chars: int, row_chars: int) -> np.ndarray:
    """Starts of fixed-width cells laid out row by row, rows separated by one newline."""
    return np.arange(height)[:, None] * (row_chars + 1) + np.arange(width)[None, :] * cell_chars


def _digit_text(grid: np.ndarray, repeat: int = 1) -> str:
    """Rows of digits (each written `repeat` times) joined by newlines, built in one array op."""
    chars = np.repeat(grid.astype(np.uint8) + ord("0"), repeat, axis=1)
    newline = np.full((grid.shape[0], 1), ord("\n"), dtype=np.uint8)
    return np.concatenate([chars, newline], axis=1).tobytes()[:-1].decode("ascii")


def _lines(text: str) -> list[str]:
    lines = text.strip().splitlines()
    if not lines:
        raise GridError("no grid rows in the text")
    return lines


def _digit_rows(lines: list[str]) -> np.ndarray:
    """Rows of digit characters -> a validated grid."""
    for line in lines:
        if not line.isdigit() or not line.isascii():
            raise GridError(f"row {line!r} is not made of digits")
    width = len(lines[0])
    if any(len(line) != width for line in lines):
        r = next(r for r, line in enumerate(lines) if len(line) != width)
        raise GridError(f"not rectangular: row 0 has {width} cells, row {r} has {len(lines[r])}")
    digits = np.frombuffer("".join(lines).encode("ascii"), dtype=np.uint8) - ord("0")
    return to_grid(digits.reshape(len(lines), width).astype(np.int8))


class Minimal(GridEncoder):
    """One line per row, one digit per cell: `012\\n340`."""

    def encode(self, grid: np.ndarray) -> Encoded:
        height, width = grid.shape
        return Encoded(_digit_text(grid), _row_major_starts(height, width, 1, width))

    def decode(self, text: str) -> np.ndarray:
        return _digit_rows(_lines(text))

    def __str__(self) -> str:
        return "Minimal"


class WithSeparation(GridEncoder):
    """Cells separated by a symbol: `0|1|2\\n3|4|0`."""

    def __init__(self, separator: str = "|"):
        if not separator or any(ch.isdigit() or ch in "\r\n" for ch in separator):
            raise ValueError(f"separator {separator!r} must be non-empty, without digits or newlines")
        self.separator = separator

    def encode(self, grid: np.ndarray) -> Encoded:
        text = "\n".join(self.separator.join(map(str, row)) for row in grid.tolist())
        height, width = grid.shape
        step = 1 + len(self.separator)
        return Encoded(text, _row_major_starts(height, width, step, width * step - len(self.separator)))

    def decode(self, text: str) -> np.ndarray:
        rows = []
        for line in _lines(text):
            cells = line.split(self.separator)
            if not all(len(cell) == 1 for cell in cells):
                raise GridError(f"row {line!r} is not digits separated by {self.separator!r}")
            rows.append("".join(cells))
        return _digit_rows(rows)

    def __str__(self) -> str:
        return f"WithSeparation({self.separator!r})"


class RepeatNumber(GridEncoder):
    """Each digit written n times: `000111222` for n=3."""

    def __init__(self, n: int = 3):
        if not 1 <= n <= 10:
            raise ValueError(f"n must be 1..10, got {n}")
        self.n = n

    def encode(self, grid: np.ndarray) -> Encoded:
        height, width = grid.shape
        return Encoded(_digit_text(grid, self.n), _row_major_starts(height, width, self.n, width * self.n))

    def decode(self, text: str) -> np.ndarray:
        lines = _lines(text)
        for line in lines:
            if line != "".join(ch * self.n for ch in line[:: self.n]):
                raise GridError(f"row {line!r} is not each digit repeated {self.n} times")
        return _digit_rows([line[:: self.n] for line in lines])

    def __str__(self) -> str:
        return f"RepeatNumber({self.n})"


class _Wrapper(GridEncoder):
    def __init__(self, inner: GridEncoder):
        if not isinstance(inner, GridEncoder):
            raise TypeError(f"{type(self).__name__} wraps a grid encoder, got {inner!r}")
        self.inner = inner

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.inner})"


class CodeBlock(_Wrapper):
    """The inner text in a fenced block: ```` ```grid\\n...\\n``` ````."""

    answer_prefix = "```grid"
    _OPEN, _CLOSE = "```grid\n", "\n```"

    def encode(self, grid: np.ndarray) -> Encoded:
        inner = self.inner.encode(grid)
        return Encoded(self._OPEN + inner.text + self._CLOSE, inner.cell_starts + len(self._OPEN))

    def decode(self, text: str) -> np.ndarray:
        _, opened, rest = text.partition(self._OPEN)
        if not opened:
            raise GridError("no ```grid block in the text")
        return self.inner.decode(rest.split(self._CLOSE)[0])


class Shape(_Wrapper):
    """A fenced block whose header gives the shape: ```` ```grid shape: HxW ````."""

    answer_prefix = "```grid"
    _HEADER = "```grid shape:"

    def encode(self, grid: np.ndarray) -> Encoded:
        inner = self.inner.encode(grid)
        header = f"{self._HEADER} {grid.shape[0]}x{grid.shape[1]}\n"
        return Encoded(header + inner.text + "\n```", inner.cell_starts + len(header))

    def decode(self, text: str) -> np.ndarray:
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(self._HEADER)), None)
        if start is None:
            raise GridError(f"no '{self._HEADER}' header in the text")
        body = []
        for line in lines[start + 1 :]:
            if line.startswith("```"):
                break
            body.append(line)
        grid = self.inner.decode("\n".join(body))
        declared = lines[start][len(self._HEADER) :].strip()
        if declared != f"{grid.shape[0]}x{grid.shape[1]}":
            raise GridError(f"header says {declared!r} but the grid is {grid.shape[0]}x{grid.shape[1]}")
        return grid


class RowNumber(_Wrapper):
    """Each line of the inner text numbered from 1: `1 012\\n2 340`."""

    def __init__(self, inner: GridEncoder):
        super().__init__(inner)
        self.answer_prefix = "1 " + inner.answer_prefix

    def encode(self, grid: np.ndarray) -> Encoded:
        inner = self.inner.encode(grid)
        lines = inner.text.split("\n")
        prefixes = [f"{i + 1} " for i in range(len(lines))]
        text = "\n".join(p + line for p, line in zip(prefixes, lines))
        # A character on inner line k moves right by the prefixes of lines 0..k.
        newlines = np.flatnonzero(np.frombuffer(inner.text.encode("utf-32-le"), np.uint32) == 10)
        shift = np.cumsum([len(p) for p in prefixes])
        line_of_cell = np.searchsorted(newlines, inner.cell_starts)
        return Encoded(text, inner.cell_starts + shift[line_of_cell])

    def decode(self, text: str) -> np.ndarray:
        rows = []
        for line in text.strip("\n").splitlines():
            number, space, rest = line.partition(" ")
            if not space or not number.isdigit():
                raise GridError(f"line {line!r} does not start with a row number")
            rows.append(rest)
        return self.inner.decode("\n".join(rows))


class ReplaceNumber(_Wrapper):
    """Digits of the inner text replaced by ten rare letters (`ñòò`), one character each."""

    SYMBOLS = "ñò÷ûąćďęĚĞ"
    _TO_SYMBOLS = str.maketrans("0123456789", SYMBOLS)
    _TO_DIGITS = str.maketrans(SYMBOLS, "0123456789")

    def __init__(self, inner: GridEncoder):
        super().__init__(inner)
        self.answer_prefix = inner.answer_prefix.translate(self._TO_SYMBOLS)

    def encode(self, grid: np.ndarray) -> Encoded:
        inner = self.inner.encode(grid)
        return Encoded(inner.text.translate(self._TO_SYMBOLS), inner.cell_starts)

    def decode(self, text: str) -> np.ndarray:
        return self.inner.decode(text.translate(self._TO_DIGITS))


# name -> (class, argument kinds); arc24's class names are accepted as aliases.
_REGISTRY: dict[str, tuple[type[GridEncoder], tuple[type, ...]]] = {
    "Minimal": (Minimal, ()),
    "WithSeparation": (WithSeparation, (str,)),
    "RepeatNumber": (RepeatNumber, (int,)),
    "CodeBlock": (CodeBlock, (GridEncoder,)),
    "Shape": (Shape, (GridEncoder,)),
    "RowNumber": (RowNumber, (GridEncoder,)),
    "ReplaceNumber": (ReplaceNumber, (GridEncoder,)),
}
_ALIASES = {
    "MinimalGridEncoder": "Minimal",
    "GridWithSeparationEncoder": "WithSeparation",
    "RepeatNumberEncoder": "RepeatNumber",
    "GridCodeBlockEncoder": "CodeBlock",
    "GridShapeEncoder": "Shape",
    "RowNumberEncoder": "RowNumber",
    "ReplaceNumberEncoder": "ReplaceNumber",
}
ENCODER_NAMES = tuple(_REGISTRY)


def build_encoder(spec: str | GridEncoder) -> GridEncoder:
    """An encoder from its spec, e.g. "Shape(RowNumber(Minimal))" or "WithSeparation('|')".

    The spec is parsed as a Python expression tree and only names from the registry,
    calls and string/integer literals are accepted: nothing is evaluated.
    """
    if isinstance(spec, GridEncoder):
        return spec
    if not isinstance(spec, str) or len(spec) > 200:
        raise ValueError(f"grid encoder spec must be a string of at most 200 characters, got {spec!r}")
    try:
        tree = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"grid encoder {spec!r}: not a valid spec such as {DEFAULT_ENCODER}") from None
    try:
        return _build(tree, depth=0)
    except ValueError as error:
        raise ValueError(f"grid encoder {spec!r}: {error}") from None


def _build(node: ast.expr, depth: int) -> GridEncoder:
    if depth > 8:
        raise ValueError("nested too deeply")
    if isinstance(node, ast.Name):
        name, args = node.id, []
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        name, args = node.func.id, node.args
    else:
        raise ValueError(f"expected an encoder name or call, found {ast.unparse(node)!r}")
    name = _ALIASES.get(name, name)
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(ENCODER_NAMES)}")
    cls, kinds = _REGISTRY[name]
    required = 1 if kinds == (GridEncoder,) else 0
    if not required <= len(args) <= len(kinds):
        raise ValueError(f"{name} takes {'one encoder' if required else f'at most {len(kinds)} argument(s)'}")
    values = []
    for arg, kind in zip(args, kinds):
        if kind is GridEncoder:
            values.append(_build(arg, depth + 1))
        elif isinstance(arg, ast.Constant) and type(arg.value) is kind:
            values.append(arg.value)
        else:
            raise ValueError(f"{name} expects a {kind.__name__} literal, found {ast.unparse(arg)!r}")
    return cls(*values)
