"""Text: jieba tokenization, the vocabulary, engineered features and the text encoder.

Featurization (numpy/python, CPU) and the encoder (torch) live together because they share the
layout of the tensors they exchange:

- ``text_ids``  ``[B, L]`` int64 — vocabulary ids of title tokens, ``<sep>``, description tokens,
  padded with 0 (``<pad>``) to ``text.max_tokens``.
- ``bow_ids``   ``[B, M]`` int64 — hashed uni- and bi-gram buckets in ``1..bow.buckets`` (0 = pad),
  title and description n-grams hashed in separate namespaces, then (``bow.char_ngrams``) hashed
  character n-grams of the first ``bow.char_max_chars`` non-space characters of title + description,
  padded to ``2 * max_tokens + len(char_ngrams) * char_max_chars``.
- ``text_feats`` ``[B, F]`` float32 — engineered features (:data:`TEXT_FEATURES`), scaled to ~[0, 1].

The jieba tokenizer is created lazily, once per process and user dictionary (the taxonomy's node
names), with its prefix-dictionary cache in a writable temp dir. Tokenization is deterministic.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import threading
import unicodedata
import warnings
import zlib
from collections import Counter
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

PAD, UNK, SEP = "<pad>", "<unk>", "<sep>"
SPECIAL_TOKENS = (PAD, UNK, SEP)
PAD_ID, UNK_ID, SEP_ID = 0, 1, 2

# ---------------------------------------------------------------------------------------- jieba
_TOKENIZERS: dict[tuple[str, ...], object] = {}
_TOKENIZER_LOCK = threading.Lock()


def get_tokenizer(user_words: Iterable[str] = ()):  # -> jieba.Tokenizer
    """The process-wide ``jieba.Tokenizer`` for this user dictionary (created on first use).

    Its prefix-dictionary cache goes to ``$VTAG_JIEBA_CACHE_DIR`` or the system temp dir, which
    must be writable; the cache is shared by processes (jieba replaces it atomically).
    """
    key = tuple(sorted({w.strip() for w in user_words if w and w.strip()}))
    tok = _TOKENIZERS.get(key)
    if tok is not None:
        return tok
    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get(key)
        if tok is None:
            with warnings.catch_warnings():  # jieba 0.42 has invalid escapes in its regexes
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", SyntaxWarning)
                import jieba

            logging.getLogger("jieba").setLevel(logging.WARNING)
            tok = jieba.Tokenizer()
            tok.tmp_dir = os.environ.get("VTAG_JIEBA_CACHE_DIR") or tempfile.gettempdir()
            tok.cache_file = "vtag-jieba.cache"
            tok.initialize()
            for word in key:  # sorted: the resulting frequencies do not depend on input order
                tok.add_word(word)
            if len(_TOKENIZERS) >= 4:  # a process rarely sees more than one taxonomy
                _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
            _TOKENIZERS[key] = tok
    return tok


def taxonomy_words(taxonomy) -> list[str]:
    """User-dictionary words from a taxonomy: node names (and English names), sorted."""
    words = set()
    for n in taxonomy.nodes:
        words.add(normalize(n.name))
        if n.name_en:
            words.add(normalize(n.name_en))
    return sorted(w for w in words if w)


def normalize(text: str) -> str:
    """NFKC (full-width -> half-width) and lower case."""
    return unicodedata.normalize("NFKC", text).lower()


def as_text(value) -> str:
    """A frame cell as a string: None / NaN / non-str -> ''."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas.NA / NaT
        return ""
    return str(value)


_SPACE_RE = re.compile(r"\s+")


def tokenize(tokenizer, text: str, max_chars: int, hmm: bool = False) -> list[str]:
    """jieba tokens of ``normalize(text[:max_chars])``, whitespace tokens dropped."""
    text = normalize(text[:max_chars])
    if not text:
        return []
    return [t for t in tokenizer.lcut(_SPACE_RE.sub(" ", text), HMM=hmm) if not t.isspace()]


# ---------------------------------------------------------------------------------------- vocab
def build_vocab(token_lists: Iterable[Sequence[str]], min_count: int = 2, max_size: int = 50000,
                always: Iterable[str] = ()) -> list[str]:
    """Specials, then ``always`` words, then tokens by (-count, token) with count >= min_count.

    ``max_size`` counts the specials. Deterministic for the same input multiset.
    """
    counts: Counter[str] = Counter()
    for toks in token_lists:
        counts.update(toks)
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for w in sorted(set(always)):
        if w not in seen and len(vocab) < max_size:
            vocab.append(w)
            seen.add(w)
    for tok, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= max_size or c < min_count:
            break
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)
    return vocab


# ---------------------------------------------------------------------------------------- features
_EMOJI_RE = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff\u2b00-\u2bff\ufe0f]"
)
_HASHTAG_RE = re.compile(r"#[^#\s]{1,40}#")
_BRACKET_RE = re.compile(r"【[^】]{0,40}】")
_DIGIT_RE = re.compile(r"[0-9０-９]")
_LATIN_RE = re.compile(r"[A-Za-z]")
_EXCLAIM_RE = re.compile(r"[!！?？]")

#: Names of the engineered features, in ``text_feats`` column order.
TEXT_FEATURES = (
    "title_len", "desc_len", "title_empty", "desc_missing", "digits", "emoji", "hashtags",
    "brackets", "latin_ratio", "exclaims", "n_tokens",
)


def engineered_features(title: str, desc: str, desc_missing: bool, n_tokens: int, max_tokens: int) -> list[float]:
    """The :data:`TEXT_FEATURES` of one row (raw strings, before truncation), each in ~[0, 1]."""
    both = title + " " + desc
    n_chars = max(len(both) - 1, 1)
    return [
        math.log1p(len(title)) / math.log1p(512),
        math.log1p(len(desc)) / math.log1p(8192),
        float(not title.strip()),
        float(desc_missing),
        min(math.log1p(len(_DIGIT_RE.findall(both))) / math.log1p(64), 1.0),
        min(math.log1p(len(_EMOJI_RE.findall(both))) / math.log1p(32), 1.0),
        min(math.log1p(len(_HASHTAG_RE.findall(both))) / math.log1p(16), 1.0),
        min(math.log1p(len(_BRACKET_RE.findall(both))) / math.log1p(8), 1.0),
        len(_LATIN_RE.findall(both)) / n_chars,
        min(math.log1p(len(_EXCLAIM_RE.findall(both))) / math.log1p(16), 1.0),
        min(n_tokens / max(max_tokens, 1), 1.0),
    ]


def stable_hash(s: str, salt: int = 0) -> int:
    """crc32 of the UTF-8 bytes, seeded by ``salt`` (stable across processes, unlike ``hash``)."""
    return zlib.crc32(s.encode("utf-8"), salt & 0xFFFFFFFF)


def hashed_ngrams(tokens: Sequence[str], buckets: int, namespace: int, bigrams: bool = True) -> list[int]:
    """Bucket ids (1..buckets) of the uni-grams (and bi-grams) of ``tokens`` in ``namespace``."""
    out = [stable_hash(t, namespace) % buckets + 1 for t in tokens]
    if bigrams:
        out.extend(stable_hash(a + "\x1f" + b, namespace + 7919) % buckets + 1 for a, b in zip(tokens, tokens[1:]))
    return out


def hashed_char_ngrams(title: str, desc: str, buckets: int, ns: Sequence[int], max_chars: int) -> list[int]:
    """Bucket ids (1..buckets) of the character ``ns``-grams of the first ``max_chars`` non-space
    characters of ``normalize(title + desc)`` (namespace 3 + n). At most ``len(ns) * max_chars`` ids.

    Chinese titles are short and jieba's segmentation of new words, names and slang is unstable;
    character n-grams (as in fastText) share evidence between the pieces of a word."""
    text = _SPACE_RE.sub("", normalize((title + " " + desc)[: 4 * max_chars]))[:max_chars]
    out: list[int] = []
    for n in ns:
        out.extend(stable_hash(text[i : i + n], 3 + n) % buckets + 1 for i in range(len(text) - n + 1))
    return out


class TextFeaturizer:
    """Rows of (title, description) -> ``text_ids``, ``bow_ids``, ``text_feats`` (numpy).

    ``cfg`` is the resolved ``text`` section; ``vocab`` the token list (index = id).
    """

    def __init__(self, cfg: dict, vocab: Sequence[str], user_words: Sequence[str]):
        self.cfg = cfg
        self.vocab = list(vocab)
        if self.vocab[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
            raise ValueError(f"vocab must start with {SPECIAL_TOKENS}, got {self.vocab[:3]}")
        self.token_to_id = {t: i for i, t in enumerate(self.vocab)}
        self.user_words = list(user_words)
        self.max_tokens = int(cfg["max_tokens"])
        bow = cfg["bow"]
        self.char_ngrams = tuple(int(n) for n in (bow.get("char_ngrams") or ()))
        self.char_max_chars = int(bow.get("char_max_chars") or 0) if self.char_ngrams else 0
        self.bow_width = 2 * self.max_tokens + len(self.char_ngrams) * self.char_max_chars
        self.ngram_keys: np.ndarray | None = None  # see set_ngram_keys

    def set_ngram_keys(self, keys) -> None:
        """Keep only these hashed n-gram buckets (``bow.min_count`` > 0): sorted unique ``[K]`` int64
        bucket ids of the n-grams seen often enough in training. :meth:`transform` then emits row
        ids ``1..K`` (a key's rank + 1) and drops every other n-gram (0 = pad), so an n-gram never
        seen in training adds nothing to the bag instead of a trained bucket's vector."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if keys.size and (np.any(np.diff(keys) <= 0) or keys[0] < 1 or keys[-1] > int(self.cfg["bow"]["buckets"])):
            raise ValueError("n-gram keys must be sorted, unique bucket ids in 1..text.bow.buckets")
        self.ngram_keys = keys

    @property
    def bow_rows(self) -> int:
        """Rows of the n-gram table, pad row 0 included."""
        if self.ngram_keys is not None:
            return int(self.ngram_keys.size) + 1
        return int(self.cfg["bow"]["buckets"]) + 1

    def row_grams(self, title: str, desc: str) -> list[int]:
        """Hashed bucket ids (1..buckets) of one row's word uni/bi-grams and character n-grams."""
        t, d = self.tokens(title, desc)
        return self._grams(title, desc, t, d)

    def _grams(self, title: str, desc: str, t: list[str], d: list[str]) -> list[int]:
        buckets = int(self.cfg["bow"]["buckets"])
        bigrams = 2 in self.cfg["bow"]["ngrams"]
        grams = hashed_ngrams(t, buckets, 1, bigrams) + hashed_ngrams(d, buckets, 2, bigrams)
        grams = grams[: 2 * self.max_tokens]
        if self.char_ngrams:
            grams += hashed_char_ngrams(title, desc, buckets, self.char_ngrams, self.char_max_chars)
        return grams

    @property
    def tokenizer(self):
        """The process-wide jieba tokenizer of this featurizer's user words, looked up once per
        featurizer (the lookup sorts the user words: too slow per row)."""
        if not self.LOOKUP_ONCE:
            return get_tokenizer(self.user_words)
        tok = self.__dict__.get("_tokenizer")
        if tok is None:
            tok = self.__dict__["_tokenizer"] = get_tokenizer(self.user_words)
        return tok

    #: False: look the tokenizer up on every use, as before issue 20 (the legacy path of the benches)
    LOOKUP_ONCE = True

    def tokens(self, title: str, desc: str) -> tuple[list[str], list[str]]:
        """jieba tokens of the title and of the description (truncated as the model reads them)."""
        t = self._tokenize(title, int(self.cfg["max_title_chars"]))[: self.max_tokens]
        room = self.max_tokens - len(t) - 1
        d = self._tokenize(desc, int(self.cfg["max_desc_chars"]))[: max(room, 0)] if room > 0 else []
        return t, d

    #: Tokenizations cached per process and jieba tokenizer (so per Spark Python worker, which keeps
    #: its Predictor; training's vocabulary pass fills it for the epochs); cleared when full; 0 turns
    #: the cache off. Descriptions repeat a lot (templates, empty ones), titles less.
    TOKEN_CACHE_SIZE = 100_000

    def _tokenize(self, text: str, max_chars: int) -> list[str]:
        """:func:`tokenize` through the cache (same result: jieba is deterministic). The cached list
        is shared: callers slice it, never modify it."""
        tok, hmm = self.tokenizer, bool(self.cfg["hmm"])
        size = self.TOKEN_CACHE_SIZE
        if not size:
            return tokenize(tok, text, max_chars, hmm)
        key = (text[:max_chars], max_chars, hmm)
        cache = tok.__dict__.setdefault("_vtag_token_cache", {})
        got = cache.get(key)
        if got is None:
            got = tokenize(tok, key[0], max_chars, hmm)
            if len(cache) >= size:
                cache.clear()
            cache[key] = got
        return got

    def transform(self, titles: Sequence, descs: Sequence) -> dict[str, np.ndarray]:
        b = len(titles)
        ids = np.zeros((b, self.max_tokens), dtype=np.int64)
        bow = np.zeros((b, self.bow_width), dtype=np.int64)
        feats = np.zeros((b, len(TEXT_FEATURES)), dtype=np.float32)
        lookup = self.token_to_id.get
        for i, (title_raw, desc_raw) in enumerate(zip(titles, descs)):
            title, desc = as_text(title_raw), as_text(desc_raw)
            t, d = self.tokens(title, desc)
            seq = [lookup(x, UNK_ID) for x in t]
            if d:
                seq.append(SEP_ID)
                seq.extend(lookup(x, UNK_ID) for x in d)
            ids[i, : len(seq)] = seq
            grams = self._grams(title, desc, t, d)
            bow[i, : len(grams)] = grams
            feats[i] = engineered_features(title, desc, not desc, len(seq), self.max_tokens)
        if self.ngram_keys is not None:
            bow = _keep_keys(bow, self.ngram_keys)
        return {"text_ids": ids, "bow_ids": bow, "text_feats": feats}


def _keep_keys(bow: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``bow [B, M]`` bucket ids -> row ids: a bucket in ``keys`` -> its rank + 1, any other -> 0."""
    if keys.size == 0:
        return np.zeros_like(bow)
    pos = np.searchsorted(keys, bow)
    hit = keys[np.minimum(pos, keys.size - 1)] == bow
    return np.where(hit & (bow > 0), pos + 1, 0).astype(np.int64)


def count_ngram_keys(featurizer: TextFeaturizer, titles: Sequence, descs: Sequence, min_count: int,
                     max_rows: int = 0, return_counts: bool = False):
    """Sorted bucket ids (``[K]`` int64) of the hashed n-grams that occur in at least ``min_count``
    of the rows (titles/descriptions as the featurizer reads them); ``max_rows`` > 0 keeps only the
    ``max_rows`` found in the most rows (ties: lower bucket id), so the table cannot grow with the
    corpus. Memory is one int32 counter per bucket (64 MiB at 2**24 buckets), whatever the number of
    rows or distinct n-grams. ``return_counts``: ``(keys, rows holding each key [K] int64)``."""
    buckets = int(featurizer.cfg["bow"]["buckets"])
    counts = np.zeros(buckets + 1, dtype=np.int32)
    chunk: list[int] = []
    for title_raw, desc_raw in zip(titles, descs):
        chunk.extend(set(featurizer.row_grams(as_text(title_raw), as_text(desc_raw))))
        if len(chunk) >= 1 << 20:
            np.add.at(counts, np.asarray(chunk, dtype=np.int64), 1)
            chunk.clear()
    if chunk:
        np.add.at(counts, np.asarray(chunk, dtype=np.int64), 1)
    counts[0] = 0
    keys = np.flatnonzero(counts >= max(int(min_count), 1)).astype(np.int64)
    if max_rows and keys.size > max_rows:
        order = np.lexsort((keys, -counts[keys].astype(np.int64)))  # most rows first, then bucket id
        keys = np.sort(keys[order[: int(max_rows)]])
    if return_counts:
        return keys, counts[keys].astype(np.int64)
    return keys


# ---------------------------------------------------------------------------------------- encoder
@torch.no_grad()
def _small_init(weight: torch.Tensor, bound: float, pad: int) -> None:
    """Uniform(-bound, bound) rows, the pad row zero.

    Not torch's N(0, 1): token / n-gram tables are large and most rows are rare, so they get few
    (Adam-sized, ~lr) updates; from N(0, 1) a rare n-gram stays a random unit-scale vector that
    drowns the few frequent, trained ones in a mean-pooled bag (and the model fits the noise)."""
    weight.uniform_(-bound, bound)
    weight[pad].zero_()


class AdditiveAttentionPool(nn.Module):
    """Bahdanau-style pooling: ``e_t = v^T tanh(W h_t + b)``, softmax over unmasked t.

    ``[B, L, D]`` + mask ``[B, L]`` bool -> ``[B, D]``; a row with no unmasked step gives zeros.
    """

    def __init__(self, dim: int, attn_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.v(torch.tanh(self.proj(h))).squeeze(-1)  # [B, L]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * mask.to(scores.dtype)
        return torch.einsum("bl,bld->bd", weights, h)


class CNNAttentionBranch(nn.Module):
    """Token embeddings -> Conv1d of several widths (length-preserving) -> ReLU -> attention pool.

    ``text_ids [B, L]`` -> ``[B, channels * len(widths)]``.
    """

    def __init__(self, vocab_size: int, embed_dim: int, widths: Sequence[int], channels: int,
                 attn_dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        _small_init(self.embed.weight, 1.0 / math.sqrt(embed_dim), PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, int(k), padding=int(k) // 2) for k in widths)
        self.pool = AdditiveAttentionPool(channels * len(widths), attn_dim)
        self.drop = nn.Dropout(dropout)
        self.out_dim = channels * len(widths)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids != PAD_ID  # [B, L]
        length = max(int(mask.sum(dim=1).max().item()) if ids.numel() else 0, 1)
        ids, mask = ids[:, :length], mask[:, :length]  # drop all-pad columns (CPU speed)
        x = self.drop(self.embed(ids)).transpose(1, 2)  # [B, E, L]
        h = torch.cat([torch.relu(conv(x))[..., :length] for conv in self.convs], dim=1)  # [B, C*K, L]
        return self.pool(h.transpose(1, 2), mask)


class BOWBranch(nn.Module):
    """Hashed n-grams through ``nn.EmbeddingBag`` (pad 0 excluded) plus engineered features.

    ``bow_ids [B, M]``, ``text_feats [B, F]`` -> ``[B, dim + F]``. ``ngram_keys [K]`` (``bow.min_count``
    > 0): the kept n-gram buckets; the table then has ``K + 1`` rows instead of ``buckets + 1``, and
    the keys are a persistent buffer, so they travel in the bundle's weights with the rows they index.
    """

    def __init__(self, buckets: int, dim: int, mode: str, n_feats: int, ngram_dropout: float = 0.0,
                 ngram_keys: np.ndarray | None = None):
        super().__init__()
        if ngram_keys is not None:
            self.register_buffer("ngram_keys", torch.as_tensor(np.asarray(ngram_keys, dtype=np.int64)))
            buckets = int(self.ngram_keys.numel())
        if mode not in ("mean", "sum"):
            raise ValueError(f"text.bow.mode must be mean or sum, got {mode!r}")
        if not 0.0 <= ngram_dropout < 1.0:
            raise ValueError(f"text.bow.ngram_dropout must be in [0, 1), got {ngram_dropout!r}")
        self.bag = nn.EmbeddingBag(buckets + 1, dim, mode=mode, padding_idx=0)
        _small_init(self.bag.weight, 1.0 / dim, 0)  # fastText's init
        self.ngram_dropout = float(ngram_dropout)
        self.out_dim = dim + n_feats

    def forward(self, bow_ids: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        if self.training and self.ngram_dropout > 0.0:
            # word dropout (Iyyer et al., 2015): each n-gram is left out of the bag with this
            # probability, so no single rare n-gram can carry a training row (memorisation)
            drop = torch.rand(bow_ids.shape, device=bow_ids.device) < self.ngram_dropout
            bow_ids = bow_ids.masked_fill(drop, 0)
        return torch.cat([self.bag(bow_ids), feats], dim=1)


class TextEncoder(nn.Module):
    """BOW branch and CNN+attention branch, concatenated: batch -> ``[B, out_dim]``."""

    def __init__(self, cfg: dict, vocab_size: int, ngram_keys: np.ndarray | None = None):
        super().__init__()
        bow, cnn = cfg["bow"], cfg["cnn"]
        if bow["enabled"] and int(bow.get("min_count") or 0) > 0 and ngram_keys is None:
            raise ValueError("text.bow.min_count > 0 needs the n-gram keys of a fitted featurizer "
                             "(Featurizer.fit, or a bundle's weights)")
        self.bow = (BOWBranch(int(bow["buckets"]), int(bow["dim"]), bow["mode"], len(TEXT_FEATURES),
                              float(bow.get("ngram_dropout") or 0.0), ngram_keys=ngram_keys)
                    if bow["enabled"] else None)
        self.cnn = (
            CNNAttentionBranch(vocab_size, int(cnn["embed_dim"]), cnn["widths"], int(cnn["channels"]),
                               int(cnn["attn_dim"]), float(cfg["dropout"]))
            if cnn["enabled"] else None
        )
        if self.bow is None and self.cnn is None:
            raise ValueError("text: enable at least one of bow / cnn (or disable the text modality)")
        self.out_dim = (self.bow.out_dim if self.bow else 0) + (self.cnn.out_dim if self.cnn else 0)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.bow is not None:
            parts.append(self.bow(batch["bow_ids"], batch["text_feats"].float()))
        if self.cnn is not None:
            parts.append(self.cnn(batch["text_ids"]))
        return torch.cat(parts, dim=1)
