"""The peers of bench/bilibili.py: TF-IDF + linear SVM / logistic regression, HiClass, a fastText-style bag.

Each ``run_*(taxonomy, train, test, inputs, seed, log) -> primary node index [n_test]`` fits on the
training side — its settings (``C``, early stopping) chosen on an inner 90/10 split of that side
(:func:`inner_split`: by time after a time split, by uploader otherwise, the kind of split vtag
validates on) — and predicts the test side. :class:`PeerInputs` holds the tokenised sides, built
once by bench/bilibili.py and shared by every peer.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

LR_C_GRID = (1.0, 4.0, 16.0)

#: how the peers' inner validation split is made: "time" (latest 10 % of the training side) or
#: "uploader" (grouped); set from --split, the same kind of split vtag validates on
INNER_SPLIT = {"kind": "uploader"}


def inner_split(frame: pd.DataFrame, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """90/10 split of a training side (peers' settings are chosen on it): by time after a time
    split, by uploader otherwise."""
    from vtag.models.data import grouped_split, temporal_split

    if INNER_SPLIT["kind"] == "time":
        return temporal_split(frame, 0.1)
    return grouped_split(frame, 0.1, seed)


# ---------------------------------------------------------------------------------------- peers' inputs
def _texts(frame: pd.DataFrame) -> list[str]:
    return [f"{t or ''} {d or ''}".strip() for t, d in zip(frame["title"], frame["description"])]


_JIEBA = None


def jieba_tokens(texts: list[str], max_chars: int = 300) -> list[list[str]]:
    """Lower-cased jieba words (whitespace and punctuation-only tokens dropped)."""
    global _JIEBA
    if _JIEBA is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _JIEBA = jieba.Tokenizer()
    out = []
    for s in texts:
        words = _JIEBA.lcut(s[:max_chars].lower(), HMM=False)
        out.append([w for w in (x.strip() for x in words) if w and any(ch.isalnum() for ch in w)])
    return out


def context_tokens(frame: pd.DataFrame) -> list[list[str]]:
    """``["up=<uploader>", "dur=<bucket>"]`` per row (vtag's duration buckets)."""
    from vtag.models.context import duration_buckets
    from vtag.models.factory import DEFAULT_CONFIG

    c = DEFAULT_CONFIG["context"]
    dur = duration_buckets(frame["duration_s"].tolist(), int(c["duration_buckets"]), float(c["duration_max_s"]))
    return [[f"up={u}", f"dur={d}"] for u, d in zip(frame["uploader_id"], dur)]


#: characters of title + description the character n-grams of the ``svm_chars`` peers read
CHAR_MAX_CHARS = 300


class SparseFeatures:
    """TF-IDF of jieba uni+bigrams (sublinear tf, min_df 2) ⊕ one-hot uploader ⊕ one-hot duration bucket
    (``context=False``: the TF-IDF alone). ``chars=True``: the word TF-IDF and a TF-IDF of character
    1–3-grams (sublinear, min_df 2, the first :data:`CHAR_MAX_CHARS` lower-cased characters), each
    L2-normalised, side by side and normalised again (vtag's text features read character n-grams too)."""

    def __init__(self, context: bool = True, chars: bool = False):
        self.context = context
        self.chars = chars
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import OneHotEncoder

        self.tfidf = TfidfVectorizer(analyzer=lambda toks: toks + [a + " " + b for a, b in zip(toks, toks[1:])],
                                     min_df=2, sublinear_tf=True, dtype=np.float32)
        self.char_tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True,
                                          dtype=np.float32) if chars else None
        self.onehot = OneHotEncoder(handle_unknown="ignore", dtype=np.float32)

    def _ctx(self, ctx: list[list[str]]) -> np.ndarray:
        return np.array(ctx, dtype=object)

    def _text(self, toks, texts, fit: bool):
        import scipy.sparse as sp
        from sklearn.preprocessing import normalize

        words = self.tfidf.fit_transform(toks) if fit else self.tfidf.transform(toks)
        if not self.chars:
            return words
        if texts is None:
            raise ValueError("SparseFeatures(chars=True) needs the rows' texts")
        short = [t[:CHAR_MAX_CHARS].lower() for t in texts]
        chars = self.char_tfidf.fit_transform(short) if fit else self.char_tfidf.transform(short)
        return normalize(sp.hstack([words, chars]).tocsr())

    def _with_ctx(self, text, ctx, fit: bool):
        import scipy.sparse as sp

        if not self.context:
            return text.tocsr()
        onehot = self.onehot.fit_transform(self._ctx(ctx)) if fit else self.onehot.transform(self._ctx(ctx))
        return sp.hstack([text, onehot]).tocsr()

    def fit_transform(self, toks, ctx, texts=None):
        return self._with_ctx(self._text(toks, texts, True), ctx, True)

    def transform(self, toks, ctx, texts=None):
        return self._with_ctx(self._text(toks, texts, False), ctx, False)


@dataclass
class PeerInputs:
    """Tokenised train/test sides shared by the peers (tokenised once)."""

    train_toks: list[list[str]]
    test_toks: list[list[str]]
    train_ctx: list[list[str]]
    test_ctx: list[list[str]]
    train_texts: list[str]
    test_texts: list[str]


def _lr(C: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=300, tol=1e-3, random_state=seed)


def _pick_C(make_fit_predict: Callable, train: pd.DataFrame, inputs: PeerInputs, y: np.ndarray, log) -> float:
    """C from :data:`LR_C_GRID` with the best inner-validation leaf accuracy."""
    tr, va = inner_split(train)
    best_c, best = LR_C_GRID[0], -1.0
    for C in LR_C_GRID:
        pred = make_fit_predict(C, tr, va)
        acc = float(np.mean(pred == y[va]))
        log(f"    C={C:g}: inner-valid leaf acc {acc:.4f}")
        if acc > best:
            best_c, best = C, acc
    return best_c


def run_tfidf_lr(taxonomy, train, test, inputs: PeerInputs, seed: int, log) -> np.ndarray:
    y = np.array([taxonomy.index[x[0]] for x in train["labels"]])

    def fit_predict(C, tr, va):
        f = SparseFeatures()
        Xtr = f.fit_transform([inputs.train_toks[i] for i in tr], [inputs.train_ctx[i] for i in tr])
        Xva = f.transform([inputs.train_toks[i] for i in va], [inputs.train_ctx[i] for i in va])
        return _lr(C, seed).fit(Xtr, y[tr]).predict(Xva)

    C = _pick_C(fit_predict, train, inputs, y, log)
    f = SparseFeatures()
    Xtr = f.fit_transform(inputs.train_toks, inputs.train_ctx)
    return _lr(C, seed).fit(Xtr, y).predict(f.transform(inputs.test_toks, inputs.test_ctx))


SVM_C_GRID = (0.1, 0.25, 0.5, 1.0, 2.0)


def run_svm(context: bool, chars: bool = False) -> Callable:
    """TF-IDF (jieba uni+bigrams, sublinear tf; ``chars``: and character 1–3-grams) [+ one-hot uploader
    and duration bucket] + a linear SVM (one-vs-rest, squared hinge) over the primary label nodes; ``C``
    from :data:`SVM_C_GRID` on the inner validation split, then refitted on the whole training side."""

    def run(taxonomy, train, test, inputs: PeerInputs, seed: int, log) -> np.ndarray:
        from sklearn.svm import LinearSVC

        y = np.array([taxonomy.index[x[0]] for x in train["labels"]])

        def rows_of(rows):
            return ([inputs.train_toks[i] for i in rows], [inputs.train_ctx[i] for i in rows],
                    [inputs.train_texts[i] for i in rows])

        # the features of the inner split do not depend on C: built once, one SVM per C
        tr, va = inner_split(train)
        f = SparseFeatures(context=context, chars=chars)
        x_tr, x_va = f.fit_transform(*rows_of(tr)), f.transform(*rows_of(va))
        best_c, best = SVM_C_GRID[0], -1.0
        for C in SVM_C_GRID:
            clf = LinearSVC(C=C, random_state=seed).fit(x_tr, y[tr])
            acc = float(np.mean(clf.predict(x_va) == y[va]))
            log(f"    C={C:g}: inner-valid leaf acc {acc:.4f}")
            if acc > best:
                best_c, best = C, acc
        f = SparseFeatures(context=context, chars=chars)
        clf = LinearSVC(C=best_c, random_state=seed).fit(f.fit_transform(*rows_of(np.arange(len(train)))), y)
        return clf.predict(f.transform(inputs.test_toks, inputs.test_ctx, inputs.test_texts))

    return run


def run_hiclass(taxonomy, train, test, inputs: PeerInputs, seed: int, log) -> np.ndarray:
    from hiclass import LocalClassifierPerParentNode

    paths = [taxonomy.path(x[0]) for x in train["labels"]]
    depth = taxonomy.max_depth
    Y = np.array([list(p) + [""] * (depth - len(p)) for p in paths], dtype=object)
    leaf = np.array([taxonomy.index[x[0]] for x in train["labels"]])

    def to_index(pred_paths) -> np.ndarray:
        out = []
        for row in np.asarray(pred_paths, dtype=object):
            ids = [str(v) for v in row if str(v) not in ("", "nan", "None")]
            out.append(taxonomy.index.get(ids[-1], -1) if ids else -1)
        return np.array(out)

    def fit_predict(C, tr, va):
        f = SparseFeatures()
        Xtr = f.fit_transform([inputs.train_toks[i] for i in tr], [inputs.train_ctx[i] for i in tr])
        Xva = f.transform([inputs.train_toks[i] for i in va], [inputs.train_ctx[i] for i in va])
        clf = LocalClassifierPerParentNode(local_classifier=_lr(C, seed), n_jobs=1)
        return to_index(clf.fit(Xtr, Y[tr]).predict(Xva))

    C = _pick_C(fit_predict, train, inputs, leaf, log)
    f = SparseFeatures()
    clf = LocalClassifierPerParentNode(local_classifier=_lr(C, seed), n_jobs=1)
    clf.fit(f.fit_transform(inputs.train_toks, inputs.train_ctx), Y)
    pred = to_index(clf.predict(f.transform(inputs.test_toks, inputs.test_ctx)))
    if (pred < 0).any():  # an empty path: fall back to the most frequent leaf
        pred[pred < 0] = np.bincount(leaf).argmax()
    return pred


# ---------------------------------------------------------------------------------------- fastText-style
FT_BUCKETS = 1 << 20
FT_DIM = 64
FT_EPOCHS = 15
FT_PATIENCE = 2


def _hash(tok: str) -> int:
    return 1 + zlib.crc32(tok.encode("utf-8")) % (FT_BUCKETS - 1)


def ngram_ids(toks: list[str], text: str, ctx: list[str]) -> list[int]:
    """fastText-style bag: words, word bigrams, character 1-3-grams (of the raw text), context tokens."""
    feats = [f"w:{t}" for t in toks] + [f"b:{a} {b}" for a, b in zip(toks, toks[1:])]
    s = "".join(text.lower().split())[:200]
    for n in (1, 2, 3):
        feats.extend(f"c{n}:{s[i:i + n]}" for i in range(len(s) - n + 1))
    feats.extend(ctx)
    return [_hash(f) for f in feats] or [0]


def run_fasttext(taxonomy, train, test, inputs: PeerInputs, seed: int, log) -> np.ndarray:
    """Mean of hashed n-gram embeddings -> linear softmax over leaves; epochs chosen on an inner
    grouped validation split (the best epoch's weights are kept), then used on test."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    leaves = sorted({taxonomy.index[x[0]] for x in train["labels"]})
    pos = {j: k for k, j in enumerate(leaves)}
    y = torch.tensor([pos[taxonomy.index[x[0]]] for x in train["labels"]])
    bags = [ngram_ids(t, s, c) for t, s, c in zip(inputs.train_toks, inputs.train_texts, inputs.train_ctx)]
    test_bags = [ngram_ids(t, s, c) for t, s, c in zip(inputs.test_toks, inputs.test_texts, inputs.test_ctx)]

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.EmbeddingBag(FT_BUCKETS, FT_DIM, mode="mean", sparse=True, padding_idx=0)
            nn.init.uniform_(self.emb.weight, -1.0 / FT_DIM, 1.0 / FT_DIM)
            self.out = nn.Linear(FT_DIM, len(leaves))

        def forward(self, flat, offsets):
            return self.out(self.emb(flat, offsets))

    def batch(bs):
        flat = torch.tensor([i for b in bs for i in b])
        offsets = torch.tensor(np.cumsum([0] + [len(b) for b in bs[:-1]]))
        return flat, offsets

    def predict(model, bs):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(*batch(bs[i:i + 1024])).argmax(1) for i in range(0, len(bs), 1024)]).numpy()

    tr, va = inner_split(train)
    model = Model()
    opt_s = torch.optim.SparseAdam(list(model.emb.parameters()), lr=0.01)
    opt_d = torch.optim.Adam(model.out.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(seed)
    best, best_state, bad = -1.0, None, 0
    epoch = 0
    for epoch in range(FT_EPOCHS):  # noqa: B007 - reported after the loop
        model.train()
        perm = tr[torch.randperm(len(tr), generator=g).numpy()]
        for i in range(0, len(perm), 32):
            idx = perm[i:i + 32]
            loss = nn.functional.cross_entropy(model(*batch([bags[k] for k in idx])), y[idx])
            opt_s.zero_grad()
            opt_d.zero_grad()
            loss.backward()
            opt_s.step()
            opt_d.step()
        acc = float(np.mean(predict(model, [bags[k] for k in va]) == y[va].numpy()))
        if acc > best:
            best, bad = acc, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= FT_PATIENCE:
                break
    log(f"    inner-valid leaf acc {best:.4f} after {epoch + 1} epochs")
    model.load_state_dict(best_state)
    return np.array(leaves)[predict(model, test_bags)]
