"""Collections and file formats: datasets, documents, runs and training groups."""

from rankdistill.data.dataset import Dataset, SplitFiles, load_dataset, resolve_spec
from rankdistill.data.docstore import DocStore
from rankdistill.data.formats import Doc, read_qrels, read_queries
from rankdistill.data.groups import Group, iter_groups, read_groups, write_groups
from rankdistill.data.runs import Run, ranked, read_run, write_run

__all__ = [
    "Dataset", "Doc", "DocStore", "Group", "Run", "SplitFiles", "iter_groups", "load_dataset", "ranked",
    "read_groups", "read_qrels", "read_queries", "read_run", "resolve_spec", "write_groups", "write_run",
]
