"""Teachers: score spaces, ensemble maths, batching, loading, and parity with sentence-transformers."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from rankdistill.errors import UserInputError
from rankdistill.teachers.batching import length_sorted_batches, pad_batch, padded_tokens
from rankdistill.teachers.ensemble import ZStats, mean_z, zstats
from rankdistill.teachers.models import (
    BiEncoderTeacher,
    CrossEncoderTeacher,
    TeacherConfig,
    detect_kind,
    load_teacher,
)
from rankdistill.teachers.spaces import resolve_score_space, scores_from_logits

pytestmark = pytest.mark.usefixtures("one_thread")

QUERIES = ["what is the lift of a wing in a slipstream", "heat conduction in composite slabs", "boundary layer"]
DOCS = [
    "experimental investigation of the aerodynamics of a wing in a slipstream . an experimental study of a "
    "wing in a propeller slipstream was made in order to determine the spanwise distribution of the lift",
    "simple shear flow past a flat plate in an incompressible fluid of small viscosity",
    "heat",
]


# -- score spaces ---------------------------------------------------------------------------------------
def test_score_spaces_golden_values():
    one = torch.tensor([[2.0], [-1.0]])
    # logit: z itself; log_p_rel: log sigmoid(z) = -log(1 + e^-z): z=2 -> -log(1.135335) = -0.126928,
    # z=-1 -> -log(1 + e) = -1.313262
    assert scores_from_logits(one, "logit").tolist() == [2.0, -1.0]
    assert scores_from_logits(one, "log_p_rel").tolist() == pytest.approx([-0.126928, -1.313262], abs=1e-6)
    two = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    # log softmax_1: 3 - log(e^1 + e^3) = -log(1 + e^-2) = -0.126928;  [0, 0] -> log 0.5 = -0.693147
    assert scores_from_logits(two, "log_p_rel").tolist() == pytest.approx([-0.126928, -0.693147], abs=1e-6)
    assert scores_from_logits(two, "log_odds").tolist() == [2.0, 0.0]
    assert scores_from_logits(two, "logit").tolist() == [3.0, 0.0]
    assert resolve_score_space("auto", 1) == "logit"
    assert resolve_score_space("auto", 2) == "log_p_rel"
    with pytest.raises(ValueError, match="1 or 2 outputs"):
        resolve_score_space("auto", 3)


# -- ensemble maths -------------------------------------------------------------------------------------
def test_mean_of_z_scores_golden_values():
    # teacher A: [1, 2, 3] -> mean 2, population std sqrt(2/3) = 0.816497 -> z = [-1.224745, 0, 1.224745]
    # teacher B: [10, 30, 20] -> mean 20, std sqrt(200/3) = 8.164966 -> z = [-1.224745, 1.224745, 0]
    # mean: [-1.224745, 0.612372, 0.612372]
    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])
    sa, sb = zstats(a), zstats(b)
    assert (sa.mean, sb.mean, sa.n) == (2.0, 20.0, 3)
    assert sa.std == pytest.approx(math.sqrt(2 / 3))
    assert sb.std == pytest.approx(math.sqrt(200 / 3))
    assert mean_z(np.stack([a, b]), [sa, sb]).tolist() == pytest.approx([-1.224745, 0.612372, 0.612372], abs=1e-6)
    # a constant member contributes zeros instead of dividing by zero
    assert zstats(np.array([4.0, 4.0])) == ZStats(4.0, 1.0, 2)
    assert ZStats.from_dict(sa.to_dict()) == sa
    with pytest.raises(ValueError, match="members=2"):
        mean_z(np.stack([a]), [sa, sb])


# -- batching -------------------------------------------------------------------------------------------
def test_length_sorted_batches_and_padding_golden():
    lengths = [5, 1, 3, 2, 3]
    batches = length_sorted_batches(lengths, 2)
    # longest first, ties in input order: 5(0), 3(2), 3(4), 2(3), 1(1)
    assert [b.tolist() for b in batches] == [[0, 2], [4, 3], [1]]
    # padded: 2*5 + 2*3 + 1*1 = 17 tokens (14 real); unsorted batches [0,1],[2,3],[4] would cost 10+6+3 = 19
    assert padded_tokens(lengths, batches) == 17
    assert padded_tokens(lengths, [np.array([0, 1]), np.array([2, 3]), np.array([4])]) == 19
    # rounding to a multiple of 8: 8*2 + 8*2 + 8*1 = 40
    assert padded_tokens(lengths, batches, multiple_of=8) == 40
    seqs = [np.arange(1, n + 1) for n in lengths]
    types = [np.ones(n, dtype=np.int64) for n in lengths]
    pb = pad_batch(batches[1], seqs, types, pad_id=0, multiple_of=4)
    assert pb.input_ids.tolist() == [[1, 2, 3, 0], [1, 2, 0, 0]]
    assert pb.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert pb.token_type_ids.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    with pytest.raises(ValueError):
        length_sorted_batches(lengths, 0)


# -- loading and validation ------------------------------------------------------------------------------
def test_cross_encoder_matches_sentence_transformers_predict(tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    teacher = load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), max_length=48, batch_size=2, device="cpu"))
    assert isinstance(teacher, CrossEncoderTeacher)
    from rankdistill.models import weights_digest

    assert teacher.identity() == {"kind": "cross", "model": str(tiny_cross_encoder_dir), "score_space": "logit",
                                  "max_length": 48, "num_labels": 1, "truncation": "longest_first",
                                  "weights": weights_digest(tiny_cross_encoder_dir), "dtype": "float32"}
    assert teacher.info()["dtype"] == "float32"
    queries = [q for q in QUERIES for _ in DOCS]
    docs = DOCS * len(QUERIES)
    ours = teacher.score(queries, docs)
    ref = CrossEncoder(str(tiny_cross_encoder_dir), device="cpu", max_length=48).predict(
        list(zip(queries, docs)), activation_fn=torch.nn.Identity(), batch_size=4)
    assert np.allclose(ours, ref, atol=1e-6, rtol=1e-5)
    # the batch a pair lands in does not change its score (padding is masked): what resume relies on
    single = load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), max_length=48, batch_size=1, device="cpu"))
    assert np.allclose(single.score(queries, docs), ours, atol=1e-6, rtol=1e-5)
    teacher.close()


def _tiny_classifier(path, tokenizer_dir, num_labels, seed=1):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_two_class_cross_encoder_scores_log_p_rel(tmp_path, tiny_cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    model = _tiny_classifier(tmp_path / "ce2", tiny_cross_encoder_dir, num_labels=2)
    teacher = load_teacher(TeacherConfig(str(model), device="cpu"))
    assert teacher.identity()["score_space"] == "log_p_rel"
    assert teacher.max_length == 64  # the model's position limit, below 512
    logits = CrossEncoder(str(model), device="cpu", max_length=64).predict(
        list(zip(QUERIES, DOCS)), activation_fn=torch.nn.Identity())
    expected = torch.log_softmax(torch.tensor(logits), dim=-1)[:, 1].numpy()
    assert np.allclose(teacher.score(QUERIES, DOCS), expected, atol=1e-6)
    odds = load_teacher(TeacherConfig(str(model), device="cpu", score_space="log_odds"))
    assert np.allclose(odds.score(QUERIES, DOCS), logits[:, 1] - logits[:, 0], atol=1e-6)


def test_models_that_are_not_ranking_models_are_refused(tmp_path, tiny_bert_dir, tiny_cross_encoder_dir,
                                                          monkeypatch):
    from rankdistill.models import resolve_model
    from rankdistill.teachers import models as models_module

    with pytest.raises(UserInputError, match=r"is not a ranking model: its architectures are \['BertModel'\]"):
        detect_kind(str(tiny_bert_dir))
    with pytest.raises(UserInputError, match="no sequence-classification head"):
        load_teacher(TeacherConfig(str(tiny_bert_dir), kind="cross"))
    three = _tiny_classifier(tmp_path / "ce3", tiny_cross_encoder_dir, num_labels=3)
    with pytest.raises(UserInputError, match="its head has 3 outputs"):
        load_teacher(TeacherConfig(str(three)))
    with pytest.raises(UserInputError, match="exceeds the model's limit of 128 tokens"):
        load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), max_length=256))
    # the bundled MiniLM is a sentence-transformers bi-encoder, not a cross-encoder
    assert detect_kind(resolve_model(None)) == "bi"
    with pytest.raises(UserInputError, match="no sequence-classification head"):
        CrossEncoderTeacher(TeacherConfig(resolve_model(None), kind="cross"))
    # a config that claims a classification head over a checkpoint without one: the head would be random
    fake = tmp_path / "fake-ce"
    shutil.copytree(tiny_bert_dir, fake)
    cfg = json.loads((fake / "config.json").read_text())
    cfg["architectures"] = ["BertForSequenceClassification"]
    (fake / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserInputError, match=r"not a trained ranking model: weights classifier\.bias, "):
        load_teacher(TeacherConfig(str(fake)))  # told from the checkpoint's header, before loading the weights
    untrained = load_teacher(TeacherConfig(str(fake), allow_untrained_head=True))  # benchmarks only
    assert untrained.info()["untrained_head"] is True
    assert not untrained.loaded  # the weights load when the first pair is scored
    assert untrained.info()["architecture"] == "BertForSequenceClassification"
    assert np.isfinite(untrained.score(QUERIES, DOCS)).all() and untrained.loaded
    assert type(untrained.model).__name__ == untrained.info()["architecture"]
    assert not any(t.is_inference() for t in untrained.model.parameters())  # loaded under run()'s inference mode
    untrained.close()
    assert not untrained.loaded
    # a weight of the base model missing (here the pooler): the headers cannot tell a tied weight from a gap,
    # so the weights are loaded at once, and that refuses it (it was refused only at the first scored batch)
    from safetensors.torch import load_file, save_file

    headless = tmp_path / "no-pooler"
    shutil.copytree(tiny_cross_encoder_dir, headless)
    weights = load_file(str(headless / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "pooler" not in k}, str(headless / "model.safetensors"))
    with pytest.raises(UserInputError, match=r"not a trained ranking model: weights bert\.pooler\.dense\.bias, "):
        load_teacher(TeacherConfig(str(headless)))
    # a head of another shape than the config says (3 outputs stored, 1 asked for): loaded at once to tell
    wide = tmp_path / "wide-head"
    shutil.copytree(tiny_cross_encoder_dir, wide)
    weights = load_file(str(wide / "model.safetensors"))
    weights["classifier.weight"] = torch.zeros(3, weights["classifier.weight"].shape[1])
    save_file(weights, str(wide / "model.safetensors"))
    assert models_module._head_missing(str(wide), models_module.read_model_config(str(wide)), 1) is None
    assert models_module._head_missing(str(tiny_cross_encoder_dir),
                                       models_module.read_model_config(str(tiny_cross_encoder_dir)), 1) == []
    # where the checkpoint's names cannot be read from its header, the weights are loaded at once to tell
    monkeypatch.setattr(models_module, "_head_missing", lambda *a: None)
    with pytest.raises(UserInputError, match=r"not a trained ranking model: weights classifier\.bias, "):
        load_teacher(TeacherConfig(str(fake)))
    assert load_teacher(TeacherConfig(str(tiny_cross_encoder_dir))).loaded
    with pytest.raises(UserInputError, match="unknown teacher type"):
        TeacherConfig("x", kind="colbert")


def test_bi_encoder_teacher_dot_and_cosine_with_embedding_cache(tmp_path, tiny_bert_dir):
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "emb"
    dot = load_teacher(TeacherConfig(str(tiny_bert_dir), kind="bi", device="cpu", embedding_cache=cache))
    assert isinstance(dot, BiEncoderTeacher)
    assert dot.identity()["score_space"] == "dot"
    queries = [QUERIES[0], QUERIES[0], QUERIES[1]]
    docs = [DOCS[0], DOCS[1], DOCS[0]]
    got = dot.score(queries, docs)
    st = SentenceTransformer(str(tiny_bert_dir), device="cpu")
    q = st.encode(queries, convert_to_numpy=True).astype(np.float64)
    d = st.encode(docs, convert_to_numpy=True).astype(np.float64)
    assert np.allclose(got, (q * d).sum(1), rtol=1e-4, atol=1e-5)
    shards = sorted(p.name for p in cache.rglob("shard-*.npy"))
    assert shards  # embeddings went to the cache ...
    assert np.allclose(dot.score(queries, docs), got)
    assert sorted(p.name for p in cache.rglob("shard-*.npy")) == shards  # ... and are reused, not re-encoded
    cos = load_teacher(TeacherConfig(str(tiny_bert_dir), kind="bi", similarity="cosine", device="cpu",
                                     embedding_cache=cache))
    expected = (q * d).sum(1) / (np.linalg.norm(q, axis=1) * np.linalg.norm(d, axis=1))
    assert np.allclose(cos.score(queries, docs), expected, rtol=1e-4, atol=1e-5)


def test_cached_pair_tokens_equal_the_tokenizers_longest_first(tiny_cross_encoder_dir, scifact_dir):
    """The teacher tokenises each text once and builds pairs from the cache: the ids and segment ids equal
    the tokenizer's own pair encoding (truncation longest_first), including long queries, documents cut at
    the limit, ties, and an empty document (an empty second segment, as the tokenizer's batch call makes it)."""
    from transformers import AutoTokenizer

    from rankdistill.data import load_dataset
    from rankdistill.training.tokens import longest_first_lengths

    ds = load_dataset(scifact_dir)
    docs = [ds.corpus.text(d) for d in ds.corpus.ids()[:60]] + [""]
    queries = ["p53", "what is the role of " * 24, docs[3][:400], "aspirin and risk"]  # up to 120 tokens
    pairs = [(q, d) for q in queries for d in docs]
    teacher = load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), max_length=64, device="cpu"))
    got = teacher.prepare([q for q, _ in pairs], [d for _, d in pairs])
    got2 = teacher.prepare([q for q, _ in pairs], [d for _, d in pairs])  # from the cache
    tok = AutoTokenizer.from_pretrained(str(tiny_cross_encoder_dir))
    ref = tok([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first", max_length=64,
              return_token_type_ids=True)
    assert [x.tolist() for x in got.input_ids] == ref["input_ids"] == [x.tolist() for x in got2.input_ids]
    assert [x.tolist() for x in got.token_type_ids] == ref["token_type_ids"]
    assert got.lengths.tolist() == [len(x) for x in ref["input_ids"]]
    # golden values of the rule: the longer text is cut first, then both halve (odd token to the longer)
    assert longest_first_lengths(3, 100, 61) == (3, 58)
    assert longest_first_lengths(40, 100, 61) == (30, 31)
    assert longest_first_lengths(100, 40, 61) == (31, 30)
    assert longest_first_lengths(50, 50, 61) == (30, 31)
    assert longest_first_lengths(10, 20, 61) == (10, 20)


def test_loading_a_teacher_or_an_encoder_prints_no_progress_bar(tmp_path, tiny_bert_dir, tiny_cross_encoder_dir,
                                                                 capfd):
    """transformers draws a "Loading weights" bar on stderr at every load, terminal or not (`rankdistill score
    2> log` wrote two lines of it): our loaders silence it, as the students' loaders do."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from rankdistill.models.embeddings import load_sentence_transformer

    hf_logging.enable_progress_bar()
    AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder_dir))
    assert "Loading weights" in capfd.readouterr().err  # what the loaders below must not print
    load_teacher(TeacherConfig(str(tiny_cross_encoder_dir), device="cpu"))
    load_sentence_transformer(str(shutil.copytree(tiny_bert_dir, tmp_path / "bi")), device="cpu")  # not memoised
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err
    assert hf_logging.is_progress_bar_enabled()  # restored afterwards


def test_a_hub_teacher_is_checked_from_its_cached_files(tmp_path, tiny_cross_encoder_dir, monkeypatch):
    """A teacher named by its hub id was always loaded at once: its checkpoint is found in the local Hugging
    Face cache (never fetched), so its head is told from the headers there too."""
    import huggingface_hub.constants

    from rankdistill.teachers import models as models_module

    snapshot = tmp_path / "hub" / "models--org--tiny-ce" / "snapshots" / "abc123"
    shutil.copytree(tiny_cross_encoder_dir, snapshot)
    (tmp_path / "hub" / "models--org--tiny-ce" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny-ce" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert models_module._checkpoint_files("org/tiny-ce") == snapshot
    cfg = models_module.read_model_config(str(snapshot))
    assert models_module._head_missing("org/tiny-ce", cfg, 1) == []
    assert models_module._checkpoint_files("org/not-cached") is None
    assert models_module._head_missing("org/not-cached", cfg, 1) is None
