"""Errors about a key of a TOML file (a study config, a dataset manifest) name the line the key is on."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from rankdistill.errors import UserInputError
from rankdistill.experiments.config import load_config
from rankdistill.tomlines import decode_error, key_line, key_lines

TEXT = '''name = "t"   # a comment with [brackets] and a = sign
[train]
dataset = "x"
[[test]]
name = "a"
metrics = [
  "nDCG@10",   # not a key = here
  "AP(rel=2)",
]
[[test]]
name = "b"
notes = """a multi-line string
fake = 1
[not.a.table]
"""
split = "dev"
[teacher.train]
layers = 2
grid . "seeds" = [0, 1]
'''


def test_key_lines_number_tables_arrays_of_tables_and_dotted_keys():
    lines = key_lines(TEXT)
    assert lines["name"] == 1 and lines["train"] == 2 and lines["train.dataset"] == 3
    assert lines["test[0]"] == 4 and lines["test[0].name"] == 5 and lines["test[0].metrics"] == 6
    assert lines["test[1]"] == 10 and lines["test[1].name"] == 11 and lines["test[1].notes"] == 12
    assert lines["test[1].split"] == 16, "a multi-line string's lines are not keys or tables"
    assert "test[1].fake" not in lines and "not.a.table" not in lines and "test[0].AP(rel" not in lines
    assert lines["teacher.train.layers"] == 18 and lines["teacher.train.grid.seeds"] == 19
    assert tomllib.loads(TEXT)["test"][1]["split"] == "dev"  # the text is valid TOML: the numbering is of real keys
    # a message names the key first, a value after it; an item index counts as its key; a table by [name]
    assert key_line(TEXT, "'test[1].split' 'dev' is not a split of x") == ("test[1].split", 16)
    assert key_line(TEXT, "'test[0].metrics[1]' unknown measure") == ("test[0].metrics", 6)
    assert key_line(TEXT, "[teacher.train] needs 'layers'") == ("teacher.train", 17)
    assert key_line(TEXT, "'student.lr' must be positive") is None


def test_config_and_manifest_errors_name_the_line(tmp_path, shared_data):
    """Every config and manifest error named the key but no line (`c.toml: unknown key 'student.budget_doc'`)."""
    config = tmp_path / "c.toml"
    config.write_text(f'name = "t"\n[train]\ndataset = "{shared_data}/scifact"\n[[test]]\nname = "sf"\n'
                      f'dataset = "{shared_data}/scifact"\n[[test]]\nname = "two"\ndataset = "{shared_data}/scifact"\n'
                      'split = "dev"\n[grid]\nstrategies = [\n  "random",\n]\nlosses = ["lce"]\n')
    with pytest.raises(UserInputError, match=r"c\.toml:10: 'test\[1\]\.split' 'dev' is not a split"):
        load_config(config)
    config.write_text(config.read_text().replace('"random"', '"x"'))
    with pytest.raises(UserInputError, match=r"c\.toml:12: 'grid\.strategies' has unknown value 'x' \("):
        load_config(config, overrides=["test.two.split='test'"])
    config.write_text(config.read_text().replace('"x"', '"random"'))
    # a test's key set as test.NAME.KEY is blamed on the --set too, not on the line of the file's value
    with pytest.raises(UserInputError) as e:
        load_config(config, overrides=["test.two.split=dev"])
    assert e.value.line is None and "as given by --set test.two.split=dev" in str(e.value)
    # an error that names a line always says what to do about it, if only which key to change
    config.write_text(config.read_text().replace('split = "dev"', 'split = "test"') + "[comparison]\nmargin = 0.0\n")
    with pytest.raises(UserInputError) as e:
        load_config(config)
    assert e.value.line == 17 and e.value.fix
    config.write_text(config.read_text().replace("margin = 0.0", "margin = 0.01").replace('split = "test"',
                                                                                           'split = "dev"'))
    # a value given by --set is blamed on the --set, with no line of the file
    with pytest.raises(UserInputError) as e:
        load_config(config, overrides=["test.two.split='test'", "student.lr=0.0"])
    assert e.value.line is None and "as given by --set student.lr=0.0" in str(e.value)
    config.write_text('name = "t"\n[grid]\nseeds = [0,,\n]\n')
    with pytest.raises(UserInputError, match=r"c\.toml:3: invalid TOML"):
        load_config(config)

    manifest = tmp_path / "m.toml"
    manifest.write_text(f'corpus = "{shared_data}/trec-dl/passages.dl19-dl20-pool.tsv"\n[splits.dl19]\n'
                        f'queries = "{shared_data}/trec-dl/topics.dl19-passage.txt"\n'
                        f'qrels = "{shared_data}/trec-dl/qrels.dl19-passage.txt"\nrel_threshold = "2"\n')
    from rankdistill.data import load_dataset

    with pytest.raises(UserInputError, match=r"m\.toml:5: 'splits\.dl19\.rel_threshold' must be an integer"):
        load_dataset(manifest)
    manifest.write_text(manifest.read_text().replace('rel_threshold = "2"', "rel_treshold = 2"))
    with pytest.raises(UserInputError, match=r"m\.toml:5: unknown key\(s\) 'splits\.dl19\.rel_treshold'"):
        load_dataset(manifest)


def test_a_decode_error_without_a_line_has_none():
    e = decode_error(ValueError("Invalid value (at end of document)"), Path("x.toml"))
    assert e.line is None and str(e).startswith("x.toml: invalid TOML")
