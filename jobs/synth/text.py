"""UGC-style Chinese titles and descriptions: templates, emoji, ``#hashtags#``, 【】, numbers, filler.

What a title may say about its leaf is decided by the world: leaves of *text-blind* sibling sets
never use leaf words (only the parent's vocabulary and above); other leaves use a leaf word with
probability ``text.leaf_word_rate``. A share of titles is generic (no category words at all: real
UGC titles that contain no node word, or generic templates), a share are real titles of the
matching zone (category flavour without leaf words), and entertainment-like subtrees mention IP
terms shared with distant subtrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vtag.jobs.synth.world import World

EMOJI = ["😂", "🔥", "❤️", "👍", "✨", "😭", "🤣", "💯", "😍", "🙏", "🎉", "👀", "🥺", "😎", "🌟", "⚡", "🐶", "🍜"]
PHRASES = [
    "真的绝了", "建议收藏", "一定要看到最后", "新手必看", "保姆级教程", "全网最全", "看完秒懂", "太上头了",
    "笑不活了", "终于来了", "记录一下", "求三连", "不看后悔", "干货满满", "沉浸式体验", "一口气看完",
    "后劲太大了", "第一次尝试", "有被惊艳到", "这谁顶得住",
]
FILLERS = ["哈哈哈", "家人们", "绝绝子", "yyds", "啊啊啊", "真的", "救命", "离谱", "冲鸭", "～", "...", "！！", "嘿嘿"]
ADJS = ["好看", "离谱", "上头", "治愈", "好笑", "强", "香", "炸裂", "丝滑", "绝", "可爱", "燃"]
VERBS = ["试了", "做了", "玩了", "看了", "挑战", "学了", "测评", "体验", "整理了", "分享"]
TEMPLATES = [
    "{t}{f}{e}",
    "【{c}】{t}{p}{e}",
    "#{c}# {t}{p}",
    "{n}个{t}小技巧，第{m}个绝了{e}",
    "今天{v}{t}，{f}{e}",
    "{t}｜{p}",
    "挑战{n}天{v}{t}{e}",
    "这{t}也太{a}了吧{e}{e}",
    "{c}日常：{t}{p}",
    "【{t}】{p} #{c}#",
    "谁懂啊！{t}{a}到哭{e}",
    "{t}合集（{n}）{e}",
    "第{n}期 {c}｜{t}",
    "{p}？{t}{f}",
    "{t} {t2} {p}",
    "【{n}】{v}{t}{e}",
]
GENERIC_TEMPLATES = [
    "今天也是元气满满的一天{e}", "记录生活{e}", "随手拍", "第{n}期", "{e}{e}{e}", "周末快乐{e}", "一起来看看吧",
    "你们要的来了{e}", "更新啦{e}", "{p}", "无聊的时候拍的", "日常碎片{e}", "我的第{n}个视频", "{f}{e}",
    "猜猜这是什么{e}", "晚安{e}", "打卡第{n}天",
]
HOOKS = ["必看", "绝了", "教程", "挑战", "合集", "名场面", "干货", "爆笑", "太香了", "震惊", "揭秘", "VLOG", "新手", "神操作"]
DESC_TEMPLATES = [
    "{p}，{f}", "关注我，每天分享{c}{e}", "{v}{t}的第{n}天，{p}", "喜欢的话点个赞吧{e}", "BGM：{n}号歌单",
    "{t}，{p}。评论区告诉我你的看法", "素材来自网络，侵删", "{c}爱好者的日常",
]


@dataclass
class Text:
    title: str
    description: str | None
    cover_text: str


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


class TextMaker:
    def __init__(self, world: World):
        self.w = world
        tax, lex = world.tax, world.lex
        t = world.conf["text"]
        self.rate = {k: float(v) for k, v in t.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.leaf_words: list[list[str]] = []
        self.leaf_ents: list[list[str]] = []
        self.anc_words: list[list[tuple[str, float]]] = []
        self.anc_cdf: list[np.ndarray] = []
        self.l1_words: list[list[str]] = []
        self.zone: list[list[str]] = []
        self.ip_ok: list[bool] = []
        for k, lid in enumerate(world.leaf_ids):
            path = tax.path(lid)
            blind = bool(world.text_blind[k])
            self.leaf_words.append([] if blind else lex.node_words(lid))
            self.leaf_ents.append([] if blind else lex.entities.get(lid, []))
            anc: list[tuple[str, float]] = []
            for depth, a in enumerate(reversed(path[1:-1])):  # parent first, level-1 excluded
                wgt = (0.3 if a in lex.facet else 1.0) / (1.0 + depth)
                anc += [(w, wgt) for w in lex.node_words(a)]
                anc += [(w, 0.5 * wgt) for w in lex.entities.get(a, [])]
            self.anc_words.append(anc)
            if anc:
                cw = np.cumsum([a[1] for a in anc])
                self.anc_cdf.append(cw / cw[-1])
            else:
                self.anc_cdf.append(np.zeros(0))
            l1 = path[0]
            self.l1_words.append(lex.node_words(l1) + lex.entities.get(l1, []))
            zt: list[str] = []
            for a in reversed(path[:-1]):
                if a in lex.zone_titles:
                    zt = lex.zone_titles[a]
                    break
            self.zone.append(zt)
            self.ip_ok.append(l1 in lex.ip_bearing)
        self.generic = lex.generic_titles

    # ---------------------------------------------------------------- words
    def _anc_word(self, rng, k: int) -> str | None:
        anc = self.anc_words[k]
        if not anc:
            return None
        return anc[min(int(np.searchsorted(self.anc_cdf[k], rng.random())), len(anc) - 1)][0]

    def _topic(self, rng, k: int) -> tuple[str, bool]:
        """A topic word and whether it is leaf-specific."""
        lw = self.leaf_words[k]
        if lw and rng.random() < self.rate["leaf_word_rate"]:
            ents = self.leaf_ents[k]
            if ents and rng.random() < self.rate["entity_rate"]:
                return _pick(rng, ents), True
            # the node name first, synonyms less often
            i = 0 if rng.random() < 0.5 or len(lw) == 1 else int(rng.integers(1, len(lw)))
            return lw[i], True
        w = self._anc_word(rng, k) if rng.random() < self.rate["parent_word_rate"] else None
        if w is None:
            w = _pick(rng, self.l1_words[k])
        return w, False

    def _fill(self, rng, tpl: str, t: str, t2: str, c: str, ip: str) -> str:
        out = tpl
        if "{ip}" in out:
            out = out.replace("{ip}", ip)
        repl = {
            "{t2}": t2, "{t}": t, "{c}": c, "{p}": _pick(rng, PHRASES), "{f}": _pick(rng, FILLERS),
            "{a}": _pick(rng, ADJS), "{v}": _pick(rng, VERBS), "{n}": str(int(rng.integers(2, 100))),
            "{m}": str(int(rng.integers(1, 10))),
        }
        for key, val in repl.items():
            out = out.replace(key, val)
        while "{e}" in out:
            out = out.replace("{e}", _pick(rng, EMOJI) if rng.random() < self.rate["emoji_rate"] else "", 1)
        return out

    # ---------------------------------------------------------------- public
    def make(self, rng: np.random.Generator, k: int, extra_names: list[str]) -> Text:
        """Title, description and cover text for a video of leaf position ``k``."""
        r = self.rate
        topic, _ = self._topic(rng, k)
        cat = _pick(rng, self.l1_words[k]) if rng.random() < r["l1_word_rate"] else (self._anc_word(rng, k) or topic)
        ip = _pick(rng, self.w.lex.ip_terms) if (self.ip_ok[k] and rng.random() < r["ip_mention_rate"]) else ""
        u = rng.random()
        generic = False
        if u < r["generic_title_rate"]:
            generic = True
            if self.generic and rng.random() < r["real_title_share"]:
                title = _pick(rng, self.generic)
            else:
                title = self._fill(rng, _pick(rng, GENERIC_TEMPLATES), "", "", "", "")
        elif self.zone[k] and u < r["generic_title_rate"] + r["zone_title_rate"]:
            title = _pick(rng, self.zone[k])
            if self.leaf_words[k] and rng.random() < 0.5 * r["leaf_word_rate"]:
                title += f" #{self.leaf_words[k][0]}#"
        else:
            t2, _ = self._topic(rng, k)
            tpl = _pick(rng, TEMPLATES)
            if ip and "{ip}" not in tpl:
                tpl = ("{ip}" if rng.random() < 0.5 else "") + tpl + (" #{ip}#" if rng.random() < 0.5 else "")
            elif not ip:
                tpl = tpl.replace("{ip}", "")
            title = self._fill(rng, tpl, topic, t2, cat, ip)
            if rng.random() < r["hashtag_rate"]:
                title += f" #{_pick(rng, self.l1_words[k])}#"
        if extra_names and not generic and rng.random() < r["extra_tag_mention_rate"]:
            title += f" #{_pick(rng, extra_names)}#"
        description: str | None = None
        if rng.random() < r["description_rate"]:
            if generic and rng.random() < 0.7:
                description = self._fill(rng, _pick(rng, DESC_TEMPLATES[:1] + DESC_TEMPLATES[3:5]), "", "", "", "")
            else:
                parts = [self._fill(rng, _pick(rng, DESC_TEMPLATES), topic, "", cat, ip)]
                if rng.random() < 0.6:
                    parts.append(f"#{_pick(rng, self.l1_words[k])}# #{topic}#")
                description = " ".join(parts)
        elif rng.random() < 0.1:
            description = ""
        cover_text = topic if (not generic and len(topic) <= 6 and rng.random() < 0.5) else _pick(rng, HOOKS)
        return Text(title, description, cover_text)
