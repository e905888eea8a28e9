"""Result tables (exact Markdown/LaTeX) and each figure rendered from small real inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.image import imread

from rankdistill.diagnostics import robust_diameter, softmax_entropy
from rankdistill.reports import (
    Cell,
    CostPoint,
    ResultsTable,
    plot_cost_vs_effectiveness,
    plot_diameter_per_strategy,
    plot_entropy_histograms,
    plot_entropy_vs_gain,
    plot_tost_forest,
    to_latex,
    to_markdown,
)
from rankdistill.reports.tables import latex_escape
from rankdistill.stats import paired_tost

D19, D20 = ("dl19", "nDCG@10"), ("dl20", "nDCG@10")
TABLE = ResultsTable(
    row_header=("strategy", "loss"),
    rows=(("bm25", "kl"), ("random", "margin_mse")),
    columns=(D19, D20),
    cells={(("bm25", "kl"), D19): Cell(0.7, "a"), (("random", "margin_mse"), D19): Cell(0.65, "ab"),
           (("bm25", "kl"), D20): Cell(0.6, "b")},
)


def test_markdown_table_exact():
    md = to_markdown(TABLE)
    assert md.splitlines()[:4] == [
        "| strategy | loss | dl19 nDCG@10 | dl20 nDCG@10 |",
        "|:---|:---|---:|---:|",
        "| bm25 | kl | **0.7000**<sup>a</sup> | **0.6000**<sup>b</sup> |",
        "| random | margin_mse | 0.6500<sup>ab</sup> | – |",
    ]
    assert "not transitive" in md


def test_latex_table_exact():
    tex = to_latex(TABLE, digits=3)
    assert tex.splitlines()[:10] == [
        r"\begin{tabular}{llrr}",
        r"\toprule",
        r" &  & \multicolumn{1}{c}{dl19} & \multicolumn{1}{c}{dl20} \\",
        r"\cmidrule(lr){3-3} \cmidrule(lr){4-4}",
        r"strategy & loss & nDCG@10 & nDCG@10 \\",
        r"\midrule",
        r"bm25 & kl & \textbf{0.700}$^{a}$ & \textbf{0.600}$^{b}$ \\",
        r"random & margin\_mse & 0.650$^{ab}$ & -- \\",
        r"\bottomrule",
        r"\end{tabular}",
    ]
    assert latex_escape("a_b & 50% #1 {x} ~^\\") == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{}\^{}\textbackslash{}"


def test_latex_groups_metrics_under_collection():
    cols = (("dl19", "nDCG@10"), ("dl19", "AP"), ("dl20", "nDCG@10"))
    t = ResultsTable(("system",), (("a",), ("b",)), cols,
                     {(("a",), c): Cell(0.5) for c in cols} | {(("b",), c): Cell(0.4) for c in cols})
    tex = to_latex(t)
    assert r"\multicolumn{2}{c}{dl19} & \multicolumn{1}{c}{dl20}" in tex
    assert r"\cmidrule(lr){2-3} \cmidrule(lr){4-4}" in tex
    assert "superscripts" not in tex  # no letters, no caveat


def _real_scores(trecdl_manifest):
    """Teacher-score groups from the shipped DL19 runs: each run's top-16 scores per query, as a 'strategy'."""
    from rankdistill.data import read_run
    from rankdistill.data.runs import ranked

    runs = {}
    for name, f in (("bm25", "bm25"), ("tasb", "d_bert_kd_tasb")):
        run = read_run(trecdl_manifest.parent / "runs" / f"run.dl19.{f}.top100.trec")
        runs[name] = {q: np.array([s for _, s in ranked(docs)[:16]]) for q, docs in run.items()}
    return runs


def _svg_text(path):
    text = path.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    return text


def _png_ok(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_entropy_histograms_real(trecdl_manifest, tmp_path):
    runs = _real_scores(trecdl_manifest)
    ent = {name: [softmax_entropy(t) for t in groups.values()] for name, groups in runs.items()}
    paths = plot_entropy_histograms(ent, tmp_path / "hist", xlabel="softmax entropy (nats, T=1) over top-16")
    assert [p.name for p in paths] == ["hist.png", "hist.svg"]
    _png_ok(paths[0])
    svg = _svg_text(paths[1])
    assert "softmax entropy (nats, T=1) over top-16" in svg and ">density<" in svg
    assert "bm25 (n=43)" in svg and "tasb (n=43)" in svg
    # reproducible bytes
    again = plot_entropy_histograms(ent, tmp_path / "hist2", xlabel="softmax entropy (nats, T=1) over top-16")
    assert again[1].read_bytes() == paths[1].read_bytes()
    assert again[0].read_bytes() == paths[0].read_bytes()


def test_diameter_plot_real_embeddings(trecdl_manifest, tiny_bert_dir, tmp_path):
    import torch

    from rankdistill.data import load_dataset, read_run
    from rankdistill.data.runs import ranked
    from rankdistill.models.embeddings import encode_texts

    torch.set_num_threads(1)
    ds = load_dataset(trecdl_manifest)
    diam = {}
    for name, f in (("bm25", "bm25"), ("tasb", "d_bert_kd_tasb")):
        run = read_run(trecdl_manifest.parent / "runs" / f"run.dl19.{f}.top100.trec")
        qids = sorted(run)[:8]
        docs = {q: [d for d, _ in ranked(run[q])[:8]] for q in qids}
        texts = [ds.corpus.text(d) for q in qids for d in docs[q]]
        emb = encode_texts(texts, model=str(tiny_bert_dir), max_length=64, cache_dir=False).reshape(8, 8, -1)
        diam[name] = [robust_diameter(e, 0.95, "cosine") for e in emb]
    paths = plot_diameter_per_strategy(diam, tmp_path / "diam", ylabel="robust diameter (q95, cosine, tiny-bert)")
    _png_ok(paths[0])
    svg = _svg_text(paths[1])
    assert "robust diameter (q95, cosine, tiny-bert)" in svg and "sampling strategy" in svg
    assert ">bm25<" in svg and ">tasb<" in svg


def test_entropy_vs_gain_real(trecdl_manifest, tmp_path):
    from rankdistill.data import read_qrels, read_run
    from rankdistill.evaluation import evaluate_run

    root = trecdl_manifest.parent
    qrels = read_qrels(root / "qrels.dl19-passage.txt")
    per = {n: evaluate_run(read_run(root / "runs" / f"run.dl19.{f}.top100.trec"), qrels, ["nDCG@10"], 2)
           .per_query["nDCG@10"] for n, f in (("bm25", "bm25"), ("tasb", "d_bert_kd_tasb"))}
    gain = {q: per["tasb"][q] - per["bm25"][q] for q in per["bm25"]}
    ent = {q: softmax_entropy(t) for q, t in _real_scores(trecdl_manifest)["tasb"].items()}
    paths, corr = plot_entropy_vs_gain(ent, gain, tmp_path / "evg", ylabel="nDCG@10 gain of TAS-B over BM25")
    from scipy.stats import spearmanr

    q = sorted(gain)
    assert corr.n == 43
    assert corr.rho == pytest.approx(spearmanr([ent[k] for k in q], [gain[k] for k in q]).statistic)
    svg = _svg_text(paths[1])
    assert "nDCG@10 gain of TAS-B over BM25" in svg and "teacher softmax entropy (nats, T=1)" in svg
    assert f"Spearman rho = {corr.rho:.3f}, n = 43" in svg
    _png_ok(paths[0])
    with pytest.raises(ValueError, match="at least 3 queries"):
        plot_entropy_vs_gain({"a": 1.0}, {"a": 0.1}, tmp_path / "x")


def test_forest_and_cost_real(trecdl_manifest, tmp_path):
    from rankdistill.data import read_qrels, read_run
    from rankdistill.evaluation import evaluate_run

    root = trecdl_manifest.parent
    qrels = read_qrels(root / "qrels.dl19-passage.txt")
    runs = {"bm25": "bm25", "rm3": "bm25_rm3", "tasb": "d_bert_kd_tasb"}
    per = {n: evaluate_run(read_run(root / "runs" / f"run.dl19.{f}.top100.trec"), qrels, ["nDCG@10"], 2)
           .per_query["nDCG@10"] for n, f in runs.items()}
    q = sorted(per["bm25"])
    base = np.array([per["bm25"][k] for k in q])
    results = [(n, paired_tost(np.array([per[n][k] for k in q]), base, 0.02, 0.05)) for n in ("rm3", "tasb")]
    paths = plot_tost_forest(results, tmp_path / "forest", xlabel="nDCG@10 difference to BM25")
    svg = _svg_text(paths[1])
    assert "nDCG@10 difference to BM25 (90% CI; margin ±0.02)" in svg
    assert "rm3 (inconclusive)" in svg and "tasb (different)" in svg
    _png_ok(paths[0])
    means = {n: float(np.mean(list(v.values()))) for n, v in per.items()}
    pts = [CostPoint("bm25", 1.0, means["bm25"]), CostPoint("rm3", 2.0, means["rm3"]),
           CostPoint("tasb", 40.0, means["tasb"], means["tasb"] - 0.05, means["tasb"] + 0.05),
           CostPoint("nan", math.nan, 0.3)]
    paths = plot_cost_vs_effectiveness(pts, tmp_path / "cost.png", xlabel="GPU hours", ylabel="nDCG@10",
                                       log_cost=True)
    assert [p.name for p in paths] == ["cost.png", "cost.svg"]
    svg = _svg_text(paths[1])
    assert "GPU hours" in svg and "nDCG@10" in svg and "Pareto front" in svg and ">nan<" not in svg
    _png_ok(paths[0])


def test_loss_epoch_means_and_their_change_hand_computed():
    from rankdistill.experiments.report import _epoch_means, _relative_change

    # 7 steps of 3 per epoch: epochs [0, 1, 2] and [3, 4, 5]; the unfinished third epoch (step 6) is left out
    assert _epoch_means([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 60.0], 3) == [1.0, 4.0]
    # the study's cells: 202 steps of 101 per epoch
    assert _epoch_means([float(i) for i in range(202)], 101) == [50.0, 151.0]
    assert _epoch_means([1.0, 2.0], 5) == []
    # relative changes -0.5 and -0.3: mean -0.4, sd 0.1414, t(0.95, 1) = 6.3138 -> half-width 0.6314
    assert _relative_change([(2.0, 1.0), (1.0, 0.7)]) == "-40.0% [-103.1, +23.1]"
    assert _relative_change([(2.0, 1.0)]) == "-50.0%"
    assert _relative_change([(0.0, 1.0)]) == "-"
