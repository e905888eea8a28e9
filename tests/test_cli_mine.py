"""``rankdistill mine`` end to end: byte-identical output for a seed, the sidecar, teacher scores reused by
``rankdistill score``, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankdistill.cli import main
from rankdistill.data import read_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mine_is_byte_identical_for_a_seed_and_writes_a_sidecar(tmp_path, cranfield_dir, capsys):
    base = ["mine", "--dataset", str(cranfield_dir), "--split", "train", "--strategy", "bm25", "--group-size", "4",
            "--depth", "50"]
    assert main([*base, "--seed", "5", "--output", str(tmp_path / "a.jsonl")]) == 0
    assert "mined 150 groups (bm25, group size 4, pool 8; 0 short, 0 skipped" in capsys.readouterr().out
    assert main([*base, "--seed", "5", "--output", str(tmp_path / "b.jsonl")]) == 0
    assert main([*base, "--seed", "6", "--output", str(tmp_path / "c.jsonl")]) == 0
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes()
    assert a != (tmp_path / "c.jsonl").read_bytes()
    first = json.loads(a.decode().splitlines()[0])
    assert list(first) == ["query_id", "positive_ids", "negative_ids", "strategy", "seed"]  # the design's format
    assert (first["strategy"], first["seed"], len(first["negative_ids"])) == ("bm25", 5, 8)
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert meta["settings"]["group_size"] == 4 and meta["settings"]["pool_size"] == 8
    assert meta["settings"]["seed"] == 5 and meta["dataset"]["split"] == "train"
    assert meta["counts"]["groups"] == 150 and meta["counts"]["queries_short"] == 0
    assert meta["counts"]["false_negatives_dropped"] == 0
    assert meta["strategy_settings"]["max_rank"] == 50 and meta["seconds"] >= 0


def test_mine_gives_the_same_bytes_in_another_process(tmp_path, cranfield_dir):
    """Nothing depends on Python's per-process string hashing (set order): a subprocess with another
    PYTHONHASHSEED writes the same file."""
    args = ["mine", "--dataset", str(cranfield_dir), "--strategy", "random", "--group-size", "5", "--seed", "11"]
    assert main([*args, "--output", str(tmp_path / "here.jsonl")]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "rankdistill.cli", "-q", *args, "--output", str(tmp_path / "there.jsonl")],
                   env=env, check=True, capture_output=True)
    assert (tmp_path / "here.jsonl").read_bytes() == (tmp_path / "there.jsonl").read_bytes()


def test_mined_teacher_scores_are_found_by_score(tmp_path, cranfield_dir, tiny_cross_encoder_dir, capsys):
    out = tmp_path / "groups.jsonl"
    teacher = ["--teacher", str(tiny_cross_encoder_dir), "--teacher-id", "ce", "--max-length", "64", "--device", "cpu"]
    assert main(["mine", "--dataset", str(cranfield_dir), "--strategy", "teacher", "--group-size", "3", "--pool", "4",
                 "--depth", "12", "--sample", "top", "--max-queries", "6", "--output", str(out), *teacher]) == 0
    capsys.readouterr()
    store = tmp_path / "groups.scores.db"  # the default store beside the output
    meta = json.loads((tmp_path / "groups.jsonl.meta.json").read_text())
    assert meta["teacher"]["id"] == "ce" and meta["teacher"]["store"] == str(store)
    assert meta["teacher"]["info"]["score_space"] == "logit"
    groups = read_groups(out)
    negatives = sum(len(g.negative_ids) for g in groups)
    assert main(["score", "--dataset", str(cranfield_dir), "--groups", str(out), "--output", str(store),
                 *teacher]) == 0
    line = capsys.readouterr().out
    pairs = len({(g.query_id, d) for g in groups for d in (*g.positive_ids, *g.negative_ids)})
    cached = int(line.split(" pairs, ")[1].split(" already stored")[0])
    scored = int(line.split("already stored, ")[1].split(" scored")[0])
    assert cached + scored == pairs and cached >= negatives  # every negative came from a scored candidate


def test_mine_ensemble_with_comma_separated_systems(tmp_path, cranfield_dir, tiny_cross_encoder_dir):
    assert main(["retrieve", "--dataset", str(cranfield_dir), "--split", "train", "--k", "30",
                 "--output", str(tmp_path / "bm25.trec")]) == 0
    out = tmp_path / "ens.jsonl"
    assert main(["mine", "--dataset", str(cranfield_dir), "--strategy", "ensemble", "--group-size", "4",
                 "--systems", f"{tmp_path / 'bm25.trec'},{tmp_path / 'bm25.trec'}", "--max-queries", "5",
                 "--teacher", str(tiny_cross_encoder_dir), "--max-length", "64", "--ensemble-margin", "0",
                 "--scores", str(tmp_path / "s.db"), "--output", str(out)]) == 0
    meta = json.loads((tmp_path / "ens.jsonl.meta.json").read_text())
    assert meta["strategy_settings"]["systems"] == ["bm25.trec", "bm25.trec"]
    assert meta["strategy_settings"]["margin"] == 0.0 and meta["strategy_settings"]["n_per_system"] == 10
    assert len(read_groups(out)) == 5 and (tmp_path / "s.db").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--strategy", "bm25", "--group-size", "8", "--pool", "4"], "--pool 4 is smaller than group size - 1 = 7"),
    (["--strategy", "teacher", "--group-size", "4"], "--strategy teacher needs a teacher (give --teacher MODEL)"),
    (["--strategy", "run", "--group-size", "4"], "--strategy run needs --candidates FILE"),
    (["--strategy", "bm25", "--group-size", "4", "--split", "dev"], "unknown split 'dev'"),
    (["--strategy", "bm25", "--group-size", "4", "--fn-margin", "1"], "the false-negative guard (--fn-margin) needs"),
    (["--strategy", "run", "--candidates", "missing.trec", "--group-size", "4"], "--candidates run file not found"),
    (["--strategy", "bm25", "--group-size", "4", "--min-relevance", "9"], "no query of split 'train' has a judged"),
    (["--strategy", "bm25", "--group-size", "4", "--systems", "a.trec"],  # was silently ignored
     "--systems is only used by --strategy ensemble, not bm25"),
    (["--strategy", "random", "--group-size", "4", "--systems", "a.trec", "--retrievers", "bm25"],
     "--systems and --retrievers are only used by --strategy ensemble, not random"),
])
def test_mine_bad_input_exits_2_with_one_line(tmp_path, cranfield_dir, capsys, extra, message):
    code = main(["mine", "--dataset", str(cranfield_dir), *extra, "--output", str(tmp_path / "g.jsonl")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.jsonl").exists()


def test_mine_failures_leave_no_store_and_an_unused_teacher_is_refused(tmp_path, cranfield_dir,
                                                                      tiny_cross_encoder_dir, capsys):
    """The score store is created before the teacher runs; a run that fails afterwards removed neither it nor
    (a store the command made) its -wal/-shm files. A --teacher the strategy never asks was recorded and
    silently ignored."""
    base = ["mine", "--dataset", str(cranfield_dir), "--group-size", "4", "--teacher", str(tiny_cross_encoder_dir),
            "--max-length", "32", "--output", str(tmp_path / "g.jsonl")]
    for extra, message in (
            (["--strategy", "ensemble", "--systems", str(tmp_path / "missing.trec")], "missing.trec"),
            (["--strategy", "bm25", "--min-relevance", "9", "--fn-margin", "1"], "has a judged"),
            (["--strategy", "bm25"], "--teacher is not used by --strategy bm25 without --fn-margin")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert sorted(p.name for p in tmp_path.iterdir()) == [], extra


def test_mine_rejects_an_unknown_strategy(tmp_path, cranfield_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main(["mine", "--dataset", str(cranfield_dir), "--strategy", "colbert", "--group-size", "4",
              "--output", str(tmp_path / "g.jsonl")])
    assert e.value.code == 2
    assert "invalid choice: 'colbert'" in capsys.readouterr().err


def test_a_mistyped_teacher_name_fails_before_the_mining(tmp_path, cranfield_dir, capsys, monkeypatch):
    """A bare name that is no local folder goes to the Hugging Face hub (offline: its cache), which is asked
    for the model's config before mining, not after it, when the candidates come to be scored."""
    from rankdistill.mining import miner

    def no_mining(self):
        raise AssertionError("mined before the teacher was checked")

    monkeypatch.setattr(miner.Miner, "run", no_mining)
    assert main(["mine", "--dataset", str(cranfield_dir), "--strategy", "bm25", "--group-size", "4", "--fn-margin",
                 "1", "--teacher", "nosuchteacher", "--output", str(tmp_path / "g.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load model 'nosuchteacher'" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_sidecar_path_taken_by_a_folder_is_refused_before_the_groups_are_written(tmp_path, cranfield_dir, capsys):
    """The groups file was written, then the sidecar's IsADirectoryError was a traceback: half an output."""
    (tmp_path / "g.jsonl.meta.json").mkdir()
    assert main(["mine", "--dataset", str(cranfield_dir), "--strategy", "random", "--group-size", "4",
                 "--max-queries", "3", "--output", str(tmp_path / "g.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rankdistill mine: error: {tmp_path / 'g.jsonl.meta.json'}: --output's sidecar is a directory "
                   "(give a file name)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.jsonl.meta.json"]


def test_mining_fans_out_over_an_executor_with_the_same_groups_and_counts(tmp_path, cranfield_dir):
    """`mine --executor` only fanned out a teacher's scoring: bm25, random and run mined in the one process
    whatever the flag said. Shards of queries now go to the workers; a run of 3 candidates per query makes
    every pool short, so the top-up's counts are summed over the shards too."""
    run = tmp_path / "three.trec"
    from rankdistill.data import load_dataset
    from rankdistill.data.runs import write_run

    ds = load_dataset(cranfield_dir)
    docs = ds.corpus.ids()
    write_run({q: {docs[(i * 7 + j) % len(docs)]: 3.0 - j for j in range(3)} for i, q in
               enumerate(sorted(ds.queries("train")))}, run)
    for strategy, extra in (("bm25", ["--depth", "50"]), ("run", ["--candidates", str(run)])):
        outputs = {}
        for executor in ("local", "processes"):
            out = tmp_path / f"{strategy}-{executor}.jsonl"
            assert main(["mine", "--dataset", str(cranfield_dir), "--split", "train", "--strategy", strategy,
                         "--group-size", "4", *extra, "--executor", executor, "--workers", "2",
                         "--output", str(out)]) == 0
            outputs[executor] = (out.read_bytes(), json.loads((tmp_path / f"{out.name}.meta.json").read_text()))
        (local, local_meta), (fanned, fanned_meta) = outputs["local"], outputs["processes"]
        assert fanned == local and fanned_meta["counts"] == local_meta["counts"], strategy
        assert fanned_meta["executor"] == {"name": "processes", "mining_shards": 2}  # one shard per worker
        assert local_meta["executor"] == {"name": "local", "mining_shards": 0}
    assert local_meta["counts"]["queries_topped_up"] == 150 and local_meta["counts"]["random_negatives_added"] == 750


def test_mining_shards_without_a_model_ask_for_no_gpu(tmp_path, cranfield_dir, monkeypatch):
    """Ray tasks took --gpus-per-task's default (1 where there is a GPU) for bm25, random and run shards too,
    which queued them one GPU at a time; only a dense first stage runs a model."""
    from rankdistill.commands import mine

    asked = []
    monkeypatch.setattr(mine, "scoring_executor", lambda args: asked.append(args.gpus_per_task))  # returns None
    base = ["mine", "--dataset", str(cranfield_dir), "--strategy", "bm25", "--group-size", "4", "--max-queries", "5",
            "--executor", "ray"]
    assert main([*base, "--output", str(tmp_path / "a.jsonl")]) == 0
    assert main([*base, "--gpus-per-task", "0.5", "--output", str(tmp_path / "b.jsonl")]) == 0
    assert asked == [0.0, 0.5]
