"""The retrieve / evaluate / data verbs as a user runs them, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankdistill.cli import main


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RANKDISTILL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_bm25_on_scifact_end_to_end(scifact_dir, tmp_path, capsys):
    run = tmp_path / "bm25.trec"
    assert main(["retrieve", "--dataset", str(scifact_dir), "--split", "test", "--retriever", "bm25",
                 "--k", "100", "--output", str(run)]) == 0
    lines = run.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 300
    assert all(len(line.split()) == 6 for line in lines)
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    pq = tmp_path / "pq.tsv"
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run", str(run), "--json",
                 "--per-query", str(pq)]) == 0
    means = json.loads(capsys.readouterr().out)
    assert list(means) == ["nDCG@10"]
    assert means["nDCG@10"] >= 0.66  # BEIR's BM25: 0.665; bm25s with stemming about 0.68
    assert len(pq.read_text().splitlines()) == 301


def test_retrieve_is_deterministic(cranfield_dir, tmp_path):
    for name in ("a", "b"):
        assert main(["retrieve", "--dataset", str(cranfield_dir), "--split", "test", "--k", "20",
                     "--output", str(tmp_path / f"{name}.trec")]) == 0
    assert (tmp_path / "a.trec").read_bytes() == (tmp_path / "b.trec").read_bytes()


def test_evaluate_trec_dl_official_figure(trecdl_manifest, shared_data, capsys):
    run = shared_data / "trec-dl" / "runs" / "run.dl19.bm25.top100.trec"
    assert main(["evaluate", "--dataset", str(trecdl_manifest), "--split", "dl19", "--run", str(run),
                 "--json"]) == 0
    means = json.loads(capsys.readouterr().out)
    assert round(means["nDCG@10"], 4) == 0.5058
    assert "AP(rel=2)" in means


def test_data_info(scifact_dir, capsys):
    assert main(["data", "info", str(scifact_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["docs"] == 5183
    assert info["splits"]["test"] == {"queries": 300, "judged_queries": 300, "qrels": 339, "relevant": 339,
                                      "rel_threshold": 1}
    assert main(["data", "info", str(scifact_dir)]) == 0
    assert "mean doc length" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


def test_unknown_split_exit_2(scifact_dir, tmp_path, capsys):
    code = main(["retrieve", "--dataset", str(scifact_dir), "--split", "dev", "--output", str(tmp_path / "r")])
    assert code == 2
    assert "known splits: test, train" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_a_tag_a_run_line_cannot_carry_exit_2(scifact_dir, tmp_path, capsys):
    code = main(["retrieve", "--dataset", str(scifact_dir), "--split", "test", "--tag", "my run",
                 "--output", str(tmp_path / "r")])
    assert code == 2
    assert "run tag 'my run' is empty or holds whitespace" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_missing_files_exit_2(scifact_dir, tmp_path, capsys):
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run",
                 str(tmp_path / "nope.trec")]) == 2
    assert "nope.trec: run file not found" in _error_line(capsys)
    assert main(["data", "info", str(tmp_path / "nothing")]) == 2
    assert "not found" in _error_line(capsys)


def test_bad_qrels_line_exit_2(tmp_path, capsys):
    (tmp_path / "c.tsv").write_text("d1\tflutter\nd2\twing\n")
    (tmp_path / "q.tsv").write_text("1\tflutter\n")
    (tmp_path / "r.txt").write_text("1 0 d1 1\n1 0 d2\n")
    (tmp_path / "d.toml").write_text('corpus = "c.tsv"\n[splits.s]\nqueries = "q.tsv"\nqrels = "r.txt"\n')
    (tmp_path / "run.trec").write_text("1 Q0 d1 1 2.0 x\n")
    assert main(["evaluate", "--dataset", str(tmp_path / "d.toml"), "--split", "s", "--run",
                 str(tmp_path / "run.trec")]) == 2
    assert "r.txt:2:" in _error_line(capsys)


def test_run_with_unknown_documents_warns_and_evaluates(scifact_dir, tmp_path, capsys, caplog):
    qid, did = next((q, d) for q, docs in
                    ((line.split("\t")[0], [line.split("\t")[1]])
                     for line in (scifact_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]) for d in docs)
    (tmp_path / "run.trec").write_text(f"{qid} Q0 ghost-1 1 9.0 x\n{qid} Q0 ghost-2 2 8.0 x\n{qid} Q0 {did} 3 7.0 x\n")
    assert main(["evaluate", "--dataset", str(scifact_dir), "--split", "test", "--run",
                 str(tmp_path / "run.trec"), "--metrics", "RR@10", "--json"]) == 0
    means = json.loads(capsys.readouterr().out)
    assert means["RR@10"] == pytest.approx((1 / 3) / 300)
    assert any("2 document(s) absent from the corpus" in r.getMessage() for r in caplog.records)


def test_a_command_imports_only_what_its_own_verb_needs(cranfield_dir, tmp_path):
    """Each verb's parser is built alone: building all of them imported torch (the losses' names), scipy and
    statsmodels first, about 5 s before any command could start. BM25 retrieval and its evaluation need none of
    torch, and BM25's thread count no longer loads it either. A typo still gets the list of verbs."""
    import os
    import subprocess
    import sys

    code = f"""
import sys
from rankdistill.cli import main
assert main(["data", "info", {str(cranfield_dir)!r}]) == 0
assert main(["retrieve", "--dataset", {str(cranfield_dir)!r}, "--split", "test", "--k", "10",
             "--output", {str(tmp_path / "r.trec")!r}]) == 0
assert main(["evaluate", "--dataset", {str(cranfield_dir)!r}, "--split", "test", "--run",
             {str(tmp_path / "r.trec")!r}]) == 0
print(sorted(m for m in ("torch", "transformers", "statsmodels") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "RANKDISTILL_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    typo = subprocess.run([sys.executable, "-m", "rankdistill.cli", "evalute"], capture_output=True, text=True)
    assert typo.returncode == 2 and "invalid choice: 'evalute' (choose from 'retrieve', 'evaluate'" in typo.stderr


@pytest.mark.parametrize("argv", [["--help"], ["--he", "evaluate"], ["-vh", "evaluate"], ["-q", "--hel"]])
def test_the_top_level_help_lists_every_verb_however_it_is_asked_for(argv, capsys):
    """argparse takes an abbreviated --help and -h in a cluster: the parser built then is the full one."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(f"    {verb} " in out for verb in ("retrieve", "compare", "run", "data"))


def test_bad_flag_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["retrieve", "--dataset", "x", "--split", "test", "--output", "o", "--k", "many"])
    assert e.value.code == 2


def test_a_verb_composed_by_run_fails_in_one_line(monkeypatch, capsys, tmp_path):
    """Inside ``run`` (cli depth 1) a verb's error used to be printed by the verb, then ``run`` added a second
    line ("failed with exit code 2 (its message is above)"); argparse errors of a composed verb left ``run``
    with a SystemExit. Now both reach ``run`` as one StageFailed naming the verb."""
    import rankdistill.cli as cli
    from rankdistill.experiments.runner import StageFailed, call_verb

    monkeypatch.setattr(cli, "_depth", 1)
    with pytest.raises(StageFailed) as e:
        call_verb(["evaluate", "--dataset", str(tmp_path / "none"), "--split", "test", "--run", "x.trec"])
    assert str(e.value).startswith("`rankdistill evaluate`: dataset ") and "\n" not in str(e.value)
    with pytest.raises(StageFailed) as e:
        call_verb(["diagnose", "--metric", "foo"])
    assert "invalid choice: 'foo'" in str(e.value) and "\n" not in str(e.value)
    assert capsys.readouterr().err == ""


def test_a_verb_composed_in_a_worker_process_fails_in_one_line(tmp_path):
    """In an executor's worker (a fresh process, where no ``run`` is active) a composed verb printed its error
    to the worker's stderr (never shown under Ray) and the run said only "failed with exit code 2"."""
    from rankdistill.experiments.executors import ProcessExecutor
    from rankdistill.experiments.runner import StageFailed, call_verb

    pool = ProcessExecutor(1)
    try:
        with pytest.raises(StageFailed) as e:
            pool.map(call_verb, [(["evaluate", "--dataset", str(tmp_path / "none"), "--split", "test",
                                   "--run", "x.trec"],)])
    finally:
        pool.close()
    assert str(e.value).startswith("`rankdistill evaluate`: dataset ") and "not found" in str(e.value)



def test_the_process_pool_takes_a_few_tasks_per_worker_at_a_time():
    """Every task was submitted at once, so a lazy sequence of scoring chunks (the texts of 100M pairs at
    MS MARCO scale) was built whole before the first finished. Now two per worker are taken at a time."""
    import math
    from collections.abc import Sequence

    from rankdistill.experiments.executors import ProcessExecutor

    class Lazy(Sequence):
        def __init__(self) -> None:
            self.built = 0

        def __len__(self) -> int:
            return 40

        def __getitem__(self, i):  # type: ignore[override]
            if not 0 <= i < 40:
                raise IndexError(i)
            self.built += 1
            return (float(i * i),)

    tasks = Lazy()
    built_at_done = []
    pool = ProcessExecutor(2)
    try:
        out = pool.map(math.sqrt, tasks, on_done=lambda i, r: built_at_done.append(tasks.built))
    finally:
        pool.close()
    assert out == [float(i) for i in range(40)]
    assert built_at_done[0] == 4 and tasks.built == 40

def _tiny_dataset(tmp_path):
    (tmp_path / "c.tsv").write_text("d1\tapple pie\nd2\tbanana bread\n", encoding="utf-8")
    (tmp_path / "q.tsv").write_text("q1\tapple\n", encoding="utf-8")
    (tmp_path / "r.txt").write_text("q1 0 d1 1\n", encoding="utf-8")
    (tmp_path / "run.trec").write_text("q1 Q0 d1 1 2.0 x\n", encoding="utf-8")
    (tmp_path / "g.jsonl").write_text('{"query_id": "q1", "positive_ids": ["d1"], "negative_ids": ["d2"]}\n',
                                      encoding="utf-8")
    (tmp_path / "s.db").write_bytes(b"not read")
    (tmp_path / "model").mkdir()
    manifest = tmp_path / "d.toml"
    manifest.write_text('name = "tiny"\ncorpus = "c.tsv"\n[splits.s]\nqueries = "q.tsv"\nqrels = "r.txt"\n',
                        encoding="utf-8")
    return manifest


@pytest.mark.parametrize(("argv", "output", "named"), [
    ("retrieve --dataset {m} --split s --output {d}/r.txt", "r.txt", "--output is also --dataset"),
    ("retrieve --dataset {m} --split s --output {d}/d.toml", "d.toml", "--output is also --dataset"),
    ("evaluate --dataset {m} --split s --run {d}/run.trec --per-query {d}/run.trec", "run.trec",
     "--per-query is also --run"),
    ("mine --dataset {m} --split s --strategy random --group-size 2 --output {d}/q.tsv", "q.tsv",
     "--output is also --dataset"),
    ("score --dataset {m} --groups {d}/g.jsonl --teacher {d}/model --cache {d}/s.db --output {d}/s.db", "s.db",
     "--cache is also --output"),
    ("train --dataset {m} --groups {d}/g.jsonl --arch bi --loss lce --budget-docs 8 --model {d}/model "
     "--output {d}/model", "model", "--output is also --model"),
    ("rerank --dataset {m} --split s --model {d}/model --candidates {d}/run.trec --output {d}/run.trec", "run.trec",
     "--output is also --candidates"),
    ("diagnose --dataset {m} --groups {d}/g.jsonl --scores {d}/s.db --output {d}/g.jsonl", "g.jsonl",
     "--output is also --groups"),
    ("select --groups {d}/g.jsonl --stats {d}/s.db --rule keep_above_median --output {d}/g.jsonl", "g.jsonl",
     "--output is also --groups"),
    ("convert to-paper --groups {d}/g.jsonl --output {d}/g.jsonl", "g.jsonl", "--output is also --groups"),
    ("compare --per-query {d}/run.trec {d}/q.tsv --metric nDCG@10 --table-md {d}/run.trec", "run.trec",
     "--table-md is also --per-query"),
])
def test_no_verb_writes_over_its_own_input(tmp_path, capsys, argv, output, named):
    """An output that is one of the verb's inputs (or a file of its dataset) is refused in one line, exit 2,
    before any work, and the input keeps its bytes."""
    manifest = _tiny_dataset(tmp_path)
    args = argv.format(m=manifest, d=tmp_path).split()
    target = tmp_path / output
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_bytes()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and f"give {named.split()[0]} another path" in err[0], err
    after = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_bytes()
    assert after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no probe or temporary file left


def test_two_outputs_of_one_verb_may_not_be_one_file(tmp_path, capsys):
    manifest = _tiny_dataset(tmp_path)
    assert main(["compare", "--per-query", str(tmp_path / "run.trec"), "--metric", "nDCG@10", "--table-md",
                 str(tmp_path / "t.md"), "--output", str(tmp_path / "t.md")]) == 2
    assert "--output is also --table-md" in capsys.readouterr().err
    assert manifest.is_file() and not (tmp_path / "t.md").exists()


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    """A folder that takes no new files (read-only, or a special file system; permissions do not tell for
    root) is found by trying, before the verb runs; an output below a file, or a train output that is a file,
    likewise."""
    import tempfile

    from rankdistill.commands import retrieve, train

    def no_work(args):
        raise AssertionError("the verb ran before its outputs were checked")

    monkeypatch.setattr(retrieve, "run", no_work)
    monkeypatch.setattr(train, "run", no_work)
    manifest = _tiny_dataset(tmp_path)
    real = tempfile.mkstemp

    def refuse(*a, dir=None, **k):
        if str(dir) == str(tmp_path / "ro"):
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    cases = [
        (["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(tmp_path / "ro" / "a" / "r.trec")],
         f"{tmp_path / 'ro' / 'a' / 'r.trec'}: --output cannot be written: {tmp_path / 'ro'} does not take new "
         "files (Permission denied) (give a path in a writable folder)"),
        (["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(tmp_path / "run.trec" / "r")],
         f"--output cannot be created: {tmp_path / 'run.trec'} is not a directory"),
        (["train", "--dataset", str(manifest), "--groups", str(tmp_path / "g.jsonl"), "--arch", "bi", "--loss", "lce",
          "--budget-docs", "8", "--output", str(tmp_path / "q.tsv")], "--output is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert list((tmp_path / "ro").iterdir()) == []


def test_bm25_parameters_outside_their_meaning_are_refused(tmp_path, capsys):
    manifest = _tiny_dataset(tmp_path)
    for flag, value, message in (("--k1", "-1", "BM25 --k1 must be a finite number, 0 or more, got -1.0"),
                                 ("--k1", "inf", "BM25 --k1 must be a finite number, 0 or more, got inf"),
                                 ("--b", "5", "BM25 --b must be between 0 and 1, got 5.0")):
        assert main(["retrieve", "--dataset", str(manifest), "--split", "s", flag, value,
                     "--output", str(tmp_path / "x.trec")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not (tmp_path / "x.trec").exists()


def test_an_output_named_like_a_setting_is_not_an_input(tmp_path, capsys, monkeypatch):
    """Only the arguments a verb reads count as inputs: a second run whose output, as typed, equals the value of
    a setting (--retriever bm25 --output bm25, or --split train --output train) is not refused."""
    manifest = _tiny_dataset(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").write_text("an earlier run\n", encoding="utf-8")
    for _ in range(2):
        assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--retriever", "bm25", "--k", "1",
                     "--output", "bm25"]) == 0
    assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--k", "1", "--output", "s"]) == 0
    assert (tmp_path / "bm25").read_text(encoding="utf-8").startswith("q1 Q0 ")


def test_unusable_output_paths_are_one_line_of_bad_input(tmp_path, capsys):
    """stat() errors other than 'not found' (a name too long, a folder that cannot be entered) are reported
    like the rest, not as a traceback."""
    manifest = _tiny_dataset(tmp_path)
    out = tmp_path / ("x" * 300) / "r.trec"
    assert main(["retrieve", "--dataset", str(manifest), "--split", "s", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output cannot be used (File name too long)" in err[0], err


def test_every_error_that_names_a_line_also_says_how_to_fix_it():
    """The contract's bad-input message names "the file, line and fix": 24 raise sites named a line with no fix
    (`bad.trec:2: score 'abc' is not a number`). Read from the source, so a new one fails here."""
    import ast

    import rankdistill

    root = Path(rankdistill.__file__).parent
    missing = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "UserInputError":
                keywords = {k.arg for k in node.keywords}
                if "line" in keywords and "fix" not in keywords:
                    missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not missing, missing


def test_the_python_api_is_importable_from_its_packages_without_loading_torch():
    """Students, retrievers, the diagnostics job, the scoring helpers and the study were only reachable from
    their submodules (``dir()`` and notebook completion did not show the teachers' names either); they are
    exported lazily, so importing the packages still loads no model library."""
    import importlib
    import subprocess
    import sys

    packages = ["data", "diagnostics", "evaluation", "experiments", "models", "retrieval", "teachers", "training"]
    code = ("import sys\n" + "".join(f"import rankdistill.{p}\n" for p in packages if p != "training")
            + "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    for p in packages:
        module = importlib.import_module(f"rankdistill.{p}")
        assert set(module.__all__) <= set(dir(module)), p
        assert all(getattr(module, name) is not None for name in module.__all__), p
    from rankdistill.models import load_student, score_candidates
    from rankdistill.retrieval import BM25Retriever, DenseRetriever
    from rankdistill.teachers import dataset_queries, read_group_pairs

    assert load_student.__module__ == score_candidates.__module__ == "rankdistill.models.scoring"
    assert (BM25Retriever.__name__, DenseRetriever.__name__) == ("BM25Retriever", "DenseRetriever")
    assert read_group_pairs.__module__ == dataset_queries.__module__ == "rankdistill.teachers.pairs"
    with pytest.raises(AttributeError, match=r"module 'rankdistill\.models' has no attribute 'nope'"):
        importlib.import_module("rankdistill.models").nope  # noqa: B018


def test_ir_datasets_info_lines_follow_the_level_asked_for(capfd):
    """ir_datasets logs through a logger of its own (its level, its handler, no propagation), so its
    ``[INFO]`` lines came through ``-q`` and through a study's stages (which run their verbs at WARNING)."""
    import logging

    import ir_datasets

    from rankdistill.cli import setup_logging

    root = logging.getLogger()
    saved = root.level
    log = ir_datasets.log.easy()
    try:
        setup_logging(quiet=True)
        log.info("confirm the usage agreement")
        log.warn("a real warning")
        err = capfd.readouterr().err
        assert "confirm the usage agreement" not in err and "a real warning" in err
        setup_logging()
        log.info("building docstore")
        assert "[INFO] building docstore" in capfd.readouterr().err
        assert sum(type(f).__name__ == "_BelowRootLevel" for f in logging.getLogger("ir_datasets").filters) == 1
    finally:
        root.setLevel(saved)


def _irds_filters_in_worker() -> list[str]:
    import logging

    return [type(f).__name__ for f in logging.getLogger("ir_datasets").filters]


def test_a_process_pools_workers_drop_ir_datasets_info_lines_too():
    """A study's cells run in a process pool, whose workers never call setup_logging: the filter that makes
    ir_datasets follow the root level is installed there too (the workers log warnings and up)."""
    from rankdistill.experiments.executors import ProcessExecutor

    pool = ProcessExecutor(1)
    try:
        assert pool.map(_irds_filters_in_worker, [()]) == [["_BelowRootLevel"]]
    finally:
        pool.close()
