"""`rankdistill diagnose` and `select` on real TREC DL 2019 groups scored by a real run (TAS-B as teacher)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import pdist
from scipy.special import softmax
from scipy.stats import entropy

from rankdistill.cli import main
from rankdistill.data import Group, read_groups, write_groups
from rankdistill.data.runs import ranked


@pytest.fixture(scope="module")
def study(trecdl_manifest, tmp_path_factory) -> dict:
    """Groups of the DL19 queries (positive = the teacher's best judged-relevant passage) with three negative
    samplers over the teacher's top 100 (TAS-B run scores are the teacher): its top-15 ('teacher'), 15 at
    random ('random') and BM25's order ('bm25'); the store holds the TAS-B scores."""
    from rankdistill.data import read_qrels, read_run
    from rankdistill.teachers import ScoreStore

    root = trecdl_manifest.parent
    out = tmp_path_factory.mktemp("diag")
    qrels = read_qrels(root / "qrels.dl19-passage.txt")
    bm25 = read_run(root / "runs" / "run.dl19.bm25.top100.trec")
    teacher = read_run(root / "runs" / "run.dl19.d_bert_kd_tasb.top100.trec")
    groups: dict[str, list[Group]] = {"teacher": [], "random": [], "bm25": []}
    for q in sorted(qrels):
        judged_rel = {d for d, r in qrels[q].items() if r >= 1}
        pos = [d for d, _ in ranked(teacher[q]) if qrels[q].get(d, 0) >= 2][:1]
        if not pos:
            continue
        pool = [d for d, _ in ranked(teacher[q]) if d not in judged_rel]
        groups["teacher"].append(Group(q, pos, pool[:15], "teacher"))
        groups["random"].append(Group(q, pos, random.Random(q).sample(pool, min(15, len(pool))), "random"))
        groups["bm25"].append(Group(q, pos, [d for d, _ in ranked(bm25[q]) if d in teacher[q]
                                             and d not in judged_rel][:15], "bm25"))
    paths = {name: out / f"{name}.jsonl" for name in groups}
    for name, gs in groups.items():
        write_groups(gs, paths[name])
    with ScoreStore(out / "scores.db") as store:
        store.put("tasb", [(q, d, s) for q in teacher for d, s in teacher[q].items()])
    return {"dir": out, "groups": paths, "store": out / "scores.db", "manifest": trecdl_manifest,
            "teacher": teacher}


def _diagnose(study, name, output, *extra):
    return main(["-q", "diagnose", "--dataset", str(study["manifest"]), "--groups", str(study["groups"][name]),
                 "--scores", str(study["store"]), "--output", str(output), *extra])


def test_diagnose_with_locality_plots_and_select(study, tiny_bert_dir, tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    other = tmp_path / "random.parquet"
    assert _diagnose(study, "random", other, "--encoder", str(tiny_bert_dir), "--cache-dir", str(tmp_path / "c"),
                     "--max-length", "128") == 0
    out = tmp_path / "teacher.parquet"
    rc = _diagnose(study, "teacher", out, "--split", "dl19", "--encoder", str(tiny_bert_dir), "--cache-dir",
                   str(tmp_path / "c"), "--max-length", "128", "--plot-dir", str(tmp_path / "plots"),
                   "--plot-with", f"random={other}")
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "diagnosed 42 of 43 groups" in stdout and "skipped 1: one document (entropy undefined)" in stdout
    frame = pd.read_parquet(out)
    meta = json.loads((tmp_path / "teacher.parquet.meta.json").read_text())
    assert (meta["teacher"], meta["metric"], meta["alpha"], meta["temperature"]) == ("tasb", "cosine", 0.95, 1.0)
    assert meta["encoder"] == str(Path(tiny_bert_dir).resolve())
    assert meta["skipped"] == {"one document (entropy undefined)": 1} and meta["n_diagnosed"] == len(frame) == 42
    assert set(meta["summary"]["diameter_q95_cosine"]) == {"n", "mean", "q0.05", "q0.25", "q0.5", "q0.75", "q0.95"}
    assert frame["query_id"].is_unique

    # parity of one row with scipy, from the store's scores and the cached embeddings
    from rankdistill.data import load_dataset
    from rankdistill.models.embeddings import encode_texts

    g = next(g for g in read_groups(study["groups"]["teacher"]) if len(g.negative_ids) == 15)
    row = frame.set_index("query_id").loc[g.query_id]
    docs = g.positive_ids + g.negative_ids
    t = np.array([study["teacher"][g.query_id][d] for d in docs])
    assert row["softmax_entropy_nats_T1_with_pos"] == pytest.approx(entropy(softmax(t)), rel=1e-9)
    assert row["softmax_entropy_nats_T1_no_pos"] == pytest.approx(entropy(softmax(t[1:])), rel=1e-9)
    assert row["kappa_T1"] == pytest.approx(1 / (16 * softmax(t).min()), rel=1e-6)
    assert row["positive_rank"] == 1 + int(np.sum(t[1:] >= t[0]))
    ds = load_dataset(study["manifest"])
    emb = encode_texts([ds.corpus.text(d) for d in docs], model=str(tiny_bert_dir), max_length=128,
                       cache_dir=tmp_path / "c")
    assert row["diameter_q95_cosine"] == pytest.approx(np.quantile(pdist(emb.astype(float), "cosine"), 0.95),
                                                       rel=1e-5)

    # figures: valid PNGs and SVGs with the expected labels, both strategies drawn
    plots = tmp_path / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["diameter_box.png", "diameter_box.svg", "entropy_hist.png",
                                                        "entropy_hist.svg"]
    svg = (plots / "entropy_hist.svg").read_text()
    assert "teacher softmax entropy (nats, tau=1, with positive)" in svg
    assert "teacher (n=42)" in svg and "random (n=42)" in svg
    box = (plots / "diameter_box.svg").read_text()
    assert "robust diameter (q95, cosine" in box and ">teacher<" in box and ">random<" in box
    assert (plots / "diameter_box.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # determinism: the same inputs give the same bytes
    again = tmp_path / "again.parquet"
    assert _diagnose(study, "teacher", again, "--encoder", str(tiny_bert_dir), "--cache-dir", str(tmp_path / "c"),
                     "--max-length", "128") == 0
    assert again.read_bytes() == out.read_bytes()

    # select on the real statistics: drop the upper quartile of normalised entropy
    kept = tmp_path / "kept.jsonl"
    col = "softmax_entropy_norm_T1_with_pos"
    assert main(["select", "--groups", str(study["groups"]["teacher"]), "--stats", str(out), "--by", col,
                 "--rule", "drop_upper_quartile", "--output", str(kept)]) == 0
    q75 = float(np.quantile(frame[col], 0.75))
    expect = set(frame.loc[frame[col] <= q75, "query_id"])
    assert {g.query_id for g in read_groups(kept)} == expect
    side = json.loads((tmp_path / "kept.jsonl.meta.json").read_text())
    assert (side["n_queries"], side["n_kept"], side["n_without_value"]) == (43, len(expect), 1)
    assert side["thresholds"]["hi_value"] == pytest.approx(q75)
    assert f"kept {len(expect)} of 43 queries" in capsys.readouterr().out
    # without --by: the normalised softmax entropy with the positive, the same selection
    assert main(["select", "--groups", str(study["groups"]["teacher"]), "--stats", str(out), "--rule",
                 "drop_upper_quartile", "--output", str(tmp_path / "kept2.jsonl")]) == 0
    assert (tmp_path / "kept2.jsonl").read_bytes() == kept.read_bytes()
    assert main(["select", "--groups", str(study["groups"]["teacher"]), "--stats", str(out), "--rule",
                 "keep_quantile_band", "--lo", "0.9", "--hi", "0.2", "--output", str(tmp_path / "k3.jsonl")]) == 2
    assert "empty or outside [0, 1]" in capsys.readouterr().err


def test_entropy_by_strategy_on_real_scores(study, tmp_path):
    # the teacher's own top-15 negatives are closer in score than random ones from its top 100, so the
    # teacher's ranking entropy over them is higher (the premise of the paper's entropy study)
    frames = {}
    for name in ("teacher", "random"):
        assert _diagnose(study, name, tmp_path / f"{name}.parquet", "--no-locality") == 0
        frames[name] = pd.read_parquet(tmp_path / f"{name}.parquet")
    col = "softmax_entropy_norm_T1_with_pos"
    assert frames["teacher"][col].median() > 1.5 * frames["random"][col].median()
    assert frames["teacher"]["positive_rank"].median() == 1
    assert not any(c.startswith("diameter") for c in frames["teacher"].columns)
    # --group-size 4: the positive and the first 3 negatives
    assert _diagnose(study, "teacher", tmp_path / "g4.parquet", "--no-locality", "--group-size", "4",
                     "--temperature", "2") == 0
    g4 = pd.read_parquet(tmp_path / "g4.parquet")
    assert g4["n_docs"].max() == 4 and "softmax_entropy_nats_T2_with_pos" in g4.columns
    meta = json.loads((tmp_path / "g4.parquet.meta.json").read_text())
    assert meta["group_size"] == 4 and meta["encoder"] is None


def test_diagnose_reads_the_groups_a_block_at_a_time_with_the_same_result(study, tmp_path, monkeypatch):
    """All groups, their pairs and a dict of every score were held at once (about 20 GB for MS MARCO); blocks
    of groups give the same rows, skips and sidecar."""
    import rankdistill.teachers
    from rankdistill.diagnostics import job

    opened = []
    store_class = rankdistill.teachers.ScoreStore
    monkeypatch.setattr(rankdistill.teachers, "ScoreStore", lambda *a, **k: opened.append(a) or store_class(*a, **k))
    assert _diagnose(study, "random", tmp_path / "whole.parquet", "--no-locality") == 0
    assert len(opened) == 1  # the store was opened twice, once to resolve the teacher and once to read
    monkeypatch.setattr(job, "DIAGNOSE_BLOCK", 7)
    assert _diagnose(study, "random", tmp_path / "blocks.parquet", "--no-locality") == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "blocks.parquet"),
                                  pd.read_parquet(tmp_path / "whole.parquet"))
    metas = [json.loads((tmp_path / f"{n}.parquet.meta.json").read_text()) for n in ("whole", "blocks")]
    assert metas[0] == metas[1] and metas[0]["n_groups"] == 43 > 7


def test_entropy_vs_gain_plot(study, tmp_path, capsys):
    from rankdistill.data import read_qrels, read_run
    from rankdistill.evaluation import evaluate_run, write_per_query

    root = study["manifest"].parent
    qrels = read_qrels(root / "qrels.dl19-passage.txt")
    files = []
    for run in ("bm25", "d_bert_kd_tasb"):
        res = evaluate_run(read_run(root / "runs" / f"run.dl19.{run}.top100.trec"), qrels, ["nDCG@10"], 2)
        files.append(tmp_path / f"{run}.tsv")
        write_per_query(res.per_query, files[-1])
    stats = tmp_path / "bm25_groups.parquet"
    assert _diagnose(study, "bm25", stats, "--no-locality") == 0
    capsys.readouterr()
    plots = tmp_path / "plots"
    assert main(["compare", "--per-query", *map(str, files), "--names", "bm25", "tasb", "--margin", "0.01",
                 "--bootstrap", "0", "--plot-dir", str(plots), "--diagnostics", str(stats), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in out["plots"]) == ["entropy_vs_gain_tasb.png", "entropy_vs_gain_tasb.svg",
                                                          "tost_forest.png", "tost_forest.svg"]
    svg = (plots / "entropy_vs_gain_tasb.svg").read_text()
    assert "softmax_entropy_nats_T1_with_pos" in svg and "nDCG@10: tasb - bm25" in svg and "Spearman rho" in svg
    forest = (plots / "tost_forest.svg").read_text()
    assert "nDCG@10 difference to bm25 (90% CI; margin ±0.01)" in forest and "tasb (different)" in forest


@pytest.mark.parametrize("case", ["duplicate", "no_store", "teacher", "alpha", "empty", "no_scores", "one_doc",
                                  "constant", "plot_with"])
def test_diagnose_bad_input_exits_2(study, tmp_path, capsys, case):
    groups, store, extra = study["groups"]["teacher"], study["store"], ["--no-locality"]
    gs = read_groups(groups)
    if case == "duplicate":
        groups = tmp_path / "dup.jsonl"
        write_groups([*gs[:3], gs[1]], groups)
        expect = f"dup.jsonl:4: query {gs[1].query_id!r} has a second group (first on line 2)"
    elif case == "no_store":
        store, expect = tmp_path / "nope.db", "score store not found"
    elif case == "teacher":
        extra, expect = [*extra, "--teacher-id", "monoT5"], "teacher 'monoT5' not in the score store; known: tasb"
    elif case == "alpha":
        extra, expect = ["--alpha", "1.5"], "alpha must be in (0, 1]"
    elif case == "empty":
        groups = tmp_path / "empty.jsonl"
        groups.write_text("")
        expect = "the groups file has no groups"
    elif case == "no_scores":
        groups = tmp_path / "other.jsonl"
        write_groups([Group("q-unknown", ["a"], ["b", "c"])], groups)
        expect = "no score of teacher 'tasb' for these groups"
    elif case == "one_doc":
        groups = tmp_path / "single.jsonl"
        write_groups([Group(g.query_id, g.positive_ids, []) for g in gs], groups)
        expect = "no group could be diagnosed (one document (entropy undefined): 43)"
    elif case == "constant":
        from rankdistill.teachers import ScoreStore

        store = tmp_path / "const.db"
        with ScoreStore(store) as st:
            st.put("flat", [(g.query_id, d, 1.0) for g in gs[:5] for d in g.positive_ids + g.negative_ids])
        groups = tmp_path / "five.jsonl"
        write_groups(gs[:5], groups)
        expect = "teacher 'flat' gives constant scores in every group"
    else:
        extra, expect = [*extra, "--plot-dir", str(tmp_path), "--plot-with", "x.parquet"], "is not NAME=PARQUET"
    rc = main(["diagnose", "--dataset", str(study["manifest"]), "--groups", str(groups), "--scores", str(store),
               "--output", str(tmp_path / "out.parquet"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert expect in err[-1] and err[-1].startswith("rankdistill diagnose: error:")
    assert not (tmp_path / "out.parquet").exists()
