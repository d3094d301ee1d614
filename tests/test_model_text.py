"""Text: tokenizer with the taxonomy dictionary, vocabulary, engineered features, encoder."""

from __future__ import annotations

import pytest
import torch

from vtag.models.factory import resolve_config
from vtag.models.text import (
    PAD_ID,
    SEP_ID,
    TEXT_FEATURES,
    UNK_ID,
    AdditiveAttentionPool,
    TextEncoder,
    TextFeaturizer,
    build_vocab,
    engineered_features,
    get_tokenizer,
    hashed_ngrams,
    stable_hash,
    taxonomy_words,
    tokenize,
)

CFG = resolve_config(
    {"text": {"max_tokens": 10, "bow": {"buckets": 101, "dim": 6},
              "cnn": {"embed_dim": 6, "widths": [2, 3, 5], "channels": 3, "attn_dim": 4}}}
)["text"]



def test_user_dictionary_keeps_taxonomy_names_whole(tiny_taxonomy):
    words = taxonomy_words(tiny_taxonomy)
    assert "王者荣耀" in words and "游戏ip" in words
    tok = get_tokenizer(words)
    assert tok is get_tokenizer(reversed(words))  # one per process and dictionary
    toks = tokenize(tok, "【王者荣耀】蜘蛛侠 钢铁侠！", 64)
    assert "王者荣耀" in toks and "钢铁侠" in toks and " " not in toks
    assert tokenize(tok, "ＡＢＣ１２３", 64) == tokenize(tok, "abc123", 64)  # NFKC + lower
    assert tokenize(tok, "", 64) == []


def test_vocab_is_deterministic_and_bounded():
    lists = [["a", "b", "a"], ["c", "b"], ["d"]]
    v = build_vocab(lists, min_count=2, max_size=10, always=["z"])
    assert v[:3] == ["<pad>", "<unk>", "<sep>"]
    assert v[3:] == ["z", "a", "b"]
    assert build_vocab(reversed(lists), min_count=2, max_size=10, always=["z"]) == v
    assert len(build_vocab(lists, min_count=1, max_size=5)) == 5


def test_engineered_features():
    f = dict(zip(TEXT_FEATURES, engineered_features("【王者】#上分#😂😂 第3期!", "", True, 4, 10)))
    assert f["desc_missing"] == 1.0 and f["title_empty"] == 0.0
    assert f["hashtags"] > 0 and f["brackets"] > 0 and f["emoji"] > 0 and f["digits"] > 0 and f["exclaims"] > 0
    assert all(0.0 <= x <= 1.0 for x in f.values())
    g = dict(zip(TEXT_FEATURES, engineered_features("", "", True, 0, 10)))
    assert g["title_empty"] == 1.0 and g["hashtags"] == 0


def test_stable_hash_is_crc32():
    assert stable_hash("abc") == 0x352441C2  # zlib.crc32(b"abc"), the same in every process
    ids = hashed_ngrams(["a", "b", "c"], 50, namespace=1)
    assert len(ids) == 5 and all(1 <= i <= 50 for i in ids)
    assert hashed_ngrams(["a", "b"], 50, 1) == hashed_ngrams(["a", "b"], 50, 1)


def test_featurizer_layout(tiny_taxonomy):
    vocab = ["<pad>", "<unk>", "<sep>", "王者荣耀", "教学"]
    tf = TextFeaturizer(CFG, vocab, taxonomy_words(tiny_taxonomy))
    out = tf.transform(["王者荣耀教学 新手", None, "x" * 500], ["王者荣耀", float("nan"), "y " * 50])
    ids = out["text_ids"]
    assert ids.shape == (3, 10) and out["bow_ids"].shape == (3, 20) and out["text_feats"].shape == (3, len(TEXT_FEATURES))
    assert ids[0, 0] == 3 and ids[0, 1] == 4 and ids[0, 2] == UNK_ID and ids[0, 3] == SEP_ID and ids[0, 4] == 3
    assert (ids[1] == PAD_ID).all() and (out["bow_ids"][1] == 0).all()
    assert (ids[2] != PAD_ID).sum() <= 10  # truncated


def test_attention_pool_ignores_padding():
    torch.manual_seed(0)
    pool = AdditiveAttentionPool(4, 3)
    h = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = pool(h, mask)
    h2 = h.clone()
    h2[0, 2:] = 100.0
    assert torch.allclose(pool(h2, mask)[0], out[0])
    assert (out[1] == 0).all()


def test_encoder_shapes_no_nan_and_grads():
    torch.manual_seed(0)
    enc = TextEncoder(CFG, vocab_size=20)
    batch = {
        "text_ids": torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0], [0] * 10]),
        "bow_ids": torch.tensor([[1, 7, 99] + [0] * 17, [0] * 20]),
        "text_feats": torch.rand(2, len(TEXT_FEATURES)),
    }
    out = enc(batch)
    assert out.shape == (2, enc.out_dim) and enc.out_dim == 6 + len(TEXT_FEATURES) + 9
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    one = enc({k: v[:1] for k, v in batch.items()})
    assert one.shape == (1, enc.out_dim)


def test_char_ngrams_extend_the_bag(tiny_taxonomy):
    cfg = resolve_config({"text": {"max_tokens": 10, "bow": {"buckets": 101, "char_ngrams": [1, 2], "char_max_chars": 8}}})["text"]
    tf = TextFeaturizer(cfg, ["<pad>", "<unk>", "<sep>"], taxonomy_words(tiny_taxonomy))
    out = tf.transform(["王者 荣耀", None], ["教学", None])
    bow = out["bow_ids"]
    assert bow.shape == (2, 20 + 2 * 8)
    words = TextFeaturizer(CFG, ["<pad>", "<unk>", "<sep>"], taxonomy_words(tiny_taxonomy)).transform(["王者 荣耀"], ["教学"])
    n_words = int((words["bow_ids"][0] > 0).sum())
    assert (bow[0, :n_words] == words["bow_ids"][0, :n_words]).all()  # word n-grams first, then characters
    assert (bow[0] > 0).sum() == n_words + 6 + 5  # "王者荣耀教学": 6 uni-grams, 5 bi-grams
    assert (bow[1] == 0).all()


def test_ngram_dropout_only_in_training():
    from vtag.models.text import BOWBranch

    torch.manual_seed(0)
    bag = BOWBranch(buckets=50, dim=4, mode="mean", n_feats=0, ngram_dropout=0.5)
    ids = torch.arange(1, 41).reshape(2, 20)
    feats = torch.zeros(2, 0)
    bag.eval()
    assert torch.equal(bag(ids, feats), bag(ids, feats))  # no dropout at inference
    full = bag(ids, feats)
    bag.train()
    dropped = [bag(ids, feats) for _ in range(4)]
    assert all(not torch.allclose(d, full) for d in dropped)  # some n-grams left out of each bag
    assert not torch.allclose(dropped[0], dropped[1])  # a new draw every forward
    with pytest.raises(ValueError, match="ngram_dropout"):
        BOWBranch(buckets=5, dim=2, mode="mean", n_feats=0, ngram_dropout=1.0)


# ---------------------------------------------------------------------- kept n-grams (bow.min_count)
KEYS_CFG = resolve_config({"text": {"max_tokens": 10, "bow": {"buckets": 2**24, "dim": 4, "min_count": 2},
                                    "cnn": {"embed_dim": 4, "widths": [2], "channels": 2, "attn_dim": 2}}})["text"]


def test_min_count_keeps_the_ngrams_of_enough_rows_and_drops_the_rest(tiny_taxonomy):
    from vtag.models.text import count_ngram_keys

    tf = TextFeaturizer(KEYS_CFG, ["<pad>", "<unk>", "<sep>"], taxonomy_words(tiny_taxonomy))
    # "王者荣耀" is in two rows; "教学" twice but in one row only (rows are counted, not occurrences)
    keys = count_ngram_keys(tf, ["王者荣耀 教学 教学", "王者荣耀 攻略", "原神 抽卡"], [None, None, None], min_count=2)
    king = stable_hash("王者荣耀", 1) % 2**24 + 1
    assert keys.tolist() == [king]
    assert count_ngram_keys(tf, ["王者荣耀", "王者荣耀"], [None, None], min_count=3).size == 0
    plain = tf.transform(["王者荣耀 新手"], [None])["bow_ids"]
    assert int((plain > 0).sum()) == 3 and king in plain  # 2 words + 1 bigram, raw buckets
    tf.set_ngram_keys(keys)
    kept = tf.transform(["王者荣耀 新手", "完全 没见过"], [None, None])["bow_ids"]
    assert kept.shape == (2, plain.shape[1])
    assert sorted(kept[0][kept[0] > 0].tolist()) == [1]  # row id = rank of the key + 1
    assert (kept[1] == 0).all()  # never seen in training: nothing in the bag (not a trained row)
    assert tf.bow_rows == 2


def test_max_rows_keeps_the_ngrams_of_the_most_rows(tiny_taxonomy):
    from vtag.models.text import count_ngram_keys

    tf = TextFeaturizer(KEYS_CFG, ["<pad>", "<unk>", "<sep>"], taxonomy_words(tiny_taxonomy))
    titles, descs = ["王者荣耀 攻略", "王者荣耀 攻略", "王者荣耀 新手"], [None] * 3
    king, guide, newbie = (stable_hash(w, 1) % 2**24 + 1 for w in ("王者荣耀", "攻略", "新手"))
    king_guide = stable_hash("王者荣耀\x1f攻略", 1 + 7919) % 2**24 + 1
    every = count_ngram_keys(tf, titles, descs, min_count=1)
    assert every.size == 5 and {king, guide, newbie, king_guide} <= set(every.tolist())  # + "王者荣耀 新手"
    assert count_ngram_keys(tf, titles, descs, min_count=1, max_rows=1).tolist() == [king]  # in 3 rows
    assert count_ngram_keys(tf, titles, descs, min_count=1, max_rows=3).tolist() == sorted([king, guide, king_guide])
    # a tie at the cut (both in 2 rows) goes to the lower bucket id
    assert count_ngram_keys(tf, titles, descs, min_count=1, max_rows=2).tolist() == sorted([king, min(guide, king_guide)])
    assert count_ngram_keys(tf, titles, descs, min_count=3, max_rows=5).tolist() == [king]
    with pytest.raises(ValueError, match="max_rows"):
        resolve_config({"text": {"bow": {"max_rows": -5}}})


def test_ngram_keys_are_checked(tiny_taxonomy):
    tf = TextFeaturizer(KEYS_CFG, ["<pad>", "<unk>", "<sep>"], taxonomy_words(tiny_taxonomy))
    for bad in ([5, 3], [2, 2], [0, 4], [2**24 + 1]):
        with pytest.raises(ValueError, match="sorted, unique"):
            tf.set_ngram_keys(bad)
    with pytest.raises(ValueError, match="min_count"):
        TextEncoder(KEYS_CFG, vocab_size=5)  # no keys
    with pytest.raises(ValueError, match="min_count"):
        resolve_config({"text": {"bow": {"min_count": -1}}})
    with pytest.raises(ValueError, match="buckets must be in"):
        resolve_config({"text": {"bow": {"min_count": 1, "buckets": 2**29}}})  # the fit's counters: 2 GiB


def test_encoder_table_has_one_row_per_kept_ngram():
    import numpy as np

    enc = TextEncoder(KEYS_CFG, vocab_size=5, ngram_keys=np.array([7, 99, 12345]))
    assert enc.bow.bag.weight.shape == (4, 4)  # pad + 3 kept n-grams
    assert enc.state_dict()["bow.ngram_keys"].tolist() == [7, 99, 12345]  # saved with the weights
    batch = {"text_ids": torch.tensor([[3, 4, 0, 0, 0, 0, 0, 0, 0, 0]]),
             "bow_ids": torch.tensor([[1, 3] + [0] * 18]), "text_feats": torch.rand(1, len(TEXT_FEATURES))}
    out = enc(batch)
    out.sum().backward()
    assert torch.isfinite(out).all() and enc.bow.bag.weight.grad is not None
