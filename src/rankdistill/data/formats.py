"""Readers for the corpus, query and qrels formats the dataset specifiers accept.

Corpora: BEIR ``.jsonl`` (``_id``, ``title``, ``text``), ``.tsv`` (``id<TAB>text``) and TREC ``<DOC>`` files.
Queries: ``.jsonl`` (``_id``, ``text``), ``.tsv`` (``id<TAB>text``) and TREC topics (``<top><num><title>``).
Qrels: BEIR ``.tsv`` (header ``query-id corpus-id score``) and TREC qrels (``qid iter docid rel``).
Every reader accepts gzipped files and reports malformed input with file and line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rankdistill.errors import UserInputError
from rankdistill.io import iter_json_objects, iter_lines, json_id


@dataclass(frozen=True)
class Doc:
    """A document; models see :attr:`full_text` (title and text joined by a space)."""

    doc_id: str
    title: str
    text: str

    @property
    def full_text(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text


def _base_suffix(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return Path(name).suffix.lower()


def _first_content_line(path: Path) -> str:
    for _, line in iter_lines(path):
        if line.strip():
            return line.strip()
    return ""


def sniff_format(path: str | Path) -> str:
    """``jsonl``, ``trec`` (SGML-like ``<DOC>``/``<top>``) or ``tsv``, from the name and first line."""
    p = Path(path)
    if _base_suffix(p) in (".jsonl", ".json"):
        return "jsonl"
    first = _first_content_line(p)
    if first.startswith("<"):
        return "trec"
    if first.startswith("{"):
        return "jsonl"
    return "tsv"


_ID_KEYS = ("_id", "doc_id", "docid", "id", "query_id", "qid")


def _json_records(path: Path, kind: str) -> Iterator[tuple[int, dict]]:
    return iter_json_objects(path, fix=f"each line of a {kind} .jsonl file must be one JSON object")


def _record_id(obj: dict, path: Path, n: int) -> str:
    for k in _ID_KEYS:
        if k in obj:
            return json_id(obj[k], k, path, n)
    raise UserInputError("record has no id field (_id)", path=path, line=n,
                         fix='give each record an "_id" (BEIR layout)')


def iter_corpus(path: str | Path) -> Iterator[tuple[int, Doc]]:
    """Yield ``(line_number, Doc)`` from a corpus file of any supported format."""
    p = Path(path)
    fmt = sniff_format(p)
    if fmt == "jsonl":
        for n, obj in _json_records(p, "corpus"):
            yield n, Doc(_record_id(obj, p, n), str(obj.get("title") or ""), str(obj.get("text") or ""))
    elif fmt == "tsv":
        for n, line in iter_lines(p):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) == 2:
                yield n, Doc(parts[0].strip(), "", parts[1])
            elif len(parts) == 3:
                yield n, Doc(parts[0].strip(), parts[1], parts[2])
            else:
                raise UserInputError(f"expected 'id<TAB>text' (or id, title, text), found {len(parts)} field(s)",
                                     path=p, line=n, fix="separate the id from the text with a tab" if len(parts) == 1
                                     else "replace tabs inside the text with spaces")
    else:
        yield from _iter_trec_docs(p)


_TAG = re.compile(r"<(/?)([A-Za-z]+)[^>]*>")


def _iter_trec_docs(path: Path) -> Iterator[tuple[int, Doc]]:
    """TREC SGML documents: ``<DOC><DOCNO>id</DOCNO> ... </DOC>``; ``<TITLE>``/``<HEADLINE>`` give the title,
    everything else inside the document (tags stripped) the text."""
    in_doc = False
    start = 0
    buf: list[str] = []
    for n, line in iter_lines(path):
        stripped = line.strip()
        upper = stripped.upper()
        if upper.startswith("<DOC>") and not upper.startswith("<DOCNO"):
            in_doc, start, buf = True, n, [stripped[5:]]
            if "</DOC>" in upper:
                yield start, _parse_trec_doc("\n".join(buf), path, start)
                in_doc = False
            continue
        if in_doc:
            if "</DOC>" in upper:
                buf.append(stripped[: upper.index("</DOC>")])
                yield start, _parse_trec_doc("\n".join(buf), path, start)
                in_doc = False
            else:
                buf.append(line)
    if in_doc:
        raise UserInputError("<DOC> without closing </DOC>", path=path, line=start,
                             fix="close the document with </DOC> (is the file cut short?)")


def _field(body: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", body, flags=re.S | re.I)
    return m.group(1).strip() if m else None


def _parse_trec_doc(body: str, path: Path, line: int) -> Doc:
    docno = _field(body, "DOCNO")
    if not docno:
        raise UserInputError("<DOC> without <DOCNO>", path=path, line=line,
                             fix="give each document its id in <DOCNO>...</DOCNO>")
    title = _field(body, "TITLE") or _field(body, "HEADLINE") or ""
    rest = re.sub(r"<DOCNO>.*?</DOCNO>", " ", body, flags=re.S | re.I)
    rest = re.sub(r"<(TITLE|HEADLINE)[^>]*>.*?</\1>", " ", rest, flags=re.S | re.I)
    text = " ".join(_TAG.sub(" ", rest).split())
    return Doc(docno, " ".join(title.split()), text)


def read_queries(path: str | Path) -> dict[str, str]:
    """Read queries (``.jsonl``, ``id<TAB>text`` or TREC topics) into ``{query_id: text}``.

    Empty query text is an error (file and line); so is a query id given twice.
    """
    p = Path(path)
    fmt = sniff_format(p)
    out: dict[str, str] = {}
    lines: dict[str, int] = {}

    def add(qid: str, text: str, n: int) -> None:
        if not text.strip():
            raise UserInputError(f"query {qid!r} has empty text", path=p, line=n,
                                 fix="remove the query or give it a text")
        if qid in out:
            raise UserInputError(f"query id {qid!r} appears twice (first at line {lines[qid]})", path=p, line=n,
                                 fix="give each query one line")
        out[qid] = text.strip()
        lines[qid] = n

    if fmt == "jsonl":
        for n, obj in _json_records(p, "queries"):
            add(_record_id(obj, p, n), str(obj.get("text") or obj.get("query") or ""), n)
    elif fmt == "tsv":
        for n, line in iter_lines(p):
            if not line.strip():
                continue
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise UserInputError("expected 'id<TAB>text'", path=p, line=n,
                                     fix="separate the query id from its text with a tab")
            add(parts[0].strip(), parts[1], n)
    else:
        for n, qid, text in _iter_trec_topics(p):
            add(qid, text, n)
    return out


_TOPIC_NUM = re.compile(r"<num>\s*(?:Number:)?\s*([^\s<]+)", flags=re.I)
"""The topic id: after ``<num>`` (and an optional ``Number:``), up to whitespace or the next tag."""
_TOPIC_TITLE = re.compile(r"<title>\s*(?:Topic:)?(.*?)(?=</?[a-z][^<>]*>|\Z)", flags=re.S | re.I)
"""The title text: after ``<title>`` (and an optional ``Topic:``), up to the next opening or closing tag."""


def _iter_trec_topics(path: Path) -> Iterator[tuple[int, str, str]]:
    """TREC topics: ``<top> <num> Number: 301 <title> text ... </top>``; the query text is the title.

    Closing tags are optional: ``<num>301</num><title>text</title>`` reads the same as the classic form.
    """
    in_top = False
    start = 0
    buf: list[str] = []
    for n, line in iter_lines(path):
        upper = line.strip().upper()
        if upper.startswith("<TOP>"):
            in_top, start, buf = True, n, []
            continue
        if upper.startswith("</TOP>"):
            body = "\n".join(buf)
            num = _TOPIC_NUM.search(body)
            title = _TOPIC_TITLE.search(body)
            if not num:
                raise UserInputError("<top> without <num>", path=path, line=start,
                                     fix="give each topic '<num> Number: ID'")
            text = " ".join(title.group(1).split()) if title else ""
            yield start, num.group(1), text
            in_top = False
            continue
        if in_top:
            buf.append(line)
    if in_top:
        raise UserInputError("<top> without closing </top>", path=path, line=start,
                             fix="close the topic with </top> (is the file cut short?)")


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read qrels into ``{query_id: {doc_id: relevance}}``.

    BEIR ``.tsv`` (three columns, optional header ``query-id corpus-id score``) and TREC qrels (four columns
    ``qid iteration docid relevance``) are recognised per file; a line with another number of fields is an
    error naming the file and line.
    """
    p = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    width: int | None = None
    for n, line in iter_lines(p):
        if not line.strip():
            continue
        parts = line.split()
        if width is None:
            if len(parts) == 3 and not _is_number(parts[2]):
                width = 3  # header line of BEIR qrels
                continue
            if len(parts) not in (3, 4):
                raise UserInputError(f"a qrels line needs 3 (BEIR) or 4 (TREC) fields, found {len(parts)}",
                                     path=p, line=n, fix="give 'query-id corpus-id score' or 'qid 0 docid rel'")
            width = len(parts)
        if len(parts) != width:
            raise UserInputError(f"expected {width} fields like the first line, found {len(parts)}", path=p,
                                 line=n, fix="fix or remove the line")
        qid, did, rel = (parts[0], parts[1], parts[2]) if width == 3 else (parts[0], parts[2], parts[3])
        grade = _relevance(rel, p, n)
        judged = qrels.setdefault(qid, {})
        if judged.setdefault(did, grade) != grade:  # a repeated line with the same grade is harmless
            raise UserInputError(f"document {did!r} of query {qid!r} is judged {grade} here and {judged[did]} on an "
                                 "earlier line", path=p, line=n, fix="keep one grade per (query, document)")
    return qrels


def _is_number(text: str) -> bool:
    """Whether ``text`` parses as a number (``inf`` and ``nan`` included): the BEIR header's ``score`` does not."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _relevance(text: str, path: Path, line: int) -> int:
    """A qrels relevance grade: an integer (``2``; ``2.0`` is accepted as 2); anything else is an error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():  # also False for inf and nan
        raise UserInputError(f"relevance {text!r} is not an integer", path=path, line=line,
                             fix="relevance grades are integers such as 0, 1 or 2")
    return int(value)
