"""``rankdistill train`` through ``cli.main``: success output and every bad-input path (exit code 2)."""

from __future__ import annotations

import json

import pytest

from rankdistill.cli import main
from rankdistill.data.groups import Group, write_groups
from test_training_fixtures import build_scores, scifact_groups, scifact_scores  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def args(scifact_dir, groups, out, model, *extra: str) -> list[str]:
    return ["train", "--dataset", str(scifact_dir), "--groups", str(groups), "--model", str(model),
            "--group-size", "4", "--batch-size", "4", "--max-doc-length", "64", "--max-length", "96",
            "--output", str(out), *extra]


def test_train_prints_its_result_and_writes_the_model(scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                      tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "m"
    code = main(args(scifact_dir, scifact_groups[0], out, tiny_bert_dir, "--scores", str(scifact_scores),
                     "--loss", "margin_mse", "--margin-pairs", "all_pairs", "--budget-docs", "0.8k", "--layers", "1"))
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    # 0.8k = 800 documents / 16 per step = 50 steps -> 800 documents
    assert printed["steps"] == 50 and printed["realised_docs"] == 800
    summary = json.loads((out / "training.json").read_text())
    assert summary["loss_options"] == {"pairs": "all_pairs"}
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert json.loads((out / "train_config.json").read_text())["model"]["layers"] == 1
    assert (out / "modules.json").is_file() and (out / "rankdistill.json").is_file()


def _fails(argv, capsys, *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rankdistill train: error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, err
    return err


def test_distillation_loss_without_scores(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    _fails(args(scifact_dir, scifact_groups[0], tmp_path / "o", tiny_bert_dir, "--loss", "kl", "--budget-docs", "100"),
           capsys, "--loss kl needs teacher scores", "pass --scores STORE")


def test_budget_smaller_than_one_step(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    _fails(args(scifact_dir, scifact_groups[0], tmp_path / "o", tiny_bert_dir, "--loss", "lce",
                "--budget-docs", "15", "--grad-accum", "1"), capsys,
           "--budget-docs 15 is smaller than one optimizer step (16 documents = batch 4 x accumulation 1 x world "
           "size 1 x group size 4)", "give --budget-docs 16 or more")


def test_groups_smaller_than_the_group_size(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    path, groups = scifact_groups
    argv = args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--loss", "lce", "--budget-docs", "100")
    argv[argv.index("--group-size") + 1] = "6"
    _fails(argv, capsys, "24 of 24 group(s) have fewer than 5 distinct negatives for --group-size 6",
           f"line 1 query {groups[0].query_id!r}: 3", "lower --group-size to 4")


def test_missing_teacher_scores_are_counted(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    path, groups = scifact_groups
    skip = {(g.query_id, g.negative_ids[1]) for g in groups[:5]}
    store = build_scores(groups, tmp_path / "partial.db", skip=skip)
    _fails(args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--scores", str(store), "--budget-docs", "100"),
           capsys, "5 of 96 (query, document) pairs have no score from teacher 'synthetic-ce'",
           "--missing-scores skip")


def test_groups_naming_unknown_queries_or_documents(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path,  # noqa: F811
                                                    capsys):
    _, groups = scifact_groups
    bad_query = tmp_path / "q.jsonl"
    write_groups([groups[0], Group("no-such-query", ["4983"], ["5836", "7912", "18670"])], bad_query)
    _fails(args(scifact_dir, bad_query, tmp_path / "o", tiny_bert_dir, "--loss", "lce", "--budget-docs", "100"),
           capsys, "1 group(s) name queries that split 'train' of", "line 2: 'no-such-query'",
           "pass the --split the groups were mined from")
    bad_doc = tmp_path / "d.jsonl"
    g = groups[1]
    write_groups([groups[0], Group(g.query_id, g.positive_ids, [*g.negative_ids, "no-such-doc"])], bad_doc)
    _fails(args(scifact_dir, bad_doc, tmp_path / "o", tiny_bert_dir, "--loss", "lce", "--budget-docs", "100"),
           capsys, "1 document id(s) are not in the corpus", "line 2: 'no-such-doc'")
    broken = tmp_path / "b.jsonl"
    broken.write_text(groups[0].to_json() + "\n{not json\n")
    _fails(args(scifact_dir, broken, tmp_path / "o", tiny_bert_dir, "--loss", "lce", "--budget-docs", "100"),
           capsys, f"{broken}:2: not valid JSON")


def test_too_few_groups_for_one_step_and_missing_files(scifact_dir, scifact_groups, scifact_scores,  # noqa: F811
                                                       tiny_bert_dir, tmp_path, capsys):
    path, _ = scifact_groups
    argv = args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--loss", "lce", "--budget-docs", "1000")
    argv[argv.index("--batch-size") + 1] = "32"
    _fails(argv, capsys, "24 usable group(s) cannot fill one optimizer step of 32", "lower --batch-size")
    _fails(args(scifact_dir, tmp_path / "none.jsonl", tmp_path / "o", tiny_bert_dir, "--loss", "lce",
                "--budget-docs", "100"), capsys, "groups file not found")
    _fails(args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--scores", str(tmp_path / "none.db"),
                "--budget-docs", "100"), capsys, "score store not found")
    _fails(args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--scores", str(scifact_scores),
                "--budget-docs", "100", "--layers", "3"), capsys, "--layers 3 is out of range: the model has 2 layers")
    _fails(args(scifact_dir, path, tmp_path / "o", tiny_bert_dir, "--scores", str(scifact_scores),
                "--budget-docs", "100", "--loss", "ranknet", "--temperature", "0"), capsys,
           "--temperature must be positive")


def test_unknown_loss_is_an_argparse_error(scifact_dir, scifact_groups, tiny_bert_dir, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as e:
        main(args(scifact_dir, scifact_groups[0], tmp_path / "o", tiny_bert_dir, "--loss", "mse", "--budget-docs", "1"))
    assert e.value.code == 2
    assert "invalid choice: 'mse'" in capsys.readouterr().err
