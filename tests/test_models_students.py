"""Bi- and cross-encoder students: pooling maths, layer truncation, saving in library formats, detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rankdistill.errors import UserInputError
from rankdistill.models.backbone import detect_arch, read_metadata
from rankdistill.models.bi_encoder import BiEncoder, BiEncoderSettings, settings_from_dir
from rankdistill.models.cross_encoder import CrossEncoder
from rankdistill.models.inputs import TokenBatch
from rankdistill.training.engine import in_batch_scores

TEXTS = ["p53 mutations in tumour cells", "a short one", "Aspirin lowers the risk of colorectal cancer."]


def _tokens(tokenizer, texts, **kw) -> TokenBatch:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt", **kw)
    return TokenBatch(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_pooling_ignores_padding(tiny_bert_dir):
    model = BiEncoder.from_pretrained(str(tiny_bert_dir), pooling="mean", max_doc_length=64).eval()
    tok = model.tokenizer
    with torch.no_grad():
        alone = model.embed(_tokens(tok, [TEXTS[1]]))
        padded = model.embed(_tokens(tok, TEXTS))[1:2]  # padded to the longest text of the batch
        # mean pooling by hand over the unpadded token states
        t = _tokens(tok, [TEXTS[1]])
        states = model.encoder(**t.model_inputs()).last_hidden_state[0]
    assert torch.allclose(alone, padded, atol=1e-5)
    assert torch.allclose(alone[0], states.mean(dim=0), atol=1e-6)


def test_cls_pooling_and_cosine_similarity(tiny_bert_dir):
    model = BiEncoder.from_pretrained(str(tiny_bert_dir), pooling="cls", similarity="cosine", max_doc_length=64).eval()
    with torch.no_grad():
        t = _tokens(model.tokenizer, TEXTS)
        emb = model.embed(t)
        states = model.encoder(**t.model_inputs()).last_hidden_state[:, 0]
    assert torch.allclose(emb, torch.nn.functional.normalize(states, dim=-1), atol=1e-6)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_group_scores_and_in_batch_scores_golden():
    # 2 queries, groups of 2 documents, 2-d embeddings
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0],    # query 0's group
                      [5.0, 6.0], [7.0, 8.0]])   # query 1's group
    # own groups: q0 . [1,2] = 1, q0 . [3,4] = 3; q1 . [5,6] = 6, q1 . [7,8] = 8
    assert BiEncoder.group_scores(q, d).tolist() == [[1.0, 3.0], [6.0, 8.0]]
    # in-batch: own group first, then the other documents in batch order
    # q0 against all = [1, 3, 5, 7] -> own [1, 3] + rest [5, 7]; q1 against all = [2, 4, 6, 8] -> [6, 8, 2, 4]
    assert in_batch_scores(q, d, group_size=2).tolist() == [[1.0, 3.0, 5.0, 7.0], [6.0, 8.0, 2.0, 4.0]]
    # as process 1 of 2 holding query 1 only: its own group is rows 2..3 of the gathered documents
    assert in_batch_scores(q[1:], d, group_size=2, offset=1).tolist() == [[6.0, 8.0, 2.0, 4.0]]
    # the same document in two groups: group 0 = (a, b), group 1 = (c, a); query 0's positives {a}, query 1's
    # positives {c, b}:
    # q0's other-group docs: c (5), a (-inf: its own positive); q1's: a (-inf: one of its own docs), b (-inf:
    # one of its positives)
    from rankdistill.training.data import doc_key

    keys = torch.tensor([doc_key(x) for x in ("a", "b", "c", "a")])
    own = [sorted({doc_key(x) for x in ("a", "b")}), sorted({doc_key(x) for x in ("c", "a", "b")})]
    own_keys = torch.tensor([own[0] + [-1], own[1]])
    inf = float("-inf")
    assert in_batch_scores(q, d, group_size=2, doc_keys=keys, own_keys=own_keys).tolist() == [
        [1.0, 3.0, 5.0, inf], [6.0, 8.0, inf, inf]]


def test_layer_truncation_keeps_the_first_layers(tiny_bert_dir):
    full = BiEncoder.from_pretrained(str(tiny_bert_dir), max_doc_length=64)
    one = BiEncoder.from_pretrained(str(tiny_bert_dir), layers=1, max_doc_length=64)
    assert len(one.encoder.encoder.layer) == 1 and one.encoder.config.num_hidden_layers == 1
    a = full.encoder.encoder.layer[0].state_dict()
    b = one.encoder.encoder.layer[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserInputError, match="out of range: the model has 2 layers"):
        BiEncoder.from_pretrained(str(tiny_bert_dir), layers=3, max_doc_length=64)


def test_bi_encoder_loads_in_sentence_transformers_and_transformers(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    for pooling, similarity in [("cls", "dot"), ("mean", "cosine")]:
        out = tmp_path / f"{pooling}-{similarity}"
        model = BiEncoder.from_pretrained(str(tiny_bert_dir), pooling=pooling, similarity=similarity,
                                          max_doc_length=64).eval()
        model.save(out)
        with torch.no_grad():
            ours = model.embed(_tokens(model.tokenizer, TEXTS))
        st = SentenceTransformer(str(out), device="cpu")
        theirs = st.encode(TEXTS, convert_to_tensor=True)
        assert torch.allclose(ours, theirs, atol=1e-5)
        assert st.similarity_fn_name == similarity
        assert st.max_seq_length == 64
        hf = AutoModel.from_pretrained(str(out)).eval()
        t = _tokens(model.tokenizer, TEXTS)
        with torch.no_grad():
            assert torch.allclose(hf(**t.model_inputs()).last_hidden_state[:, 0],
                                  model.encoder(**t.model_inputs()).last_hidden_state[:, 0], atol=1e-6)
        meta = read_metadata(out)
        assert meta["arch"] == "bi" and meta["pooling"] == pooling and meta["similarity"] == similarity
        assert detect_arch(out) == "bi"
        # reloading restores the settings from the folder
        assert BiEncoder.from_pretrained(str(out)).settings == model.settings


def test_bundled_encoder_settings_come_from_its_sentence_transformers_config():
    found = settings_from_dir(__import__("rankdistill.models", fromlist=["x"]).resolve_model(None))
    # all-MiniLM-L6-v2: mean pooling, a Normalize module (cosine), max_seq_length 256
    assert found == {"pooling": "mean", "similarity": "cosine", "max_doc_length": 256}


def test_cross_encoder_predicts_the_same_logit_in_sentence_transformers(tiny_cross_encoder_dir, tmp_path):
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from transformers import AutoModelForSequenceClassification

    model = CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir), max_length=64).eval()
    pairs = [("what lowers cancer risk", TEXTS[2]), ("tumour suppressor", TEXTS[0])]
    enc = model.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(TokenBatch(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
    out = tmp_path / "ce"
    model.save(out)
    st = STCrossEncoder(str(out), device="cpu")
    theirs = torch.as_tensor(st.predict(pairs))
    assert torch.allclose(ours, theirs, atol=1e-5)  # identity activation: the score is the logit
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        assert torch.allclose(hf(**enc).logits.squeeze(-1), ours, atol=1e-6)
    meta = json.loads((out / "rankdistill.json").read_text())
    assert meta["arch"] == "cross" and meta["score"] == "logit" and meta["max_length"] == 64
    assert detect_arch(out) == "cross"


def test_cross_encoder_from_a_plain_encoder_gets_a_seeded_one_logit_head(tiny_bert_dir):
    torch.manual_seed(3)
    a = CrossEncoder.from_pretrained(str(tiny_bert_dir), max_length=64)
    torch.manual_seed(3)
    b = CrossEncoder.from_pretrained(str(tiny_bert_dir), max_length=64)
    assert a.model.config.num_labels == 1
    assert torch.equal(a.model.classifier.weight, b.model.classifier.weight)
    assert a.model.classifier.weight.shape == (1, 32)


def test_detect_arch_of_foreign_folders(tiny_bert_dir, tiny_cross_encoder_dir, tmp_path):
    assert detect_arch(tiny_bert_dir) == "bi"
    assert detect_arch(tiny_cross_encoder_dir) == "cross"
    with pytest.raises(UserInputError, match="not a model directory"):
        detect_arch(tmp_path)


def test_lengths_beyond_the_position_table_are_refused(tiny_bert_dir, tiny_cross_encoder_dir):
    with pytest.raises(UserInputError, match="max length 256 exceeds the model's 128 positions"):
        CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir), max_length=256)
    # defaults nobody asked for are capped instead: 256 -> 128 and 192 -> 128
    assert CrossEncoder.from_pretrained(str(tiny_cross_encoder_dir)).settings.max_length == 128
    assert BiEncoder.from_pretrained(str(tiny_bert_dir)).settings.max_doc_length == 128
    with pytest.raises(UserInputError, match="max length 192 exceeds the model's 128 positions"):
        BiEncoder.from_pretrained(str(tiny_bert_dir), max_doc_length=192)


def test_settings_validation():
    with pytest.raises(UserInputError, match="unknown pooling 'max'"):
        BiEncoderSettings(pooling="max")
    with pytest.raises(UserInputError, match="unknown similarity"):
        BiEncoderSettings(similarity="l2")


def test_head_on_a_plain_encoder_reads_a_new_mean_pooling_layer(tiny_bert_dir, tmp_path):
    """A plain encoder turned cross-encoder gets one extra layer whose first-token output is exactly
    LN(h_cls + mean of the real tokens' states) at initialisation; saved, it reloads with the same logits."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained(str(tiny_bert_dir), max_length=64).eval()
    base = AutoModel.from_pretrained(str(tiny_bert_dir)).eval()
    assert model.model.config.num_hidden_layers == base.config.num_hidden_layers + 1
    enc = model.tokenizer(["what lowers cancer risk", "tumour"], [TEXTS[2], TEXTS[0]], padding=True,
                          return_tensors="pt")
    with torch.no_grad():
        h = base(**enc).last_hidden_state  # the pretrained layers are unchanged
        mine = model.model.bert(**enc).last_hidden_state[:, 0]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (h * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.layer_norm(h[:, 0] + mean, (h.shape[-1],), eps=base.config.layer_norm_eps)
    assert torch.allclose(mine, expected, atol=1e-5)
    # the first-token state now varies with the document, where the pretrained one barely does
    assert (mine[0] - mine[1]).norm() > 0.1 * mine[0].norm()
    out = tmp_path / "ce"
    model.save(out)
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    with torch.no_grad():
        ours = model(TokenBatch(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
        assert torch.allclose(hf(**enc).logits.squeeze(-1), ours, atol=1e-6)
    assert hf.config.num_hidden_layers == base.config.num_hidden_layers + 1


def test_half_precision_checkpoints_train_in_float32(tiny_bert_dir, tiny_cross_encoder_dir, tmp_path):
    """transformers keeps a bf16 checkpoint's dtype; AdamW steps of 1e-5 on bf16 weights round away (3 steps
    changed 0.3% of the weights), so students load float32 master weights whatever the file holds."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    for name, source, cls, auto in (("bi", tiny_bert_dir, BiEncoder, AutoModel),
                                    ("cross", tiny_cross_encoder_dir, CrossEncoder,
                                     AutoModelForSequenceClassification)):
        folder = tmp_path / name
        half = auto.from_pretrained(source).to(torch.bfloat16)
        half.save_pretrained(folder)
        (folder / "config.json").write_text((folder / "config.json").read_text())
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (source / f).is_file():
                (folder / f).write_bytes((source / f).read_bytes())
        assert auto.from_pretrained(folder).dtype == torch.bfloat16  # what loading without a dtype gives
        model = cls.from_pretrained(str(folder))
        assert {p.dtype for p in model.parameters()} == {torch.float32}, name
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        before = [p.detach().clone() for p in model.parameters()]
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        changed = sum(int((p != b).sum()) for p, b in zip(model.parameters(), before))
        assert changed == sum(p.numel() for p in model.parameters()), name


def test_sentence_transformers_folder_with_the_transformer_in_a_subfolder(tiny_bert_dir, tmp_path):
    """modules.json at the root, the transformer in 0_Transformer/: the bi-encoder reads pooling (mean) and
    normalisation (cosine) at the root (it read the sub-folder and fell back to cls/dot); a cross-encoder
    student starts from the sub-folder (it failed with transformers' 'Unrecognized model')."""
    import shutil

    root = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, root / "0_Transformer")
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                 "pooling_mode_mean_tokens": True}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    bi = BiEncoder.from_pretrained(str(root))
    assert (bi.settings.pooling, bi.settings.similarity) == ("mean", "cosine")
    cross = CrossEncoder.from_pretrained(str(root))
    assert sum(p.numel() for p in cross.parameters()) > 0


def test_embedding_cache_writers_never_share_a_shard_and_keys_follow_the_weights(tiny_bert_dir, tmp_path):
    """Two writers of one model's cache chose the next shard number from the files already there, so one that
    had not written yet and another took the same number and overwrote each other's vectors. The cache's
    model key named the weights by size and mtime, which a copy with other weights can share."""
    import os
    import shutil

    import numpy as np

    from rankdistill.models.embeddings import EmbeddingCache, model_key

    a, b = EmbeddingCache(tmp_path, "k"), EmbeddingCache(tmp_path, "k")
    claimed = a._claim_shard()  # a writer between choosing its shard and writing it
    b.add(["t2"], np.array([[0.0, 1.0]]))
    a_rows = np.array([[1.0, 0.0]])
    with open(tmp_path / "k" / f"shard-{claimed:05d}.npy", "wb") as fh:
        np.save(fh, a_rows)
    (tmp_path / "k" / f"shard-{claimed:05d}.keys").write_text("t1\n")
    fresh = EmbeddingCache(tmp_path, "k")
    assert fresh.get(["t1"]).tolist() == [[1.0, 0.0]] and fresh.get(["t2"]).tolist() == [[0.0, 1.0]]

    other = Path(shutil.copytree(tiny_bert_dir, tmp_path / "other"))
    before = model_key(str(other), 64, False)
    weights = other / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))  # other weights, same size, same mtime
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_key(str(other), 64, False) != before



def test_embedding_cache_is_opened_once_per_process_and_read_incrementally(tmp_path, monkeypatch):
    """Every encode_texts call re-read every shard's keys: a bi-encoder teacher or the diagnostics, which
    encode chunk by chunk, re-read MS MARCO's 8.8M keys per chunk. One cache per folder now reads only the
    shards written since it last looked (by itself or another process), and starts over if they were cleared."""
    import shutil

    import numpy as np

    from rankdistill.models import embeddings as emb

    reads: list[str] = []
    real_read = Path.read_text

    def spy(self, *a, **kw):
        if self.suffix == ".keys":
            reads.append(self.name)
        return real_read(self, *a, **kw)

    monkeypatch.setattr(Path, "read_text", spy)
    monkeypatch.setattr(emb, "_CACHES", {})
    emb.EmbeddingCache(tmp_path, "k").add(["a", "b"], np.array([[1.0, 0.0], [2.0, 0.0]]))
    mine = emb.open_cache(tmp_path, "k")
    assert reads == ["shard-00000.keys"]
    mine.add(["c"], np.array([[3.0, 0.0]]))
    emb.EmbeddingCache(tmp_path, "k").add(["d", "a"], np.array([[4.0, 0.0], [9.0, 9.0]]))  # another writer
    reads.clear()
    assert emb.open_cache(tmp_path, "k") is mine
    assert reads == ["shard-00002.keys"]  # only the other writer's new shard
    # gathered across three shards, in the order asked; "a" from the lower shard, as a fresh process reads it
    assert mine.get(["d", "a", "c", "b", "a"])[:, 0].tolist() == [4.0, 1.0, 3.0, 2.0, 1.0]
    assert emb.EmbeddingCache(tmp_path, "k").get(["a"]).tolist() == [[1.0, 0.0]]
    shutil.rmtree(tmp_path / "k")
    (tmp_path / "k").mkdir()
    # shard 0 again, as many keys (a keys file of the same size, perhaps the same inode), other texts
    emb.EmbeddingCache(tmp_path, "k").add(["e", "f"], np.array([[5.0, 0.0], [6.0, 0.0]]))
    again = emb.open_cache(tmp_path, "k")
    assert "a" not in again and again.get(["f", "e"]).tolist() == [[6.0, 0.0], [5.0, 0.0]]
    shutil.rmtree(tmp_path / "k")
    fresh = emb.open_cache(tmp_path, "k")
    assert fresh is not again and len(fresh) == 0

def test_score_candidates_leaves_a_query_without_candidates_empty(tiny_bert_dir):
    """BM25 gives {} for a query with no indexed term; re-ranking such a run failed in torch.stack."""
    from rankdistill.models.scoring import score_candidates

    model = BiEncoder.from_pretrained(str(tiny_bert_dir), pooling="mean", max_doc_length=16)

    class Corpus:
        @staticmethod
        def text(doc_id: str) -> str:
            return {"d1": "wing flutter", "d2": "boundary layer"}[doc_id]

    run = score_candidates(model, {"q1": "flutter", "q2": "the and of"}, Corpus(), {"q1": {"d1": 1, "d2": 0},
                           "q2": {}}, device="cpu", progress=False)
    assert run["q2"] == {} and set(run["q1"]) == {"d1", "d2"}
