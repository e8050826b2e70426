"""The text corpus: real stdlib docstrings, no duplicates across splits."""

from __future__ import annotations

import json

from moezoo.data.shards import DatasetIndex


def test_text_corpus(text_dir, read_split):
    def docs(split):
        return [(f["txt"].decode(), json.loads(f["json"])["source"]) for f in read_split(text_dir, split).values()]

    train, val = docs("train"), docs("val")
    assert len(train) == 20 and len(val) == 4
    assert not {d for d, _ in train} & {d for d, _ in val}
    for doc, source in train + val:
        assert len(doc) >= 200 and source and " " in doc
    assert DatasetIndex.load(text_dir).extra["python"].count(".") == 2
