"""A small BEIR-format folder generated from the bundled corpus: queries are docs' first sentences, reworded."""

from __future__ import annotations

import json
import re
from pathlib import Path

from streams.devtools.demo import CORPUS


def write_beir_folder(target: Path, documents: int = 60, queries: int = 25) -> Path:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    picked = [r for r in rows if r["source"] == "library-reference"][:documents]
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w") as corpus:
        for row in picked:
            corpus.write(json.dumps({"_id": row["doc_id"], "title": row["title"], "text": row["text"]}) + "\n")
    with (target / "queries.jsonl").open("w") as out, (target / "qrels" / "test.tsv").open("w") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for i, row in enumerate(picked[:queries]):
            first = re.split(r"(?<=[.!?])\s", row["text"].strip(), maxsplit=1)[0]
            out.write(json.dumps({"_id": f"q{i}", "text": f"what does this do: {first.lower()}"}) + "\n")
            qrels.write(f"q{i}\t{row['doc_id']}\t1\n")
    return target
