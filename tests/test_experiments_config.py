"""The study config: examples validate; every kind of bad config names its key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rankdistill.errors import UserInputError
from rankdistill.experiments.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MINIMAL = """
name = "t"
[train]
dataset = "{data}/scifact"
[[test]]
name = "sf"
dataset = "{data}/scifact"
[grid]
strategies = ["random", "bm25"]
losses = ["lce"]
"""


def test_examples_validate(shared_data):
    quick = load_config(EXAMPLES / "quickstart.toml", data_dir=str(shared_data))
    assert quick.grid.strategies == ("random", "bm25", "teacher", "ensemble")
    assert quick.grid.losses == ("lce", "kl")
    assert quick.teacher is not None and quick.teacher.train is not None
    paper = load_config(EXAMPLES / "paper.toml")
    assert paper.grid.group_sizes == (16,)
    assert paper.student.budget_docs == 12_000_000
    assert [t.name for t in paper.tests][:2] == ["dl19", "dl20"]
    assert paper.executor.kind == "ray"
    study = load_config(EXAMPLES / "scifact-study.toml", data_dir=str(shared_data))
    assert study.teacher.train.folds == 3 and study.mining.ensemble_per_system == 32
    assert len(study.grid.strategies) * len(study.grid.losses) * len(study.grid.archs) * len(study.grid.seeds) == 120


def _write(tmp_path: Path, shared_data: Path, extra: str = "", base: str = MINIMAL) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(base.format(data=shared_data) + extra)
    return p


def test_minimal_config_defaults(tmp_path, shared_data):
    cfg = load_config(_write(tmp_path, shared_data))
    assert cfg.train.split == "train" and cfg.tests[0].mode == "rerank"
    assert cfg.comparison.baseline == "random" and cfg.executor.kind == "local"


@pytest.mark.parametrize(("extra", "message"), [
    ("[student]\nlayres = 2\n", "unknown key 'student.layres'"),
    ("colour = 1\n", "unknown key 'colour'"),
    ("[student]\nlr = 'fast'\n", "'student.lr' must be a number"),
    ("[executor]\nkind = 'slurm'\n", "'executor.kind' has unknown value 'slurm'"),
    ("[comparison]\nmargin = 0.0\n", "'comparison.margin' must be > 0"),
    ("[comparison]\nbaseline = 'dense'\n", "'comparison.baseline' 'dense' is not one of grid.strategies"),
])
def test_bad_values_name_the_key(tmp_path, shared_data, extra, message):
    p = tmp_path / "c.toml"
    text = MINIMAL.format(data=shared_data)
    # put top-level keys before the first table so TOML reads them as top level
    p.write_text(extra + text if not extra.startswith("[") else text + extra)
    with pytest.raises(UserInputError) as e:
        load_config(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)


@pytest.mark.parametrize(("line", "message"), [
    ('modee = "rerank"', "unknown key 'test[0].modee' (known keys in [test[0]]: name, dataset, split, mode,"),
    ('depth = "x"', "'test[0].depth' must be an integer"),
])
def test_test_tables_are_named_as_written(tmp_path, shared_data, line, message):
    """The tables are [[test]] in the file: messages said 'tests[0]' (the field's name) and listed 'tests'."""
    p = tmp_path / "c.toml"
    p.write_text(MINIMAL.format(data=shared_data).replace('name = "sf"', f'name = "sf"\n{line}'))
    with pytest.raises(UserInputError) as e:
        load_config(p)
    assert message in str(e.value) and "tests" not in str(e.value)
    p.write_text(MINIMAL.format(data=shared_data) + "[[tset]]\nname = 'x'\n")
    with pytest.raises(UserInputError, match=r"unknown key 'tset' \(known keys: name, .*, test, "):
        load_config(p)


@pytest.mark.parametrize(("override", "message"), [
    ("student.layers=99", "'student.layers' is 99, but student.model has 6 layers"),
    ("student.budget_docs=1", "'student.budget_docs': --budget-docs 1 is smaller than one optimizer step"),
    ("budget_study.budgets=[5]", "'budget_study.budgets': --budget-docs 5 is smaller than one optimizer step"),
    ("student.max_length=2", "'student.max_length': max length 2 must exceed the query length 32"),
    ("teacher.train.layers=99", "'teacher.train.layers' is 99, but teacher.train.model has 6 layers"),
    ("teacher.train.budget_docs=100", "'teacher.train.budget_docs': --budget-docs 67 is smaller than one optimizer"),
])
def test_what_the_train_verb_would_refuse_is_refused_before_the_run(shared_data, tmp_path, override, message):
    """These validated, then failed minutes into a run (the teacher's or a cell's training), naming a verb flag."""
    with pytest.raises(UserInputError) as e:
        load_config(EXAMPLES / "scifact-study.toml", data_dir=str(shared_data), overrides=[override])
    assert message in str(e.value) and f"as given by --set {override}" in str(e.value)
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"'student\.model': cannot load model .*Unrecognized model"):
        load_config(EXAMPLES / "scifact-study.toml", data_dir=str(shared_data), overrides=[f"student.model='{model}'"])
    # what the verb accepts is accepted: a budget-study budget that fits its own (smaller) group size, and a
    # sentence-transformers folder whose transformer sits in 0_Transformer/
    load_config(EXAMPLES / "scifact-study.toml", data_dir=str(shared_data),
                overrides=["grid.group_sizes=[4, 16]", "budget_study.group_size=4", "budget_study.budgets=[64]"])
    from rankdistill.models import bundled_model_path

    st = tmp_path / "st"
    shutil.copytree(bundled_model_path(), st / "0_Transformer", ignore=shutil.ignore_patterns("modules.json", "1_*"))
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "0_Transformer",
                                                  "type": "sentence_transformers.models.Transformer"}]))
    load_config(EXAMPLES / "scifact-study.toml", data_dir=str(shared_data),
                overrides=[f"student.model='{st}'", "student.layers=3"])


def test_impossible_combinations(tmp_path, shared_data):
    kl = MINIMAL.replace('losses = ["lce"]', 'losses = ["lce", "kl"]')
    with pytest.raises(UserInputError, match="loss 'kl' needs teacher scores"):
        load_config(_write(tmp_path, shared_data, base=kl))
    band = MINIMAL.replace('losses = ["lce"]', 'losses = ["lce"]\nselections = ["keep_lower_quartile"]')
    with pytest.raises(UserInputError, match="selection 'keep_lower_quartile' needs teacher scores"):
        load_config(_write(tmp_path, shared_data, base=band))
    unknown = MINIMAL.replace('losses = ["lce"]', 'losses = ["lce"]\nselections = ["upper_quartile"]')
    with pytest.raises(UserInputError, match=r"grid.selections\[0\]"):
        load_config(_write(tmp_path, shared_data, base=unknown))
    both = "[teacher]\nmodel = 'x'\n[teacher.train]\nloss = 'lce'\n"
    with pytest.raises(UserInputError, match="exclusive"):
        load_config(_write(tmp_path, shared_data, both))
    for folds in (0, 11):
        with pytest.raises(UserInputError, match=f"'teacher.train.folds' must be 1 .* to 10, got {folds}"):
            load_config(_write(tmp_path, shared_data, f"[teacher.train]\nloss = 'lce'\nfolds = {folds}\n"))
    assert load_config(_write(tmp_path, shared_data, "[teacher.train]\nfolds = 2\n")).teacher.train.folds == 2


def test_missing_files(tmp_path, shared_data):
    text = MINIMAL.format(data=shared_data).replace(f"{shared_data}/scifact\"\n[[test]]", "nowhere\"\n[[test]]")
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(UserInputError, match="dataset 'nowhere' not found"):
        load_config(p)
    with pytest.raises(UserInputError, match="config file not found"):
        load_config(tmp_path / "absent.toml")
    p.write_text(MINIMAL.format(data=shared_data) + "[[test]]\nname = 'x'\ndataset = 'scifact'\n")
    with pytest.raises(UserInputError, match="not found"):
        load_config(p)


def test_overrides_change_values_before_validation(tmp_path, shared_data):
    p = _write(tmp_path, shared_data)
    cfg = load_config(p, overrides=["student.budget_docs=2048", "grid.seeds=[0, 1, 2]", "test.sf.depth=20",
                                    "student.pooling=cls", "executor.kind=processes", "executor.workers=3"])
    assert cfg.student.budget_docs == 2048 and cfg.grid.seeds == (0, 1, 2) and cfg.tests[0].depth == 20
    assert cfg.student.pooling == "cls" and cfg.executor.workers == 3
    assert cfg.overrides[0] == "student.budget_docs=2048"
    with pytest.raises(UserInputError, match=r"'student\.budget_docs' must be an integer"):
        load_config(p, overrides=["student.budget_docs=many"])
    with pytest.raises(UserInputError, match=r"no \[\[test\]\] named 'nope'"):
        load_config(p, overrides=["test.nope.depth=3"])
    with pytest.raises(UserInputError, match="not KEY=VALUE"):
        load_config(p, overrides=["student.lr"])
    with pytest.raises(UserInputError, match=r"unknown key 'student\.lrr'"):
        load_config(p, overrides=["student.lrr=1"])
    # an override is named where its value is refused (the file had a good one), and a value meant as an
    # array, table or quoted string that does not parse is refused rather than taken as a string
    with pytest.raises(UserInputError, match=r"'student\.budget_docs' must be .*, as given by --set "
                                             r"student\.budget_docs=-1$"):
        load_config(p, overrides=["student.budget_docs=100", "student.budget_docs=-1"])  # the last one is in force
    for bad in ("grid.seeds=[0", "student.pooling='cls", "student.x={a = 1"):
        with pytest.raises(UserInputError, match=r"is not a TOML value .*close the brackets or quotes"):
            load_config(p, overrides=[bad])
    assert load_config(p, overrides=["student.pooling=cls"]).student.pooling == "cls"  # a bare word: a string
    # a key of an optional table the file lacks is refused: it would add a whole section with defaults
    for item in ("entropy_study.seeds=[0]", "budget_study.budgets=[64]", "teacher.max_length=32"):
        with pytest.raises(UserInputError, match=rf"override '{item.split('=')[0]}': the config has no "
                                                 rf"\[{item.split('.')[0]}\] table"):
            load_config(p, overrides=[item])


def test_entropy_study_is_validated(tmp_path, shared_data):
    teacher = "[teacher]\nmodel = 'x'\n"
    ok = load_config(_write(tmp_path, shared_data, teacher + "[entropy_study]\nstrategy = 'bm25'\n"))
    assert ok.entropy_study is not None and ok.entropy_study.bands[0] == "keep_lower_quartile"
    for extra, message in [
        ("[entropy_study]\n", "needs teacher scores"),
        (teacher + "[entropy_study]\nstrategy = 'dense'\n", "'entropy_study.strategy' 'dense' is not one of"),
        (teacher + "[entropy_study]\nbands = ['all']\n", r"'entropy_study.bands\[0\]' has unknown value 'all'"),
        (teacher + "[entropy_study]\nlosses = []\n", "'entropy_study.losses' is empty"),
        (teacher + "[entropy_study]\ngroup_size = 5\n", "'entropy_study.group_size' 5 is not one of"),
    ]:
        with pytest.raises(UserInputError, match=message):
            load_config(_write(tmp_path, shared_data, extra))


def test_budget_study_is_validated_and_adds_its_cells_last_without_touching_the_others(tmp_path, shared_data):
    from rankdistill.experiments.runner import Cell, study_cells

    teacher = "[teacher]\nmodel = 'x'\n"
    plain = load_config(_write(tmp_path, shared_data, ""))
    ok = load_config(_write(tmp_path, shared_data, "[student]\nbudget_docs = 100\n"
                            "[budget_study]\nbudgets = [64, 400]\nstrategies = ['bm25']\nseeds = [0, 1]\n"))
    assert ok.budget_study is not None and ok.budget_study.axes(ok.grid) == (("bi",), ("lce",), ("bm25",), (0, 1), 8)
    cells = study_cells(ok)
    # the grid's 2 cells first, unchanged; then bm25 at 64 and 400 documents for seeds 0 and 1, and the reference
    # at the study's budget for seed 1, which the grid (seed 0 only) lacks
    assert cells[:2] == study_cells(plain) == [Cell("bi", "lce", s, 8, "all", 0) for s in ("random", "bm25")]
    assert cells[2:] == [Cell("bi", "lce", "bm25", 8, "all", 1), Cell("bi", "lce", "bm25", 8, "all", 0, 64),
                         Cell("bi", "lce", "bm25", 8, "all", 1, 64), Cell("bi", "lce", "bm25", 8, "all", 0, 400),
                         Cell("bi", "lce", "bm25", 8, "all", 1, 400)]
    # a cell at the study's budget keys on the same settings as before budget studies existed
    assert cells[0].settings() == {"arch": "bi", "loss": "lce", "strategy": "random", "group_size": 8,
                                   "selection": "all", "seed": 0}
    assert cells[3].settings()["budget"] == 64 and cells[3].label == "bi/lce/bm25/g8 64docs/s0"
    # an optional table can be left out from the command line (e.g. a report without the budget study's cells)
    path = _write(tmp_path, shared_data, "[budget_study]\nbudgets = [64]\n")
    assert load_config(path).budget_study is not None
    assert load_config(path, overrides=["budget_study=none"]).budget_study is None
    with pytest.raises(UserInputError, match=r"override 'grid=none': only an optional table can be left "
                                             r"out \(one of budget_study, entropy_study, teacher\)"):
        load_config(path, overrides=["grid=none"])
    for extra, message in [
        ("[budget_study]\n", "'budget_study.budgets' is empty"),
        ("[student]\nbudget_docs = 100\n[budget_study]\nbudgets = [100]\n", "is the study's own budget"),
        ("[budget_study]\nbudgets = [0]\n", r"'budget_study.budgets\[0\]' must be positive"),
        ("[budget_study]\nbudgets = [10, 10]\n", "'budget_study.budgets' repeats a value"),
        ("[budget_study]\nbudgets = [10]\nstrategies = ['dense']\n", "'dense' is not one of grid.strategies"),
        ("[budget_study]\nbudgets = [10]\nlosses = ['kl']\n", "has a distillation loss but the config has no"),
        (teacher + "[budget_study]\nbudgets = [10]\narchs = ['tri']\n", "'budget_study.archs' has unknown value"),
        (teacher + "[budget_study]\nbudgets = [10]\ngroup_size = 5\n", "'budget_study.group_size' 5 is not one of"),
    ]:
        with pytest.raises(UserInputError, match=message):
            load_config(_write(tmp_path, shared_data, extra))


def test_an_ensemble_that_cannot_fill_its_groups_is_warned_about(tmp_path, shared_data, caplog):
    """Random documents pad the ensemble's union only to the 7 negatives a group of 8 needs: two systems with 3
    negatives each leave at least 1 of the 7 (14%) to random documents; with 10 each the pools of 32 hold at
    most 20, which is said, not warned about."""
    import logging

    teacher = "[teacher]\nmodel = 'x'\n"
    base = MINIMAL.replace('strategies = ["random", "bm25"]', 'strategies = ["random", "ensemble"]')
    with caplog.at_level(logging.INFO, logger="rankdistill.experiments.config"):
        load_config(_write(tmp_path, shared_data, teacher + "[mining]\npool = 32\nensemble_per_system = 3\n",
                           base=base))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and ("at most 6 negatives per query for groups of 8, so at least 14% of every ensemble "
                                 "group will be random documents") in warned[0]
    assert "mining.ensemble_per_system to at least 4" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rankdistill.experiments.config"):
        load_config(_write(tmp_path, shared_data, teacher + "[mining]\npool = 32\n", base=base))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "its pools hold at most 20 of the 32 asked for (random documents pad a union only to the 7" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rankdistill.experiments.config"):
        load_config(_write(tmp_path, shared_data, teacher + "[mining]\npool = 32\nensemble_per_system = 16\n",
                           base=base))
    assert "ensemble" not in caplog.text


@pytest.mark.parametrize(("override", "message"), [
    ("comparison.metric='P@3'", "'comparison.metric' 'P@3' is not measured on test 'sf' (it measures nDCG@10)"),
    ("grid.selections=['keep_quantile_band:x']", "'grid.selections[0]' has unknown value 'keep_quantile_band:x'"),
    ("grid.selections=['keep_quantile_band:0.5:0.2']", "'grid.selections[0]' has unknown value"),
    ("grid.selections=['keep_lower_quartile:7']", "'grid.selections[0]' has unknown value"),
    ("student.lr=0.0", "'student.lr' must be greater than 0, got 0.0"),
    ("student.warmup=1.0", "'student.warmup' is the share of steps spent warming up, in [0, 1); got 1.0"),
    ("student.batch_size=0", "'student.batch_size' must be greater than 0, got 0"),
    ("student.grad_accum=0", "'student.grad_accum' must be greater than 0"),
    ("student.cross_lr=-1e-5", "'student.cross_lr' must not be negative"),
    ("train.max_queries=-3", "'train.max_queries' must not be negative"),
    ("mining.depth=0", "'mining.depth' must be greater than 0"),
    ("diagnostics.metric='foo'", "'diagnostics.metric' has unknown value 'foo'"),
    ("student.model='./no/such/model'", "'student.model': model directory not found"),
    ("test.sf.metrics=['nDCG@@10']", "'test[0].metrics': unknown measure 'nDCG@@10'"),
    ("test.sf.depth=0", "'test[0].depth' must be at least 1"),
    ("test.sf.split='dev'", "'test[0].split' 'dev' is not a split of"),
    ("train.split='dev'", "'train.split' 'dev' is not a split of"),
    ("test.sf.candidates='dataset'", "'test[0].candidates' is 'dataset' but split 'test' of"),
    ("teacher.train=none", "'teacher.train' has"),
    ("first_stage.k1=-0.5", "BM25 'first_stage.k1' must be a finite number, 0 or more, got -0.5"),
    ("first_stage.b=1.5", "BM25 'first_stage.b' must be between 0 and 1, got 1.5"),
])
def test_what_a_run_would_meet_late_is_refused_up_front(tmp_path, shared_data, override, message):
    """Each of these validated, then failed after the teacher, mining or every cell had run (some with a
    traceback, the comparison's measure only when the report was written)."""
    p = tmp_path / "c.toml"
    p.write_text(MINIMAL.format(data=shared_data))
    if override.startswith("teacher.train"):  # an optional table's own error, not "'teacher' has the wrong type"
        p.write_text(MINIMAL.format(data=shared_data) + "[teacher]\nmodel = 'x'\n")
        override = "teacher.train.layers='x'"
        message = "'teacher.train.layers' must be an integer"
    with pytest.raises(UserInputError) as e:
        load_config(p, overrides=[override])
    assert message in str(e.value) and str(e.value).count("\n") == 0


def test_a_candidates_run_file_is_read_when_the_config_is(tmp_path, shared_data):
    """A malformed run, or one made for another split, passed `run --validate-only`; the run then failed in its
    candidates stage, or (no judged query) at the first evaluation with a message about an empty run. The
    runner, given such candidates anyway, says so in one line."""
    p = _write(tmp_path, shared_data)
    (tmp_path / "bad.trec").write_text("1 Q0 4983 1 0.5 x\n2 Q0 4983 1 zero x\n")
    with pytest.raises(UserInputError, match=r"bad\.trec:2: score 'zero' is not a number"):
        load_config(p, overrides=["test.sf.candidates='bad.trec'"])
    (tmp_path / "train.trec").write_text("0 Q0 4983 1 0.5 x\n")  # query 0 is a training query of SciFact
    with pytest.raises(UserInputError, match=r"'test\[0\]\.candidates' \(train\.trec\) holds no judged query of "
                                             r"split 'test'"):
        load_config(p, overrides=["test.sf.candidates='train.trec'"])
    (tmp_path / "test.trec").write_text("1 Q0 4983 1 0.5 x\n")
    assert load_config(p, overrides=["test.sf.candidates='test.trec'"]).tests[0].candidates == "test.trec"

    from rankdistill.data import load_dataset
    from rankdistill.experiments.runner import _keep_judged

    run = tmp_path / "run.trec"
    shutil.copy(tmp_path / "train.trec", run)
    with pytest.raises(UserInputError, match=r"test 'sf': the candidates \(train\.trec\) hold no judged query"):
        _keep_judged(run, load_dataset(shared_data / "scifact").qrels("test"), tag="x", test="sf",
                     source="train.trec")


def test_run_refuses_a_config_it_cannot_read_and_an_output_that_is_a_file(tmp_path, capsys, monkeypatch):
    from rankdistill.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'name = "x\xff"\n')
    assert main(["run", str(bad), "--validate-only"]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err
    assert main(["run", str(tmp_path), "--validate-only"]) == 2
    assert "the config is a directory" in capsys.readouterr().err
    assert main(["run", str(EXAMPLES / "paper.toml"), "--validate-only", "--output", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--output is a file, not a folder" in err and err.count("\n") == 1

    # --validate-only writes nothing, so a folder that takes no files (a read-only checkout) is no obstacle
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["run", str(EXAMPLES / "paper.toml"), "--validate-only"]) == 0
    assert main(["run", str(EXAMPLES / "paper.toml"), "--validate-only", "--output", str(tmp_path / "o")]) == 0


def test_executor_short_form(tmp_path, shared_data):
    """design.md's ``executor = "ray"`` is the table ``[executor] kind = "ray"`` (it was refused as 'must be a
    table')."""
    p = tmp_path / "c.toml"
    p.write_text('executor = "ray"\n' + MINIMAL.format(data=shared_data))
    assert load_config(p).executor.kind == "ray"
    p.write_text('executor = "slurm"\n' + MINIMAL.format(data=shared_data))
    with pytest.raises(UserInputError, match=r"'executor\.kind' has unknown value 'slurm'"):
        load_config(p)


def test_executor_short_form_takes_overrides(tmp_path, shared_data):
    p = tmp_path / "c.toml"
    p.write_text('executor = "processes"\n' + MINIMAL.format(data=shared_data))
    cfg = load_config(p, overrides=["executor.workers=3"])
    assert (cfg.executor.kind, cfg.executor.workers) == ("processes", 3)
