"""Clus "hierarchical" ARFF: the public HMC benchmark data sets (FunCat / GO yeast, Diatoms, Enron,
ImCLEF07). Pure Python + numpy.

File format (``../shared/data/hmc/README.md``): a standard ARFF header (``numeric`` and nominal
``{a,b}`` attributes, ``?`` = missing, keywords in any case); the last attribute is
``@ATTRIBUTE class hierarchical <list>``:

- **tree** (FUN, Diatoms, Enron, ImCLEF07): every node written as its full path ``01/01/03``; the
  parent is the path minus its last segment; top nodes hang under an implicit ``root``; repeated
  entries are de-duplicated; a missing prefix is added as an implicit node.
- **DAG** (GO): ``parent/child`` edges; ``root/GO0003674`` etc. hang the ontology roots under
  ``root``.

Each data row ends with the example's classes joined by ``@``; ancestors are implied and added here
(ancestor closure). ``root`` itself is never a class.

Arrays follow the node order ``(level, id)`` of :class:`ArffHierarchy` — ``level`` 1 = a child of
``root``, in a DAG the longest path from ``root`` (so every edge goes one level deeper or more).
``R`` is C-HMCNN's matrix, the same as :meth:`vtag.hierarchy.taxonomy.Taxonomy.ancestor_matrix`:
``R[i, j]`` iff j is i or a descendant of i; :func:`vtag.models.dhmcn.HierarchySpec.from_ancestor_matrix`
takes it as is.

Preprocessing follows C-HMCNN's protocol (:class:`HMCDataset.standardize`): nominal attributes
one-hot (unknown or missing value = all zeros); optionally C-HMCNN's quirk of filling each file's
``NaN`` with that file's own column means; then mean imputation and standardisation fitted on
train+valid (on train where there is no valid file: the "others").

Usage::

    ds = load_hmc_dataset("../shared/data/hmc/cellcycle_FUN")
    ds = ds.standardize()                # X float32, no NaN
    ds.train.X [B, D], ds.train.Y [B, N] bool, ds.hierarchy.R [N, N], ds.hierarchy.eval_mask [N]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

#: C-HMCNN's ``to_skip``: classes never evaluated (the GO ontology roots; ``root`` is no class here).
CHMCNN_SKIP = ("root", "GO0003674", "GO0005575", "GO0008150")

_ATTR_RE = re.compile(r"^@attribute\s+('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)\s+(.*)$", re.IGNORECASE)
_NUMERIC_TYPES = {"numeric", "real", "integer"}


class ArffError(ValueError):
    """A malformed ARFF file; the message names the file, the line and the reason."""

    def __init__(self, source: str, line: int | None, reason: str):
        where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + reason)


# ---------------------------------------------------------------------------------------- hierarchy
@dataclass(frozen=True)
class ArffHierarchy:
    """A class hierarchy from the ``class hierarchical`` attribute.

    ``ids [N]`` node ids in ``(level, id)`` order (``root`` excluded); ``level [N]`` int64;
    ``edges [E, 2]`` int64 direct ``(parent, child)`` index pairs (edges from ``root`` left out);
    ``R [N, N]`` bool ancestor matrix (``R[i, j]`` iff j is i or a descendant of i);
    ``kind`` ``"tree"`` or ``"dag"``; ``eval_mask [N]`` bool, False for :data:`CHMCNN_SKIP`.
    """

    ids: tuple[str, ...]
    level: np.ndarray
    edges: np.ndarray
    R: np.ndarray
    kind: str
    eval_mask: np.ndarray
    index: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.ids)

    @property
    def depth(self) -> int:
        return int(self.level.max()) if len(self.level) else 0

    def ancestors_of(self, j: int) -> np.ndarray:
        """Indices of j and all its ancestors, ``[k]`` int64."""
        return np.flatnonzero(self.R[:, j])

    def close(self, Y: np.ndarray) -> np.ndarray:
        """Ancestor closure of a ``[B, N]`` bool label matrix (``R`` applied as a boolean product)."""
        Y = np.asarray(Y, dtype=bool)
        out = Y.copy()
        for j in np.flatnonzero(Y.any(axis=0)):
            rows = Y[:, j]
            out[np.ix_(rows, self.ancestors_of(j))] = True
        return out

    def same_as(self, other: ArffHierarchy) -> bool:
        return self.ids == other.ids and np.array_equal(self.edges, other.edges)

    @classmethod
    def from_edges(cls, pairs: Iterable[tuple[str, str]], kind: str,
                   skip: Sequence[str] = CHMCNN_SKIP, source: str = "<edges>") -> ArffHierarchy:
        """From ``(parent, child)`` id pairs; ``parent == "root"`` marks a top node. Raises
        :class:`ArffError` on a cycle or a self-loop."""
        parents: dict[str, list[str]] = {}
        for p, c in pairs:
            if p == c:
                raise ArffError(source, None, f"class {c!r} is its own parent")
            if c == "root":
                raise ArffError(source, None, "'root' cannot be a child")
            parents.setdefault(c, [])
            if p != "root":
                parents.setdefault(p, [])
                if p not in parents[c]:
                    parents[c].append(p)
        # longest path from root, by DFS with cycle detection (iterative: GO is 11 deep, fine either way)
        level: dict[str, int] = {}
        state: dict[str, int] = {}  # 1 = on stack, 2 = done
        for start in sorted(parents):
            if start in level:
                continue
            stack = [(start, iter(parents[start]))]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    level[node] = 1 + max((level[p] for p in parents[node]), default=0)
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    raise ArffError(source, None, f"the hierarchy has a cycle through {nxt!r}")
                elif state.get(nxt) is None:
                    state[nxt] = 1
                    stack.append((nxt, iter(parents[nxt])))
        ids = tuple(sorted(parents, key=lambda n: (level[n], n)))
        index = {n: i for i, n in enumerate(ids)}
        n = len(ids)
        edges = np.array([(index[p], index[c]) for c in ids for p in parents[c]], dtype=np.int64).reshape(-1, 2)
        lv = np.array([level[i] for i in ids], dtype=np.int64)
        # ancestor sets in topological (level) order: anc[c] = {c} ∪ anc[p] for every parent p
        anc = np.eye(n, dtype=bool)  # anc[c, a]: a is c or an ancestor of c
        for c in range(n):  # ids sorted by level, parents have smaller levels
            for p in parents[ids[c]]:
                anc[c] |= anc[index[p]]
        R = anc.T.copy()
        skip_set = set(skip)
        eval_mask = np.array([i not in skip_set for i in ids], dtype=bool)
        return cls(ids=ids, level=lv, edges=edges, R=R, kind=kind, eval_mask=eval_mask, index=index)

    @classmethod
    def parse(cls, spec: str, kind: str | None = None, skip: Sequence[str] = CHMCNN_SKIP,
              source: str = "<header>") -> ArffHierarchy:
        """From the text after ``hierarchical``. ``kind`` None = detect: DAG (edge list) iff every
        entry has exactly two segments and some entry starts at ``root``; else a tree of paths."""
        entries = [e.strip() for e in spec.strip().split(",") if e.strip()]
        if not entries:
            raise ArffError(source, None, "empty class hierarchy")
        parts = [e.split("/") for e in entries]
        if any(not s for p in parts for s in p):
            raise ArffError(source, None, "empty segment in the class hierarchy")
        if kind is None:
            kind = "dag" if all(len(p) == 2 for p in parts) and any(p[0] == "root" for p in parts) else "tree"
        if kind == "dag":
            bad = [e for e, p in zip(entries, parts) if len(p) != 2]
            if bad:
                raise ArffError(source, None, f"DAG entries must be 'parent/child', got {bad[0]!r}")
            return cls.from_edges(((p[0], p[1]) for p in parts), "dag", skip, source)
        if kind != "tree":
            raise ValueError(f"kind must be 'tree', 'dag' or None, got {kind!r}")
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for p in parts:
            if p[0] == "root":
                p = p[1:]
            for k in range(1, len(p) + 1):
                node = "/".join(p[:k])
                if node in seen:
                    continue
                seen.add(node)
                pairs.append(("/".join(p[: k - 1]) if k > 1 else "root", node))
        return cls.from_edges(pairs, "tree", skip, source)


# ---------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Attribute:
    """One input attribute: ``kind`` ``"numeric"`` or ``"nominal"`` (with ``values``)."""

    name: str
    kind: str
    values: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.values)


@dataclass(frozen=True)
class ArffData:
    """One split. ``X [B, D]`` float64 (NaN = missing numeric; nominals one-hot), ``Y [B, N]`` bool
    ancestor-closed labels in ``hierarchy`` node order; ``feature_names [D]``."""

    X: np.ndarray
    Y: np.ndarray
    attributes: tuple[Attribute, ...]
    feature_names: tuple[str, ...]
    hierarchy: ArffHierarchy
    source: str = ""

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def subset(self, rows: np.ndarray) -> ArffData:
        return replace(self, X=self.X[rows], Y=self.Y[rows])


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1].replace("\\" + s[0], s[0])
    return s


def _split_row(line: str) -> list[str]:
    """Split a data row on commas, honouring single/double quotes (rare in these files)."""
    if "'" not in line and '"' not in line:
        return line.split(",")
    out, cur, quote = [], [], None
    for ch in line:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def read_arff(path: str | Path, hierarchy: ArffHierarchy | None = None, kind: str | None = None,
              skip: Sequence[str] = CHMCNN_SKIP, strict_labels: bool = True) -> ArffData:
    """Read one Clus hierarchical ARFF file.

    ``hierarchy``: reuse an already parsed one (the splits of a data set share it; the file's own
    header must then describe the same hierarchy). ``strict_labels``: an unknown class in a row
    raises :class:`ArffError`; else it is dropped. Returns :class:`ArffData`.
    """
    path = Path(path)
    src = str(path)
    attributes: list[Attribute] = []
    hier: ArffHierarchy | None = None
    in_data = False
    cols: list[list[str]] = []
    label_fields: list[tuple[int, str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("%"):
                continue
            if not in_data:
                low = line[:10].lower()
                if low.startswith("@relation"):
                    continue
                if low.startswith("@attribute"):
                    if hier is not None:
                        raise ArffError(src, lineno, "the hierarchical class must be the last attribute")
                    m = _ATTR_RE.match(line)
                    if not m:
                        raise ArffError(src, lineno, "cannot parse @ATTRIBUTE line")
                    name, typ = _unquote(m.group(1)), m.group(2).strip()
                    tl = typ.lower()
                    if tl.startswith("hierarchical"):
                        spec = typ[len("hierarchical"):]
                        parsed = ArffHierarchy.parse(spec, kind=kind, skip=skip, source=src)
                        if hierarchy is not None and not hierarchy.same_as(parsed):
                            raise ArffError(src, lineno, "class hierarchy differs from the one given")
                        hier = hierarchy if hierarchy is not None else parsed
                    elif tl in _NUMERIC_TYPES:
                        attributes.append(Attribute(name, "numeric"))
                    elif typ.startswith("{") and typ.endswith("}"):
                        values = tuple(_unquote(v) for v in _split_row(typ[1:-1]))
                        if len(set(values)) != len(values):
                            raise ArffError(src, lineno, f"attribute {name!r} repeats a nominal value")
                        attributes.append(Attribute(name, "nominal", values))
                    else:
                        raise ArffError(src, lineno, f"attribute {name!r}: unsupported type {typ[:40]!r}")
                    continue
                if low.startswith("@data"):
                    if hier is None:
                        raise ArffError(src, lineno, "no 'hierarchical' class attribute before @DATA")
                    in_data = True
                    cols = [[] for _ in attributes]
                    continue
                raise ArffError(src, lineno, f"unexpected header line {line[:40]!r}")
            if line.startswith("{"):
                raise ArffError(src, lineno, "sparse ARFF rows are not supported")
            line = line.split("%", 1)[0].strip()
            fields = _split_row(line)
            if len(fields) != len(attributes) + 1:
                raise ArffError(src, lineno, f"expected {len(attributes) + 1} fields, got {len(fields)}")
            for c, v in zip(cols, fields):
                c.append(v.strip())
            label_fields.append((lineno, fields[-1].strip()))
    if hier is None:
        raise ArffError(src, None, "no 'hierarchical' class attribute")
    n = len(label_fields)
    blocks, names = [], []
    for a, c in zip(attributes, cols):
        if a.kind == "numeric":
            arr = np.array([np.nan if v == "?" else v for v in c], dtype=object)
            try:
                blocks.append(arr.astype(np.float64).reshape(n, 1))
            except ValueError as e:
                raise ArffError(src, None, f"attribute {a.name!r}: non-numeric value ({e})") from None
            names.append(a.name)
        else:
            lookup = {v: i for i, v in enumerate(a.values)}
            onehot = np.zeros((n, len(a.values)))
            for r, v in enumerate(c):
                k = lookup.get(_unquote(v))
                if k is not None:  # unknown or missing ('?'): all zeros, as C-HMCNN
                    onehot[r, k] = 1.0
            blocks.append(onehot)
            names.extend(f"{a.name}={v}" for v in a.values)
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    Y = np.zeros((n, hier.n_nodes), dtype=bool)
    for r, (lineno, lab) in enumerate(label_fields):
        for t in lab.split("@"):
            t = _unquote(t)
            if not t:
                continue
            j = hier.index.get(t)
            if j is None:
                if strict_labels:
                    raise ArffError(src, lineno, f"unknown class {t!r}")
                continue
            Y[r, j] = True
    return ArffData(X=X, Y=hier.close(Y), attributes=tuple(attributes), feature_names=tuple(names),
                    hierarchy=hier, source=src)


# ---------------------------------------------------------------------------------------- data set
def fill_file_means(X: np.ndarray) -> np.ndarray:
    """C-HMCNN's loader quirk: each ``NaN`` replaced by its own file's column mean (columns that are
    all ``NaN`` in the file stay ``NaN``). ``[B, D] -> [B, D]``."""
    X = np.array(X, dtype=np.float64, copy=True)
    miss = np.isnan(X)
    if miss.any():
        with np.errstate(invalid="ignore"), _quiet():
            m = np.nanmean(X, axis=0)
        r, c = np.nonzero(miss)
        X[r, c] = m[c]
    return X


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


@dataclass(frozen=True)
class Standardizer:
    """Mean imputation then standardisation, as sklearn's ``SimpleImputer(mean)`` +
    ``StandardScaler`` fitted on the same rows: ``(fill(X, mean) - mean) / std``, std 0 -> 1. A column
    with no value in the fit rows maps to 0 (sklearn would drop it). ``mean``, ``std`` ``[D]``."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        with _quiet():
            mean = np.nanmean(X, axis=0)
            std = np.nanstd(X, axis=0)
        mean = np.where(np.isnan(mean), 0.0, mean)
        std = np.where(~np.isfinite(std) | (std < 1e-12), 1.0, std)
        return cls(mean=mean, std=std)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.where(np.isnan(X), self.mean, X)
        return ((X - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class HMCDataset:
    """A data set directory: ``train``, ``valid`` (None for the "others"), ``test``, one hierarchy."""

    name: str
    train: ArffData
    valid: ArffData | None
    test: ArffData
    standardized: bool = False

    @property
    def hierarchy(self) -> ArffHierarchy:
        return self.train.hierarchy

    @property
    def in_dim(self) -> int:
        return int(self.train.X.shape[1])

    def standardize(self, file_mean_quirk: bool = True) -> HMCDataset:
        """C-HMCNN's preprocessing: (quirk: each file's NaN -> that file's column means), then mean
        imputation + standardisation fitted on train+valid (train alone without a valid file).
        Returns a new data set with ``float32`` X and no NaN."""
        splits = [s for s in (self.train, self.valid, self.test) if s is not None]
        Xs = [fill_file_means(s.X) if file_mean_quirk else s.X for s in splits]
        fit_rows = Xs[:2] if self.valid is not None else Xs[:1]
        st = Standardizer.fit(np.concatenate(fit_rows, axis=0))
        out = [replace(s, X=st.transform(x)) for s, x in zip(splits, Xs)]
        if self.valid is None:
            return replace(self, train=out[0], test=out[1], standardized=True)
        return replace(self, train=out[0], valid=out[1], test=out[2], standardized=True)


def find_split_files(directory: str | Path) -> dict[str, Path]:
    """``{"train", "valid"?, "test"}`` -> the ``.arff`` files of a data set directory, by name:
    ``*train*`` (``trainvalid`` counts as train), ``*valid*`` (not ``trainvalid``), ``*test*``."""
    directory = Path(directory)
    found: dict[str, list[Path]] = {"train": [], "valid": [], "test": []}
    for p in sorted(directory.iterdir()):
        low = p.name.lower()
        if not low.endswith(".arff"):
            continue
        if "train" in low:
            found["train"].append(p)
        elif "valid" in low:
            found["valid"].append(p)
        elif "test" in low:
            found["test"].append(p)
    out: dict[str, Path] = {}
    for k, v in found.items():
        if len(v) > 1:
            raise ArffError(str(directory), None, f"several {k} files: {[x.name for x in v]}")
        if v:
            out[k] = v[0]
    for k in ("train", "test"):
        if k not in out:
            raise ArffError(str(directory), None, f"no {k} .arff file")
    return out


def load_hmc_dataset(directory: str | Path, kind: str | None = None,
                     skip: Sequence[str] = CHMCNN_SKIP) -> HMCDataset:
    """Read a data set directory (raw: NaN kept; call :meth:`HMCDataset.standardize`)."""
    files = find_split_files(directory)
    train = read_arff(files["train"], kind=kind, skip=skip)
    valid = read_arff(files["valid"], hierarchy=train.hierarchy) if "valid" in files else None
    test = read_arff(files["test"], hierarchy=train.hierarchy)
    for s in (valid, test):
        if s is not None and s.feature_names != train.feature_names:
            raise ArffError(s.source, None, "attributes differ from the train file's")
    return HMCDataset(name=Path(directory).name, train=train, valid=valid, test=test)
