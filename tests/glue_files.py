"""Small files in GLUE's own TSV layouts (download_glue_data.py), written by tests: what
``data=glue`` reads offline. :func:`write_task` returns, per split, the rows as written
(text, pair, label cell) and the label id (or score) each must read as."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional


class Row(NamedTuple):
    text: str
    pair: Optional[str]
    cell: str  # the label as the file writes it
    expected: float  # the class id (or STS-B score) it means


MNLI_PREFIX = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t" \
              "sentence1_parse\tsentence2_parse\tsentence1\tsentence2"
HEADERS = {
    "SST-2": "sentence\tlabel",
    "MRPC": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
    "QQP": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
    "STS-B": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
             "sentence2\tscore",
    "MNLI": MNLI_PREFIX + "\tlabel1\tgold_label",
    "MNLI-dev": MNLI_PREFIX + "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
    "QNLI": "index\tquestion\tsentence\tlabel",
    "RTE": "index\tsentence1\tsentence2\tlabel",
    "WNLI": "index\tsentence1\tsentence2\tlabel",
}
FOLDERS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
           "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}
# the label cells of each task as GLUE writes them, in HF glue's id order
CELLS = {"cola": ["0", "1"], "sst2": ["0", "1"], "mrpc": ["0", "1"], "qqp": ["0", "1"],
         "mnli": ["entailment", "neutral", "contradiction"],
         "qnli": ["entailment", "not_entailment"], "rte": ["entailment", "not_entailment"],
         "wnli": ["0", "1"]}
PAIRED = {"mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}


def rows(task: str, count: int, start: int = 0) -> list[Row]:
    """``count`` rows of ``task``: distinct texts (one with an unbalanced quote, as GLUE's
    have), every label in turn."""
    made = []
    for index in range(start, start + count):
        quote = '"' if index % 5 == 1 else ""
        text = f"{quote}the {task} sentence number {index} is here"
        pair = f"and its {task} partner {index * 7}" if task in PAIRED else None
        if task == "stsb":
            score = round((index * 0.37) % 5, 3)
            made.append(Row(text, pair, f"{score:.3f}", score))
        else:
            cells = CELLS[task]
            made.append(Row(text, pair, cells[index % len(cells)], index % len(cells)))
    return made


def line(task: str, index: int, row: Row, dev: bool = False) -> str:
    """One line of ``task``'s file in GLUE's layout."""
    text, pair, cell, _ = row
    if task == "cola":
        return f"gj04\t{cell}\t{'*' if cell == '0' else ''}\t{text}"
    if task == "sst2":
        return f"{text}\t{cell}"
    if task == "mrpc":
        return f"{cell}\t{1000 + index}\t{2000 + index}\t{text}\t{pair}"
    if task == "qqp":
        return f"{index}\t{2 * index}\t{2 * index + 1}\t{text}\t{pair}\t{cell}"
    if task == "stsb":
        return f"{index}\tmain-captions\tMSRvid\t2012test\t{index:04d}\tnone\tnone\t" \
               f"{text}\t{pair}\t{cell}"
    if task == "mnli":
        labels = "\t".join([cell] * (5 if dev else 1))
        return f"{index}\t{31193 + index}\t{index}n\tfiction\t( ( a ) )\t( ( b ) )\t" \
               f"(ROOT a)\t(ROOT b)\t{text}\t{pair}\t{labels}\t{cell}"
    return f"{index}\t{text}\t{pair}\t{cell}"  # qnli, rte, wnli


def write_file(path: Path, task: str, made: list[Row], dev: bool = False,
               extra_lines: tuple[str, ...] = ()) -> None:
    header = None if task == "cola" else HEADERS["MNLI-dev" if task == "mnli" and dev
                                                 else FOLDERS[task]]
    lines = ([header] if header else []) + [line(task, i, row, dev)
                                            for i, row in enumerate(made)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([*lines, *extra_lines]) + "\n", encoding="utf-8")


def write_task(root: Path, task: str, train: int = 12, dev: int = 6) -> dict[str, list[Row]]:
    """GLUE's files of ``task`` under ``root/<GLUE dir>``; split name -> rows written."""
    folder = root / FOLDERS[task]
    written = {"train": rows(task, train)}
    write_file(folder / "train.tsv", task, written["train"])
    devs = ({"test": "dev_matched.tsv", "test_mismatched": "dev_mismatched.tsv"}
            if task == "mnli" else {"test": "dev.tsv"})
    for offset, (split, name) in enumerate(devs.items()):
        written[split] = rows(task, dev - offset, start=100 * (offset + 1))
        write_file(folder / name, task, written[split], dev=True)
    return written
