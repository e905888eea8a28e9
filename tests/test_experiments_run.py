"""`rankdistill run` end to end on a tiny grid: report, reuse, determinism, kill -9 and resume, Ray."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rankdistill.cli import main

CONFIG = """
name = "tiny"
notes = ["A tiny grid for the test suite."]
[train]
dataset = "{data}/cranfield"
split = "train"
max_queries = 10
[[test]]
name = "cranfield"
dataset = "{data}/cranfield"
split = "test"
depth = 10
[teacher]
model = "{teacher}"
max_length = 64
batch_size = 32
[mining]
depth = 20
pool = 6
teacher_top = 10
dense_model = "{encoder}"
[diagnostics]
encoder = "{encoder}"
[grid]
strategies = ["random", "teacher", "ensemble"]
losses = ["lce", "kl"]
archs = ["bi"]
group_sizes = [4]
seeds = [0]
[student]
model = "{encoder}"
max_length = 48
query_max_length = 16
batch_size = 4
lr = 1e-4
budget_docs = 48
[executor]
kind = "{executor}"
"""


def _config(tmp: Path, shared_data: Path, teacher: Path, encoder: Path, executor: str = "local") -> Path:
    p = tmp / f"tiny-{executor}.toml"
    p.write_text(CONFIG.format(data=shared_data, teacher=teacher, encoder=encoder, executor=executor))
    return p


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shared_data, tiny_cross_encoder_dir, tiny_bert_dir):
    """One uninterrupted local run, the yardstick of the other tests."""
    tmp = tmp_path_factory.mktemp("study")
    cfg = _config(tmp, shared_data, tiny_cross_encoder_dir, tiny_bert_dir)
    out = tmp / "out"
    os.environ["RANKDISTILL_CACHE"] = str(tmp / "cache")
    assert main(["run", str(cfg), "--output", str(out)]) == 0
    return cfg, out


def test_report_has_every_section(reference):
    _, out = reference
    text = (out / "report.md").read_text()
    for heading in ("## Reference: first stage and teacher", "## Main results", "## Equivalence to the random baseline",
                    "## Diagnostics per strategy", "## Cost", "## The paper's claims, read from this run",
                    "## Training convergence"):
        assert heading in text
    conv = [line for line in text.split("## Training convergence")[1].splitlines() if line.startswith("| bi |")]
    assert [line.split(" | ")[1:4] for line in conv] == [["lce", "all queries", "3"], ["kl", "all queries", "3"]]
    # 3 strategies x 2 losses in the main table, and 2 TOST rows per loss (teacher, ensemble vs random)
    assert sum(line.startswith(("| random |", "| teacher |", "| ensemble |")) for line in text.splitlines()) >= 6
    before = text.split("## Training convergence")[0]
    assert before.count("| bi | kl |") == 2 and before.count("| bi | lce |") == 2
    assert "A tiny grid for the test suite." in text
    # the diagnostics say how much of each strategy's pools mining filled up with random documents
    diag_rows = {r.split(" | ")[0][2:]: r.split(" | ") for r in text.split("## Diagnostics per strategy")[1]
                 .split("##")[0].splitlines() if r.startswith(("| random |", "| teacher |", "| ensemble |"))}
    assert "random fill-up" in text and diag_rows["random"][-1] == "0.000 |"
    assert all(0 <= float(r[-1].rstrip(" |")) <= 1 for r in diag_rows.values())
    # each claim with the test its form needs: "adds little" over the 2 kl comparisons (teacher, ensemble vs
    # random on one collection), locality as paired per-query diameter shifts with intervals
    claims = text.split("## The paper's claims, read from this run")[1]
    assert re.search(r"- \*bi-encoders\*: [0-2] of 2 comparisons show a gain below \+0\.01 .*the run \*\*"
                     r"(supports|contradicts|does not settle)\*\*", claims)
    assert re.search(r"under lce [0-2] of 2 comparisons differ from random .* under distillation [0-2] of 2 ", claims)
    claims_json = json.loads((out / "report.json").read_text())["claims"]
    little = claims_json["adds_little_under_distillation"]["bi"]
    assert little["n"] == 2 and little["verdict"] in ("supported", "contradicted", "undetermined")
    assert f"{len(little['shown_little'])} of 2 comparisons" in claims
    assert set(claims_json["locality"]) == {"teacher", "ensemble"}
    assert claims_json["locality"]["teacher"]["n"] == 10
    assert claims_json["sampler_matters_more_under_lce"]["bi"]["lce"]["n"] == 2
    for s in ("teacher", "ensemble"):
        assert re.search(s + r": mean [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\], median [+-]\d\.\d{3}, "
                         r"smaller for \d+% of 10 queries", claims)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 3
    assert "<ul>\n<li><i>bi-encoders</i>: " in page and "<b>Elaborate sampling adds little" in page
    for plot in ("tost_forest", "entropy_histograms", "diameter_per_strategy", "cost_vs_effectiveness",
                 "teacher_calls_vs_effectiveness"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["artifacts"] == 6
    assert set(manifest["stages"]) >= {"candidates", "teacher", "mine", "score", "diagnose", "train", "evaluate"}
    # strategies share one store of teacher scores: the ensemble's BM25 candidates were scored for the teacher
    # strategy already, so it scores fewer pairs than it needs
    costs = {r.split("|")[1].strip(): r.split("|")[6:8] for r in (out / "costs.md").read_text().splitlines()
             if r.startswith("| ") and not r.startswith("| strategy")}
    needed, scored = (int(x) for x in costs["ensemble"])
    assert 0 < scored < needed
    assert len(list((out / "cache" / "teacher-scores").glob("*.db"))) == 1
    # each labelling store holds exactly its groups' pairs, also where mining scored many more (teacher: the
    # top 20 of every query), and counts as its labelling calls the pairs that mining had not scored
    from rankdistill.data.groups import iter_groups
    from rankdistill.teachers.store import ScoreStore

    for sm in (out / "artifacts" / "score").glob("*/manifest.json"):
        m = json.loads(sm.read_text())
        mine = out / "artifacts" / "mine" / m["inputs"]["groups"]["hash"]
        pairs = {(g.query_id, d) for _, g in iter_groups(mine / "groups.jsonl")
                 for d in (*g.positive_ids, *g.negative_ids)}
        with ScoreStore(sm.parent / "scores.db", readonly=True) as store:
            held = set(store.get_many(store.resolve_teacher(), pairs))
            assert held == pairs and store.count() == len(pairs) == m["info"]["pairs"]
        mined = mine / "mining-scores.db"
        if mined.exists():
            with ScoreStore(mined, readonly=True) as store:
                assert store.count() > len(pairs)
                assert m["info"]["teacher_calls"] == len(pairs) - len(store.get_many(store.resolve_teacher(), pairs))
    train = next((out / "artifacts" / "train").glob("[0-9a-f]*"))
    assert json.loads((train / "manifest.json").read_text())["info"]["realised_docs"] == 48


def test_rerun_does_no_work_and_writes_the_same_report(reference, caplog):
    cfg, out = reference
    before = (out / "report.md").read_bytes()
    stamp = {p: p.stat().st_mtime_ns for p in (out / "artifacts").glob("*/*/manifest.json")}
    import logging

    with caplog.at_level(logging.INFO, logger="rankdistill.run"):
        assert main(["run", str(cfg), "--output", str(out)]) == 0
    assert (out / "report.md").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in (out / "artifacts").glob("*/*/manifest.json")} == stamp
    steps = [r.getMessage() for r in caplog.records if "] " in r.getMessage() and "/" in r.getMessage()]
    assert steps and all("(reused)" in s for s in steps if "elapsed" in s)


def test_kill_9_and_resume_gives_the_same_report(reference, tmp_path):
    cfg, ref_out = reference
    out = tmp_path / "out"
    env = {**os.environ, "RANKDISTILL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rankdistill.cli", "-q", "run", str(cfg), "--output", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    trained = out / "artifacts" / "train"
    while time.time() < deadline and proc.poll() is None:
        if trained.exists() and len(list(trained.glob("[0-9a-f]*"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "report.md").exists()
    done = len(list(trained.glob("[0-9a-f]*")))
    assert 2 <= done < 6
    assert subprocess.run(cmd, env=env).returncode == 0
    assert (out / "report.md").read_bytes() == (ref_out / "report.md").read_bytes()


def test_a_scoring_stage_killed_mid_way_counts_its_teacher_calls_as_an_uninterrupted_one(reference, tmp_path,
                                                                                          monkeypatch):
    """The labelling stage counted its teacher calls from what the killed attempt had left in its store, and
    the pairs it computed from the shared store's growth since the restart: the cost table undercounted both."""
    from rankdistill.experiments import runner
    from rankdistill.teachers.store import ScoreStore

    cfg, ref_out = reference
    out = tmp_path / "out"
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path / "cache"))
    real_call, real_put = runner.call_verb, ScoreStore.put
    puts = []

    def dies_mid_way(self, teacher, rows):
        puts.append(1)
        if len(puts) == 3:  # the pairs found in the shared store are copied, the first batch scored into it
            raise KeyboardInterrupt
        return real_put(self, teacher, rows)

    def call(argv):
        if argv[0] == "score" and not puts:
            monkeypatch.setattr(ScoreStore, "put", dies_mid_way)
        real_call(argv)

    monkeypatch.setattr(runner, "call_verb", call)
    assert main(["run", str(cfg), "--output", str(out)]) == 130  # as a Ctrl-C ends it
    assert len(list((out / "artifacts" / "score").glob(".*.partial/scores.db"))) == 1
    monkeypatch.setattr(ScoreStore, "put", real_put)
    assert main(["run", str(cfg), "--output", str(out)]) == 0

    def infos(root: Path, stage: str) -> dict:
        return {p.parent.name: json.loads(p.read_text())["info"] for p in (root / "artifacts" / stage).glob(
            "*/manifest.json")}

    assert infos(out, "score") == infos(ref_out, "score") and infos(out, "mine") == infos(ref_out, "mine")

    def calls(root: Path) -> list[list[str]]:  # the costs table's teacher calls (its seconds are the machine's)
        return [r.split(" | ")[5:7] for r in (root / "costs.md").read_text().splitlines() if r.startswith("| ")]

    assert calls(out) == calls(ref_out) and len(calls(out)) == 4
    assert not list((out / "artifacts").rglob(".rows-at-start-*"))


def test_ray_executor_gives_the_same_report(reference, tmp_path, shared_data, tiny_cross_encoder_dir, tiny_bert_dir):
    pytest.importorskip("ray")
    _, ref_out = reference
    cfg = _config(tmp_path, shared_data, tiny_cross_encoder_dir, tiny_bert_dir, executor="ray")
    out = tmp_path / "out"
    os.environ["RANKDISTILL_CACHE"] = str(tmp_path / "cache")
    assert main(["run", str(cfg), "--output", str(out)]) == 0
    ref = (ref_out / "report.md").read_text()
    assert (out / "report.md").read_text().replace("tiny-ray.toml", "tiny-local.toml") == ref


def test_bad_config_exit_2(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text('[train]\ndataset = "x"\n[[test]]\nname = "t"\ndataset = "x"\n[grid]\nlosses = ["klx"]\n')
    assert main(["run", str(p), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "'grid.losses' has unknown value 'klx'" in err
    assert not (tmp_path / "o").exists()


def test_bad_input_found_before_any_stage_finished_leaves_no_output_folder(tmp_path, capsys):
    """A corpus line cut short is found by the first stage: the run stopped with exit 2 but left its folder,
    config.resolved.json and an empty artifacts/candidates/ behind. An existing folder (a run to resume) stays."""
    data = tmp_path / "tiny"
    (data / "qrels").mkdir(parents=True)
    docs = [json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about wings"}) for i in range(8)]
    docs[4] = docs[4][:20]
    (data / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"wings {i}"}) + "\n"
                                                for i in range(4)))
    for split in ("train", "test"):
        (data / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"q{i}\td{i}\t1\n" for i in ((0, 1) if split == "train" else (2, 3))))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'name = "c"\n[train]\ndataset = "{data}"\n[[test]]\nname = "t"\ndataset = "{data}"\n'
                   '[grid]\nstrategies = ["random", "bm25"]\nlosses = ["lce"]\n')
    os.environ["RANKDISTILL_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--output", str(out)]) == 2
    assert "corpus.jsonl:5: not valid JSON" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("an earlier run's\n")
    assert main(["run", str(cfg), "--output", str(out)]) == 2
    assert (out / "keep.txt").is_file()


def test_changing_one_axis_reruns_only_what_depends_on_it(reference, tmp_path):
    import shutil

    cfg, ref_out = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    changed = tmp_path / "more-seeds.toml"
    changed.write_text(cfg.read_text().replace("seeds = [0]", "seeds = [0, 1]"))
    before = {p.parent.name for p in (out / "artifacts").glob("*/*/manifest.json")}
    assert main(["run", str(changed), "--output", str(out)]) == 0
    after = {p.parent.parent.name + "/" + p.parent.name for p in (out / "artifacts").glob("*/*/manifest.json")}
    new = sorted(a for a in after if a.split("/")[1] not in before)
    # six new cells (seed 1) and their evaluations; mining, scoring, diagnostics and candidates are reused
    assert sorted({a.split("/")[0] for a in new}) == ["evaluate", "train"]
    assert sum(a.startswith("train/") for a in new) == 6
    report = (out / "report.md").read_text()
    assert "## Spread over seeds" in report
    # each comparison against random is also tested within each seed: a letter per seed beside the verdict
    tost = [line for line in report.splitlines() if line.startswith("| bi |") and line.count("|") == 11]
    assert len(tost) == 4 and all(re.search(r"\| (equivalent|different|inconclusive) \| [edi] [edi] \|$", line)
                                  for line in tost), tost
    assert "| verdict of the seed average | comparisons | given by every seed on its own |" in report
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["artifacts"] == 12


def test_budget_study_trains_only_its_cells_and_compares_each_budget_with_the_studys(reference, tmp_path):
    import shutil

    cfg, ref_out = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    changed = tmp_path / "budgets.toml"
    changed.write_text(cfg.read_text() + '[budget_study]\nbudgets = [96]\nstrategies = ["random", "teacher"]\n'
                       'losses = ["kl"]\n')
    before = {p.parent.name for p in (out / "artifacts").glob("*/*/manifest.json")}
    assert main(["run", str(changed), "--output", str(out)]) == 0
    after = {p.parent.parent.name + "/" + p.parent.name for p in (out / "artifacts").glob("*/*/manifest.json")}
    new = sorted(a for a in after if a.split("/")[1] not in before)
    # the grid's cells keep their keys: only the two cells at 96 documents (twice the study's 48) and their
    # evaluations are new
    assert sorted({a.split("/")[0] for a in new}) == ["evaluate", "train"]
    trained = [json.loads((out / "artifacts" / a / "manifest.json").read_text()) for a in new if a.startswith("train/")]
    assert sorted(m["settings"]["cell"]["strategy"] for m in trained) == ["random", "teacher"]
    assert all(m["settings"]["cell"]["budget"] == 96 and m["info"]["realised_docs"] == 96 for m in trained)
    report = (out / "report.md").read_text()
    ref_report = (ref_out / "report.md").read_text()
    main_part = report.split("## Main results")[1].split("## Equivalence")[0]
    assert main_part == ref_report.split("## Main results")[1].split("## Equivalence")[0]
    section = report.split("## Budget study")[1].split("\n## ")[0]
    assert "| 48 docs | the study's | 1.5 |" in section and "| 96 docs | compared with it | 3 |" in section
    rows = [r for r in section.splitlines() if r.startswith("| bi | kl |")]
    assert [r.split(" | ")[2:5] for r in rows] == [["random", "96 docs", "cranfield"],
                                                   ["teacher", "96 docs", "cranfield"]]
    assert "Of 2 comparisons" in section and (out / "plots" / "budget_forest.png").stat().st_size > 1000
    assert "| bi | kl | all queries, 96 docs | 2 |" in report.split("## Training convergence")[1]
    # the cost table is the study's budget only
    assert report.split("## Cost")[1].count("| 48 |") == 3


def test_entropy_study_and_process_pool(reference, tmp_path):
    """An entropy study (cross-encoders on entropy bands of one strategy) beside the grid, a full-retrieval
    test that only bi-encoders take, and cells run by a pool of two processes."""
    import shutil

    cfg, ref_out = reference
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    text = cfg.read_text().replace('[executor]\nkind = "local"', '[executor]\nkind = "processes"\nworkers = 2')
    text = text.replace("[teacher]", '[[test]]\nname = "cranfield-dense"\ndataset = "{}"\nsplit = "test"\n'
                        'mode = "retrieve"\ndepth = 10\n[teacher]'.format(text.split('dataset = "')[1].split('"')[0]))
    text += ('[entropy_study]\nstrategy = "teacher"\narchs = ["cross"]\nlosses = ["lce"]\n'
             'bands = ["keep_below_median", "keep_above_median"]\n')
    changed = tmp_path / "entropy.toml"
    changed.write_text(text)
    assert main(["run", str(changed), "--output", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["artifacts"] == 6 + 3  # grid + cross-encoders on all, below, above median
    assert manifest["stages"]["select"]["artifacts"] == 2
    # every grid cell on both tests, the three cross-encoders on the re-ranking test only; references: first stage
    # and untrained bi-encoder on both tests, the teacher on the re-ranking test
    assert manifest["stages"]["evaluate"]["artifacts"] == 6 * 2 + 3 + 2 * 2 + 1
    report = (out / "report.md").read_text()
    assert "## Entropy study" in report
    assert "| keep_below_median | [0, 0.5] |" in report and "| keep_above_median | (0.5, 1] |" in report
    band_rows = [line for line in report.splitlines() if line.startswith("| cross | lce | keep_")]
    assert len(band_rows) == 2 and all("cranfield" in r and "cranfield-dense" not in r for r in band_rows)
    assert "**Moderate entropy is best.**" in report and "**High entropy hurts.**" in report
    assert (out / "plots" / "entropy_bands_forest.png").stat().st_size > 1000
    assert "Cells ran up to 2 at a time" in (out / "costs.md").read_text()
    kept = [json.loads((p.parent / "groups.jsonl.meta.json").read_text())["n_kept"]
            for p in (out / "artifacts" / "select").glob("*/groups.jsonl")]
    assert sorted(kept) == [5, 5]
    # a strategy's training cost is its grid cells' (the band cells, teacher groups too, are the entropy study's)
    grid_seconds = sum(m["seconds"] for m in (json.loads(f.read_text()) for f in
                                              (out / "artifacts" / "train").glob("*/manifest.json"))
                       if m["settings"]["cell"]["strategy"] == "teacher"
                       and m["settings"]["cell"]["selection"] == "all" and m["settings"]["cell"]["arch"] == "bi")
    row = next(line for line in (out / "costs.md").read_text().splitlines() if line.startswith("| teacher |"))
    assert row.split(" | ")[3] == f"{grid_seconds:.1f}"


def test_bundle_carries_the_study_to_another_folder_without_models(reference, tmp_path):
    """A bundle holds no model files, resumes in another folder with no work done and the same report; a cell
    whose carried model is needed again is trained again; a pruned teacher that a stage needs is refused."""
    import shutil
    import tarfile

    from rankdistill.experiments import bundle

    cfg, ref_out = reference
    packed = bundle.pack(ref_out, tmp_path / "study.tar.xz")
    assert (tmp_path / "study.tar.xz").read_bytes()[:6] == b"\xfd7zXZ\x00"  # xz by its name
    with tarfile.open(tmp_path / "study.tar.xz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith((".safetensors", ".bin", "tokenizer.json", "mining-scores.db"))]
    assert any(n.endswith("/per_query.tsv") for n in names) and "report.md" in names
    # what the resumed run writes again is not carried
    assert (ref_out / "report.html").is_file() and (ref_out / "plots").is_dir()
    assert not [n for n in names if n in ("report.html", "report.json") or n.startswith("plots")]
    assert packed["pruned"] >= 6 + 1  # the six cells' models and the teacher's mining store at least
    gz = bundle.pack(ref_out, tmp_path / "study.tgz")
    assert (tmp_path / "study.tgz").read_bytes()[:2] == b"\x1f\x8b" and gz["bytes"] > packed["bytes"]
    with tarfile.open(tmp_path / "study.tgz") as tar:
        assert sorted(tar.getnames()) == sorted(names)
    counts = bundle.check(tmp_path / "study.tar.xz")  # writes nothing, counts the finished artifacts per stage
    assert counts["train"] == 6 and counts == bundle.check(tmp_path / "study.tgz")
    assert sum(counts.values()) == packed["artifacts"]
    assert counts["evaluate"] == len(list((ref_out / "artifacts" / "evaluate").glob("*/manifest.json")))
    moved = tmp_path / "elsewhere" / "out"
    assert bundle.main(["unpack", str(tmp_path / "study.tar.xz"), str(moved)]) == 0
    trained = sorted((moved / "artifacts" / "train").glob("[0-9a-f]*"))
    assert len(trained) == 6 and all((t / "PRUNED").is_file() for t in trained)
    assert not list(moved.glob("artifacts/*/*/model/model.safetensors"))
    stamp = {p: p.stat().st_mtime_ns for p in (moved / "artifacts").glob("*/*/manifest.json")}
    assert main(["run", str(cfg), "--output", str(moved)]) == 0
    assert (moved / "report.md").read_bytes() == (ref_out / "report.md").read_bytes()
    assert {p: p.stat().st_mtime_ns for p in (moved / "artifacts").glob("*/*/manifest.json")} == stamp

    # one evaluation of one cell is lost: that cell is trained again (same seed, same model on the CPU) and the
    # report is unchanged; the other cells stay pruned
    ev = next(p.parent for p in (moved / "artifacts" / "evaluate").glob("*/manifest.json")
              if "model" in json.loads(p.read_text())["inputs"])
    cell = json.loads((ev / "manifest.json").read_text())["inputs"]["model"]["hash"]
    shutil.rmtree(ev)
    assert main(["run", str(cfg), "--output", str(moved)]) == 0
    assert (moved / "report.md").read_bytes() == (ref_out / "report.md").read_bytes()
    assert (moved / "artifacts" / "train" / cell / "model" / "model.safetensors").is_file()
    assert not (moved / "artifacts" / "train" / cell / "PRUNED").exists()
    assert sum((t / "PRUNED").is_file() for t in trained) == 5

    # the teacher strategy's mining store was not carried: its scoring stage, if it has to run again, cannot,
    # and says which folder to delete
    scored = next(p.parent for p in (moved / "artifacts" / "score").glob("*/manifest.json")
                  if (moved / "artifacts" / "mine" / json.loads(p.read_text())["inputs"]["groups"]["hash"]
                      / "PRUNED").is_file())
    shutil.rmtree(scored)
    assert main(["run", str(cfg), "--output", str(moved)]) == 2
    assert not scored.exists() and not list(scored.parent.glob(".*.partial"))


def test_bundle_bad_input_exit_2(tmp_path, capsys):
    from rankdistill.experiments import bundle

    assert bundle.main(["pack", str(tmp_path), str(tmp_path / "b.tgz")]) == 2
    assert "no artifacts/" in capsys.readouterr().err
    # a pack that fails half-way leaves no file behind
    (tmp_path / "s" / "artifacts" / "train" / "abc").mkdir(parents=True)
    (tmp_path / "s" / "artifacts" / "train" / "abc" / "manifest.json").write_text("{}")
    (tmp_path / "s" / "artifacts" / "train" / "abc" / "PRUNED").write_text("not json")
    with pytest.raises(ValueError):
        bundle.pack(tmp_path / "s", tmp_path / "b.tar.xz")
    assert not list(tmp_path.glob("*b.tar.xz*"))
    (tmp_path / "junk.tgz").write_text("not a tar")
    assert bundle.main(["unpack", str(tmp_path / "junk.tgz"), str(tmp_path / "o")]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert bundle.main(["check", str(tmp_path / "junk.tgz")]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert bundle.main(["check", str(tmp_path / "absent.tar.xz")]) == 2
    assert "no such bundle" in capsys.readouterr().err
    assert not (tmp_path / "b.tgz").exists()
    assert not (tmp_path / "o").exists()


def test_a_truncated_or_corrupt_bundle_writes_nothing(reference, tmp_path, capsys):
    """tarfile reads a copy cut at a block boundary as a shorter valid archive: it installed artifacts without
    their manifest (a later unpack or run then crashed) and exited 0. Now the bundle is read through and
    checked against its index before anything is written; a killed unpack's leftovers are replaced."""
    import gzip
    import io
    import tarfile

    from rankdistill.experiments import bundle

    _, out = reference
    good = tmp_path / "b.tgz"
    bundle.pack(out, good)
    raw = gzip.decompress(good.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = [m.name for m in tar.getmembers()]
        cut = next(m for m in tar.getmembers() if m.name.endswith("groups.jsonl"))
        end = cut.offset_data + -(-cut.size // 512) * 512  # the tar cut right after a groups file
    assert names[0] == bundle.INDEX and "report.md" in names
    cases = {"blocks.tgz": gzip.compress(raw[:end] + b"\0" * 1024),
             "bytes.tgz": good.read_bytes()[:len(good.read_bytes()) // 2],
             "flipped.tgz": gzip.compress(raw[:end] + bytes(b ^ 0xFF for b in raw[end:end + 50]) + raw[end + 50:])}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert bundle.main(["check", str(tmp_path / name)]) == 2, name
        check_err = capsys.readouterr().err
        assert bundle.main(["unpack", str(tmp_path / name), str(tmp_path / name / "study")]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("truncated or corrupt" in err or "index lists" in err), (name, err)
        assert check_err == err  # check refuses it as unpack does
        assert not (tmp_path / name / "study").exists()
    # an unpack killed half-way left a .unpack folder and an artifact folder without its manifest
    study = tmp_path / "study"
    first = next(n for n in names if n.endswith("/manifest.json")).rsplit("/", 1)[0]
    (study / first).mkdir(parents=True)
    (study / first / "groups.jsonl").write_text("stale")
    (study / Path(first).parent / f".{Path(first).name}.unpack" / "x").mkdir(parents=True)
    counts = bundle.unpack(good, study)
    assert counts["kept_local"] == 0 and (study / first / "manifest.json").is_file()
    assert not (study / first / "groups.jsonl").exists() or (study / first / "groups.jsonl").read_text() != "stale"
    assert not list(study.glob("artifacts/*/.*.unpack"))


def test_untrained_reference_is_the_students_starting_point(reference, tmp_path):
    """The "untrained bi-encoder" row reads the students' model with their settings: their layers, pooling
    and token limits, not the checkpoint as it comes."""

    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Study
    from rankdistill.models.backbone import read_metadata

    cfg, ref_out = reference
    base = next((ref_out / "artifacts" / "base").glob("[0-9a-f]*"))
    meta = read_metadata(base / "model")
    assert (meta["max_query_length"], meta["max_doc_length"], meta["pooling"]) == (16, 48, "mean")
    assert json.loads((base / "model" / "config.json").read_text())["num_hidden_layers"] == 2
    study = Study(load_config(cfg, overrides=["student.layers=1"]), tmp_path / "out")
    one = study._base_encoder()
    assert one is not None and one.hash != base.name
    assert json.loads(one.file("model/config.json").read_text())["num_hidden_layers"] == 1


def test_model_settings_key_on_the_weights_they_resolve_to(reference, tmp_path, tiny_bert_dir, caplog):
    """An artifact key holds the fingerprint of the weights a model setting resolves to: the default encoder
    when the setting is unset (so a trained teacher is redone when the default checkpoint changes), the same
    weights in another folder give the same key, and one changed byte gives another."""
    import shutil

    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Study, _model_identity
    from rankdistill.io import fingerprint
    from rankdistill.models import bundled_model_path

    assert _model_identity(None) == fingerprint(bundled_model_path()) == _model_identity("all-MiniLM-L6-v2")
    moved = Path(shutil.copytree(tiny_bert_dir, tmp_path / "moved"))
    assert _model_identity(str(moved)) == _model_identity(str(tiny_bert_dir))
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert _model_identity(str(moved)) != _model_identity(str(tiny_bert_dir))

    cfg, out = reference
    expected = json.loads(json.dumps(_model_identity(str(tiny_bert_dir))))  # as a manifest holds it
    for stage, key in (("train", "model"), ("diagnose", "encoder")):
        manifests = [json.loads(p.read_text()) for p in (out / "artifacts" / stage).glob("*/manifest.json")]
        assert manifests and all(m["settings"][key] == expected for m in manifests)
    ensemble = [json.loads(p.read_text()) for p in (out / "artifacts" / "mine").glob("*/manifest.json")]
    assert [m["settings"]["encoder"] for m in ensemble if m["settings"]["strategy"] == "ensemble"] == [expected]

    # a trained teacher whose model is unset keys on the default encoder's weights
    text = re.sub(r'\[teacher\]\nmodel = "[^"]*"\n', "[teacher]\n", cfg.read_text())
    (tmp_path / "trained.toml").write_text(text + '\n[teacher.train]\nloss = "lce"\nbudget_docs = 64\n')
    study = Study(load_config(tmp_path / "trained.toml"), tmp_path / "out")
    seen: dict[str, dict] = {}

    class Done:
        hash = "0" * 16

        def file(self, name: str) -> Path:
            return tmp_path / name

    def record(stage, settings, inputs, fn, progress, label, seed=None):
        seen[stage] = settings
        return Done()

    study._run = record
    study.teacher()
    assert seen["teacher"]["model"] == fingerprint(bundled_model_path())
    assert seen["teacher"]["recipe"]["model"] is None

    # the study's folder holds a teacher made from another copy of the model: training it again says why
    made = tmp_path / "out" / "artifacts" / "teacher" / ("f" * 16)
    made.mkdir(parents=True)
    other = {**seen["teacher"], "model": _model_identity(str(tiny_bert_dir))}
    (made / "manifest.json").write_text(json.dumps({"settings": other, "inputs": {"groups": {"hash": Done.hash}}}))
    with caplog.at_level(logging.WARNING, logger="rankdistill.run"):
        study.teacher()
    assert "was made with other settings (model.files), so a new one is trained" in caplog.text


def test_mine_keys_hold_the_teachers_scoring_length_and_the_system_files_content(reference, tmp_path):
    """The mining stages that score with the teacher key on ``[teacher] max_length`` (a given teacher's key has
    no length; a trained one's holds its training length, which stands for it when the two agree), and an
    ensemble built from run files keys on their content, not only their names."""
    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Study

    cfg, _ = reference
    run_file = tmp_path / "system.trec"
    run_file.write_text("1 Q0 1 1 2.0 s\n1 Q0 2 2 1.0 s\n")
    text = cfg.read_text().replace("[mining]\n", '[mining]\nensemble_systems = ["bm25", "system.trec"]\n')
    (tmp_path / "c.toml").write_text(text)

    def mine_settings(overrides: list[str]) -> dict[str, dict]:
        study = Study(load_config(tmp_path / "c.toml", overrides=overrides), tmp_path / "out")
        seen: dict[str, dict] = {}

        class Done:
            hash = "0" * 16
            stage = "teacher"

        def record(stage, settings, inputs, fn, progress, label, seed=None):
            seen[label] = settings
            return Done()

        study._run = record
        study.teacher_art = Done()
        study.mine()
        return seen

    first = mine_settings([])
    assert first["teacher"]["teacher_max_length"] == 64 and "teacher_max_length" not in first["random"]
    assert mine_settings(["teacher.max_length=32"])["teacher"]["teacher_max_length"] == 32
    files = first["ensemble"]["system_files"]
    assert len(files) == 1 and "system_files" not in first["random"]
    run_file.write_text("1 Q0 2 1 2.0 s\n1 Q0 1 2 1.0 s\n")
    assert mine_settings([])["ensemble"]["system_files"] != files

    # a trained teacher scoring at its training length: the keys studies had before this setting was keyed
    trained = re.sub(r'\[teacher\]\nmodel = "[^"]*"\n', "[teacher]\n", text)
    (tmp_path / "c.toml").write_text(trained + '\n[teacher.train]\nloss = "lce"\nbudget_docs = 64\nmax_length = 64\n')
    assert "teacher_max_length" not in mine_settings([])["teacher"]
    assert mine_settings(["teacher.max_length=32"])["teacher"]["teacher_max_length"] == 32


def _cell_job(cfg: Path, tmp_path: Path, override: str, arch: str = "bi"):
    """The job of one kl cell on random groups under ``--set override``, its inputs standing in as finished."""
    from rankdistill.experiments.config import load_config
    from rankdistill.experiments.runner import Cell, Study

    class Done:
        hash = "0" * 16
        stage = "done"

        def file(self, name: str) -> Path:
            return tmp_path / name

    study = Study(load_config(cfg, overrides=[override]), tmp_path / "out")
    return study.cell_job(Cell(arch, "kl", "random", 8, "all", 0), {("random", "all"): Done()}, {"random": Done()},
                          {t.name: Done() for t in study.cfg.tests})


def test_student_bf16_setting_reaches_the_training_command(reference, tmp_path):
    """``student.bf16 = false`` trains in fp32 (``--bf16 off``); it was keyed but never passed on, so the
    students trained with bf16 autocast on a GPU whatever the config said."""
    cfg, _ = reference
    for value, flag in (("false", "off"), ("true", "auto")):
        job = _cell_job(cfg, tmp_path, f"student.bf16={value}")
        argv = [str(a) for a in job.train_argv]
        assert argv[argv.index("--bf16") + 1] == flag
        assert job.train_settings["student"]["bf16"] is (value == "true")


def test_student_deterministic_setting_reaches_the_training_command_and_is_keyed_only_when_on(reference, tmp_path):
    """``student.deterministic = true`` trains every cell with ``--deterministic``; off (the default) the cells'
    settings are those of studies run before the setting existed, so their artifacts are reused."""
    cfg, _ = reference
    jobs = {value: _cell_job(cfg, tmp_path, f"student.deterministic={value}", arch="cross")
            for value in ("false", "true")}
    assert "--deterministic" not in jobs["false"].train_argv and "--deterministic" in jobs["true"].train_argv
    assert "deterministic" not in jobs["false"].train_settings["student"]
    assert jobs["true"].train_settings["student"]["deterministic"] is True


def test_cross_fitted_teacher_labels_each_query_with_the_member_that_never_saw_it(
        tmp_path, shared_data, tiny_cross_encoder_dir, tiny_bert_dir):
    """``teacher.train.folds = 2``: two members, each trained on the other fold's queries with half the budget;
    every training query's labels (and teacher-mined negatives) come from the member that did not train on it,
    and the teacher's reference row re-ranks the test queries with both members' mean."""
    from rankdistill.data import load_dataset
    from rankdistill.data.groups import read_groups
    from rankdistill.teachers.crossfit import read_crossfit
    from rankdistill.teachers.models import TeacherConfig, load_teacher
    from rankdistill.teachers.store import ScoreStore

    text = _config(tmp_path, shared_data, tiny_cross_encoder_dir, tiny_bert_dir).read_text()
    text = re.sub(r'\[teacher\]\nmodel = "[^"]*"\n', "[teacher]\n", text)
    text = text.replace('strategies = ["random", "teacher", "ensemble"]', 'strategies = ["random", "teacher"]')
    text = text.replace('losses = ["lce", "kl"]', 'losses = ["kl"]')
    text += (f'[teacher.train]\nmodel = "{tiny_cross_encoder_dir}"\nloss = "lce"\ngroup_size = 4\nbatch_size = 2\n'
             'budget_docs = 64\nmax_length = 64\nfolds = 2\n')
    cfg = tmp_path / "crossfit.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--output", str(out)]) == 0
    [teacher] = list((out / "artifacts" / "teacher").glob("*/model"))
    plan = read_crossfit(teacher)
    info = json.loads((teacher.parent / "manifest.json").read_text())["info"]
    assert [m["realised_docs"] for m in info["members"]] == [32, 32] and info["realised_docs"] == 64
    mined = [json.loads(p.read_text()) for p in (out / "artifacts" / "mine").glob("*/manifest.json")]
    [teacher_groups] = [m for m in mined if "mining" not in m["settings"]]  # the teacher's own BM25 groups
    queries = [g.query_id for g in read_groups(out / "artifacts" / "mine" / teacher_groups["hash"] / "groups.jsonl")]
    assert len(queries) > 100  # the teacher trains on every training query (teacher.train.max_queries = 0)
    held = [set(queries) - s for s in plan.trained_on]
    assert abs(len(held[0]) - len(held[1])) <= 1 and held[0] | held[1] == set(queries) and not held[0] & held[1]
    ds = load_dataset(str(shared_data / "cranfield"))
    qs = ds.queries("train")
    members = [load_teacher(TeacherConfig(str(p), max_length=64, device="cpu")) for p in plan.members]
    dbs = list((out / "artifacts" / "score").glob("*/scores.db"))
    assert len(dbs) == 2  # the random and the teacher strategy's labels
    for db in dbs:
        with ScoreStore(db, readonly=True) as store:
            [tid] = store.teachers()
            rows = list(store.iter_rows(tid))
        assert len({q for q, _, _ in rows}) == 10  # the students' queries (train.max_queries)
        for m, t in enumerate(members):
            mine = [r for r in rows if r[0] in held[m]][:6]
            assert mine
            own = t.score([qs[q] for q, _, _ in mine], [ds.corpus.text(d) for _, d, _ in mine])
            assert [v for _, _, v in mine] == pytest.approx(list(own), abs=1e-5)
    for t in members:
        t.close()
    report = (out / "report.md").read_text()
    assert "| teacher |" in report and "The teacher is cross-fitted: 2 members" in report
    # the labels per member: the first diagnosed strategy's 10 training queries, each labelled by one member
    table = report.split("### Labels per cross-fitted member")[1].split("\n\n")[2].splitlines()[2:]
    assert [r.split(" | ")[0] for r in table] == ["| 0", "| 1"]
    assert sum(int(r.split(" | ")[1]) for r in table) == 10
    # a bundle carries the plan and the members' training summaries, not their weights
    import tarfile

    from rankdistill.experiments.bundle import pack

    pack(out, tmp_path / "b.tar.gz")
    rel = f"artifacts/teacher/{teacher.parent.name}/model/"
    names = {n[len(rel):] for n in tarfile.open(tmp_path / "b.tar.gz").getnames() if n.startswith(rel)}
    assert names == {"crossfit.json", "member-0/training.json", "member-0/losses.tsv", "member-1/training.json",
                     "member-1/losses.tsv"}
    # unpacked elsewhere without the members' weights, the study resumes with no work done and the same report
    # (the cross-fit sentence and the per-member table are read from what the bundle carries)
    from rankdistill.experiments.bundle import unpack

    moved = tmp_path / "elsewhere"
    unpack(tmp_path / "b.tar.gz", moved)
    assert not list(moved.glob("artifacts/teacher/*/model/member-*/*.safetensors"))
    stamp = {p: p.stat().st_mtime_ns for p in (moved / "artifacts").glob("*/*/manifest.json")}
    assert main(["run", str(cfg), "--output", str(moved)]) == 0
    assert (moved / "report.md").read_text() == report
    assert {p: p.stat().st_mtime_ns for p in (moved / "artifacts").glob("*/*/manifest.json")} == stamp
