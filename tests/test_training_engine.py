"""The training engine end to end on SciFact groups with a tiny model: budget figures, determinism, learning,
reruns, skipped scores and a diverging loss."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from rankdistill.errors import UserInputError
from rankdistill.training import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RuntimeConfig,
    TrainConfig,
    TrainingDiverged,
    train,
)
from rankdistill.training.sampling import TrainGroup, TrainingPlan
from test_training_fixtures import build_scores, same_weights, scifact_groups, scifact_scores  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def config(scifact_dir, groups, out, *, scores=None, arch="bi", loss="kl", budget=100, model=None, seed=0,
           lr=2e-5, save_every=500, missing="error", group_size=4, bucket_steps=16, **loss_kw) -> TrainConfig:
    return TrainConfig(
        data=DataConfig(str(scifact_dir), str(groups), scores=None if scores is None else str(scores),
                        group_size=group_size, missing_scores=missing),
        model=ModelConfig(arch=arch, model=str(model), max_doc_length=64, max_length=96),
        loss=LossConfig(loss, **loss_kw),
        optim=OptimConfig(budget_docs=budget, batch_size=4, lr=lr, seed=seed),
        runtime=RuntimeConfig(str(out), save_every=save_every, progress=False, bucket_steps=bucket_steps),
    ).validate()


@pytest.fixture(scope="module")
def bi_kl_run(scifact_dir, scifact_groups, scifact_scores, tiny_bert_dir, tmp_path_factory):  # noqa: F811
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bi-kl")
    cfg = config(scifact_dir, scifact_groups[0], out, scores=scifact_scores, model=tiny_bert_dir)
    return cfg, train(cfg)


def test_budget_figures_and_teacher_calls(bi_kl_run):
    _, result = bi_kl_run
    summary = json.loads((result.output / "training.json").read_text())
    # 24 groups, batch 4 x 1 process x no accumulation x group 4 = 16 documents per step; a budget of 100
    # documents gives 6 steps = 96 documents: exactly one epoch over the 24 queries
    assert (summary["steps"], summary["realised_docs"], summary["docs_per_step"]) == (6, 96, 16)
    assert summary["budget_docs"] == 100 and summary["steps_per_epoch"] == 6 and summary["epochs"] == 1.0
    # each group is 1 positive + its whole pool of 3 negatives: one epoch consumes 24 x 4 distinct pairs
    assert summary["teacher_calls"] == 96 == result.teacher_calls
    assert summary["gpu_seconds"] == 0.0 and summary["wall_seconds"] > 0
    assert summary["teacher"]["teacher_id"] == "synthetic-ce"
    assert summary["score"] == "dot" and summary["model_settings"]["pooling"] == "cls"
    assert len(result.losses) == 6 and all(v > 0 for v in result.losses)
    lines = (result.output / "losses.tsv").read_text().splitlines()
    assert lines[0] == "step\tloss\tlr\tdocs" and lines[-1].split("\t")[3] == "96"
    # linear warmup (round(0.1 * 6) = 1 step) then linear decay: lr factors 1/2, 1, 4/5, 3/5, 2/5, 1/5
    lrs = [float(line.split("\t")[2]) for line in lines[1:]]
    assert lrs == pytest.approx([2e-5 * f for f in (0.5, 1.0, 0.8, 0.6, 0.4, 0.2)])
    assert not (result.output / "checkpoints").exists()


def test_same_seed_same_bytes_other_seed_other_weights(bi_kl_run, scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                       tiny_bert_dir, tmp_path):
    cfg, first = bi_kl_run
    again = train(cfg.with_output(str(tmp_path / "again")))
    assert again.losses == first.losses
    assert (first.output / "model.safetensors").read_bytes() == (again.output / "model.safetensors").read_bytes()
    other = train(config(scifact_dir, scifact_groups[0], tmp_path / "seed1", scores=scifact_scores,
                         model=tiny_bert_dir, seed=1))
    assert not same_weights(first.output, other.output)


@pytest.mark.parametrize("arch", ["bi", "cross"])
def test_data_loader_processes_give_the_same_bytes(arch, scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                   tiny_bert_dir, tmp_path):
    """On a GPU the batches are put together by data-loader processes (up to 4; none on a CPU unless asked),
    which take the plan, the token cache and the batch builder by pickling: the study's cells run this way on
    the device only, so the CPU checks it here. Two processes give the losses and the weights of none."""
    base = config(scifact_dir, scifact_groups[0], tmp_path / "inline", scores=scifact_scores, model=tiny_bert_dir,
                  arch=arch)
    inline = train(base)
    two = train(dataclasses.replace(base, runtime=dataclasses.replace(base.runtime, output=str(tmp_path / "two"),
                                                                      workers=2)))
    assert two.losses == inline.losses and len(two.losses) == 6
    assert (two.output / "model.safetensors").read_bytes() == (inline.output / "model.safetensors").read_bytes()


def test_rerun_of_a_finished_run_is_a_no_op_and_other_settings_refuse(bi_kl_run, caplog):
    cfg, first = bi_kl_run
    before = (first.output / "model.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        again = train(cfg)
    assert "already holds this run" in caplog.text
    assert again.steps == first.steps and again.losses == first.losses
    assert (first.output / "model.safetensors").stat().st_mtime_ns == before
    changed = TrainConfig(data=cfg.data, model=cfg.model, loss=LossConfig("kl", temperature=2.0), optim=cfg.optim,
                          runtime=cfg.runtime)
    with pytest.raises(UserInputError, match=r"trained with other settings \(differs in loss.temperature\)"):
        train(changed)


def test_inputs_rewritten_in_place_are_not_taken_for_the_run(scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                                tiny_bert_dir, tmp_path):
    """The settings name the groups, scores and model by path; their contents are recorded beside them. A
    groups file mined again into the same path, or a store holding another teacher's scores, no longer passes
    for the finished run (which was reused as "already holds this run") or for its checkpoint (resumed)."""
    import shutil

    from rankdistill.teachers import ScoreStore

    groups, scores = tmp_path / "groups.jsonl", tmp_path / "scores.db"
    shutil.copyfile(scifact_groups[0], groups)
    shutil.copyfile(scifact_scores, scores)
    out = tmp_path / "run"
    cfg = config(scifact_dir, groups, out, scores=scores, model=tiny_bert_dir)
    first = train(cfg)
    lines = groups.read_text().splitlines(keepends=True)
    groups.write_text("".join(lines[1:] + lines[:1]))  # the same groups in another order: other batches
    with pytest.raises(UserInputError, match=r"trained on other contents of groups \(rewritten since\).*--overwrite"):
        train(cfg)
    shutil.copyfile(scifact_groups[0], groups)
    assert train(cfg).losses == first.losses  # the original contents: the finished run again
    with ScoreStore(scores) as store:
        tid = store.resolve_teacher(None)
        store.set_teacher_info(tid, {**store.teacher_info(tid), "model": "another-teacher"})
    with pytest.raises(UserInputError, match=r"other contents of scores"):
        train(cfg)

    # a run stopped after its first checkpoint: resumed only over the same contents
    stopped = config(scifact_dir, groups, tmp_path / "stopped", scores=scifact_scores, model=tiny_bert_dir,
                     save_every=2)

    def stop(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(stopped, on_step=stop)
    assert (tmp_path / "stopped" / "checkpoints").is_dir()
    groups.write_text("".join(lines[1:] + lines[:1]))
    with pytest.raises(UserInputError, match=r"checkpoint of a run on other contents of groups.*restore"):
        train(stopped)
    shutil.copyfile(scifact_groups[0], groups)
    assert train(stopped).losses == first.losses


def test_trained_model_loads_in_sentence_transformers(bi_kl_run):
    from sentence_transformers import SentenceTransformer

    _, result = bi_kl_run
    st = SentenceTransformer(str(result.output), device="cpu")
    assert st.similarity_fn_name == "dot"
    assert st.encode(["a query"]).shape == (1, 32)


def test_cross_encoder_teacher_recipe_learns_its_groups(scifact_dir, scifact_groups, tiny_cross_encoder_dir,  # noqa: F811
                                                         tmp_path):
    from sentence_transformers import CrossEncoder

    from rankdistill.data import load_dataset

    # LCE on groups without a teacher: 10 epochs of 6 steps at a high learning rate on a tiny model
    cfg = config(scifact_dir, scifact_groups[0], tmp_path / "ce", arch="cross", loss="lce", budget=960,
                 model=tiny_cross_encoder_dir, lr=3e-3)
    result = train(cfg)
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    # at the start the 4 documents are scored alike: loss ~ ln 4 = 1.386; it must fall well below
    assert first == pytest.approx(1.386, abs=0.05)
    assert last < 0.5 * first
    summary = json.loads((result.output / "training.json").read_text())
    assert summary["score"] == "logit" and summary["teacher_calls"] == 0 and summary["teacher"] is None
    ds = load_dataset(str(scifact_dir))
    ce = CrossEncoder(str(result.output), device="cpu")
    queries = ds.queries("train")
    wins = total = 0
    for g in scifact_groups[1]:
        docs = [g.positive_ids[0], *g.negative_ids]
        scores = ce.predict([(queries[g.query_id], ds.corpus.text(d)) for d in docs])
        wins += sum(scores[0] > s for s in scores[1:])
        total += len(scores) - 1
    assert wins / total > 0.8


def test_missing_scores_skip_drops_and_reports(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path):  # noqa: F811
    path, groups = scifact_groups
    g = groups[0]
    store = build_scores(groups, tmp_path / "partial.db", skip={(g.query_id, g.negative_ids[0])})
    with pytest.raises(UserInputError, match=r"1 of 96 \(query, document\) pairs have no score from teacher"):
        train(config(scifact_dir, path, tmp_path / "a", scores=store, model=tiny_bert_dir))
    result = train(config(scifact_dir, path, tmp_path / "b", scores=store, model=tiny_bert_dir, missing="skip"))
    summary = result.summary
    # the group lost a negative (2 < 3 needed) and was dropped: 23 groups -> 5 full steps per epoch
    assert summary["dropped"] == {"missing_score_pairs": 1, "groups_without_scored_positive": 0,
                                  "groups_too_small": 1}
    assert summary["groups"] == 23 and summary["steps_per_epoch"] == 5



def test_documents_judged_relevant_never_stay_in_a_negative_pool(scifact_dir, scifact_groups, tiny_bert_dir,  # noqa: F811
                                                                 tmp_path, caplog):
    """A groups file not mined here (the paper's triples name one positive per line) may list a query's other
    judged positives as negatives: SciFact train query 946 has four, and the file names one."""
    import logging

    from rankdistill.data import Group, write_groups
    from rankdistill.training import data as tdata

    _, groups = scifact_groups
    others = [d for g in groups for d in g.negative_ids][:3]
    mixed = Group("946", ["8428935"], ["26112696", others[0], "4463588", others[1], others[2]], "paper", 0)
    write_groups([*groups, mixed], tmp_path / "groups.jsonl")
    cfg = config(scifact_dir, tmp_path / "groups.jsonl", tmp_path / "out", model=tiny_bert_dir, loss="lce")
    with caplog.at_level(logging.WARNING, logger="rankdistill.training.data"):
        data = tdata.load_training_data(cfg)
    kept = next(g for g in data.groups if g.query_id == "946")
    assert kept.positive_ids == ("8428935",) and kept.negative_ids == tuple(others)
    assert data.dropped == {"judged_relevant_negatives": 2}
    assert "2 negatives in" in caplog.text
    assert "judged relevant to their query in the qrels of split 'train'" in caplog.text
    assert [g.negative_ids for g in data.groups if g.query_id != "946"] == [tuple(g.negative_ids) for g in groups]


def test_teacher_scores_are_read_block_by_block_into_one_array_per_query(scifact_dir, scifact_groups,  # noqa: F811
                                                                        tiny_bert_dir, tmp_path, monkeypatch):
    """The scores were a dict per (query, document): 50M pairs at MS MARCO scale were about 8 GB of Python
    objects, read in one query. Now one float32 array per query, read a block of groups at a time, with the
    same groups, scores and skipped pairs whatever the block."""
    import numpy as np

    from rankdistill.teachers import ScoreStore
    from rankdistill.training import data as tdata

    path, groups = scifact_groups
    a, b = groups[0], groups[5]
    store = build_scores(groups, tmp_path / "partial.db", skip={(a.query_id, a.negative_ids[1]),
                                                                (b.query_id, b.positive_ids[0])})
    cfg = config(scifact_dir, path, tmp_path / "x", scores=store, model=tiny_bert_dir, missing="skip", group_size=3)
    whole = tdata.load_training_data(cfg)
    monkeypatch.setattr(tdata, "SCORE_BLOCK", 4)
    blocked = tdata.load_training_data(cfg)
    assert blocked.groups == whole.groups and blocked.dropped == whole.dropped
    assert whole.dropped == {"missing_score_pairs": 2, "groups_without_scored_positive": 1}
    assert b.query_id not in whole.teacher and len(whole.teacher) == len(whole.groups) == len(groups) - 1
    kept_a = next(g for g in whole.groups if g.query_id == a.query_id)
    assert a.negative_ids[1] not in kept_a.negative_ids and len(kept_a.negative_ids) == len(a.negative_ids) - 1
    with ScoreStore(store, readonly=True) as st:
        tid = st.resolve_teacher(None)
        for g in whole.groups:
            docs = [*reversed(g.negative_ids), *g.positive_ids]
            want = [st.get_many(tid, [(g.query_id, d)])[(g.query_id, d)] for d in docs]
            assert blocked.teacher.lookup(g.query_id, docs) == whole.teacher.lookup(g.query_id, docs)
            np.testing.assert_array_equal(np.float32(whole.teacher.lookup(g.query_id, docs)), np.float32(want))
    with pytest.raises(UserInputError, match=r"2 of 96 \(query, document\) pairs have no score from teacher"):
        tdata.load_training_data(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, missing_scores="error")))


def test_a_budget_of_a_few_steps_tokenises_and_sorts_only_the_windows_it_reaches(
        scifact_dir, scifact_groups, scifact_scores, tiny_bert_dir, tmp_path, caplog):  # noqa: F811
    """2 steps of 1 group over 24 groups, bucketing windows of 4 steps: the documents of one window are
    tokenised (not the epoch's 96), and the plan sorts no other window by length (it has no lengths for it)."""
    import logging

    path, _ = scifact_groups
    cfg = config(scifact_dir, path, tmp_path / "few", scores=scifact_scores, model=tiny_bert_dir, budget=8,
                 bucket_steps=4)
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, batch_size=1)).validate()
    with caplog.at_level(logging.INFO, logger="rankdistill.training.engine"):
        result = train(cfg)
    assert result.summary["steps"] == 2 and result.summary["steps_per_epoch"] == 24
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("tokenised"))
    assert int(line.split(" and ")[1].split()[0]) <= 4 * 4

def test_nan_loss_stops_with_step_and_queries_and_keeps_the_last_checkpoint(scifact_dir, scifact_groups,  # noqa: F811
                                                                           tiny_bert_dir, tmp_path):
    path, groups = scifact_groups
    # without bucketing the plan depends only on the groups and the seed: find the queries of step 3
    plan = TrainingPlan([TrainGroup(g.query_id, tuple(g.positive_ids), tuple(g.negative_ids)) for g in groups],
                        group_size=4, groups_per_step=4, seed=0)
    victim = plan.step(2)[1].query_id
    victim_group = next(g for g in groups if g.query_id == victim)
    # teacher margins of 3e38 - (-3e38) overflow float32 to inf, so MarginMSE is infinite on that batch
    store = build_scores(groups, tmp_path / "poison.db", override={(victim, victim_group.positive_ids[0]): 3e38,
                                                                  (victim, victim_group.negative_ids[0]): -3e38})
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as e:
        train(config(scifact_dir, path, out, scores=store, model=tiny_bert_dir, loss="margin_mse", save_every=1,
                     bucket_steps=1))
    msg = str(e.value)
    assert "loss is inf at step 3 of 6" in msg and victim in msg
    assert "the last good checkpoint is" in msg and msg.count("step-00000002") == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert not (out / "training.json").exists()


@pytest.mark.parametrize("arch", ["bi", "cross"])
def test_every_study_loss_trains_under_bf16_autocast(arch, scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                     tiny_bert_dir, tiny_cross_encoder_dir, tmp_path):
    """``--bf16 on`` runs the GPU's precision on any device: every loss of the study trains under it, and its
    first loss (before any update, same seed and data) is the float32 one up to bf16 rounding."""
    model = tiny_bert_dir if arch == "bi" else tiny_cross_encoder_dir
    for loss in ("lce", "margin_mse", "ranknet", "kl"):
        runs = {}
        for bf16 in ("off", "on"):
            cfg = config(scifact_dir, scifact_groups[0], tmp_path / f"{loss}-{bf16}", arch=arch, loss=loss,
                         budget=32, model=model, scores=None if loss == "lce" else scifact_scores)
            cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, bf16=bf16))
            result = train(cfg)
            summary = json.loads((result.output / "training.json").read_text())
            assert summary["bf16"] is (bf16 == "on")
            assert len(result.losses) == 2 and all(math.isfinite(v) for v in result.losses)
            runs[bf16] = result.losses[0]
        assert runs["on"] == pytest.approx(runs["off"], rel=0.03, abs=3e-3), loss
        assert runs["on"] != runs["off"], loss  # the autocast did take effect
