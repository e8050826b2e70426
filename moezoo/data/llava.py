"""Convert LLaVA instruction data (``conversations`` with ``<image>``) into webdataset shards.

The input is the JSON list of LLaVA-1.5 (Liu et al. 2023; ``llava_v1_5_mix665k.json``,
``blip_laion_cc_sbu_558k.json``)::

    [{"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                        {"from": "gpt", "value": "The bus is white and red."}]}, ...]

Each record becomes one sample: the image bytes as they are (``KEY.jpg`` / ``.png`` ...)
and ``KEY.json`` holding the record minus ``image`` plus ``image_file``. Text-only
records (no ``image``) are kept. Keys are the record's position, because LLaVA ids
contain dots and slashes, which webdataset keys cannot; the id stays in the JSON.
A record whose image file is missing is skipped and counted, as at training time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.shards import DatasetIndex, encode_json, write_split

# Image suffix -> the webdataset extension the pipeline decodes.
IMAGE_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}


@dataclass
class LlavaReport:
    """What a conversion did: samples written, and records skipped for a missing image."""

    samples: int = 0
    missing_images: list[str] = field(default_factory=list)


def validate_record(rec: Any, i: int) -> None:
    """Raise ``ValueError`` naming record ``i`` and the problem if it is not a LLaVA record.

    Example:
        >>> validate_record({"conversations": [{"from": "human", "value": "hi"}]}, 0)
        >>> validate_record({"conversation": []}, 3)
        Traceback (most recent call last):
        ...
        ValueError: record 3: expected {'conversations': [{'from': ..., 'value': ...}, ...], 'image'?: str}
    """
    expected = "expected {'conversations': [{'from': ..., 'value': ...}, ...], 'image'?: str}"
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
        raise ValueError(f"record {i}: {expected}")
    for turn in rec["conversations"]:
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str) or not isinstance(turn.get("value"), str):
            raise ValueError(f"record {i}: bad turn {turn!r}; {expected}")
    if "image" in rec and not isinstance(rec["image"], str):
        raise ValueError(f"record {i}: 'image' must be a path relative to IMAGE_DIR, got {rec['image']!r}")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a LLaVA JSON list (``.jsonl`` with one record per line also works)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the LLaVA conversations JSON file")
    text = path.read_text(encoding="utf-8")
    try:
        records = [json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl" else json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a list of LLaVA records") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} holds a {type(records).__name__}; expected a JSON list of LLaVA records")
    for i, rec in enumerate(records):
        validate_record(rec, i)
    return records


def _samples(records: list[dict], image_dir: Path, report: LlavaReport) -> Iterator[dict[str, Any]]:
    for i, rec in enumerate(records):
        key = f"{i:09d}"
        sample: dict[str, Any] = {"__key__": key}
        body = {k: v for k, v in rec.items() if k != "image"}
        if "image" in rec:
            image_path = image_dir / rec["image"]
            ext = IMAGE_SUFFIXES.get(image_path.suffix.lower())
            if ext is None:
                raise ValueError(f"record {i}: image {rec['image']!r} has suffix {image_path.suffix!r}; "
                                 f"supported: {sorted(IMAGE_SUFFIXES)}")  # fmt: skip
            if not image_path.is_file():
                report.missing_images.append(rec["image"])
                continue
            sample[ext] = image_path.read_bytes()
            body["image_file"] = rec["image"]
        sample["json"] = encode_json(body)
        report.samples += 1
        yield sample


def convert_llava(
    conversations: str | Path, image_dir: str | Path, out_dir: str | Path, split: str = "train",
    samples_per_shard: int = 1000,
) -> tuple[DatasetIndex, LlavaReport]:  # fmt: skip
    """Convert a LLaVA JSON + image dir into ``out_dir`` shards of one ``split`` with an ``index.json``.

    Example:
        >>> import json, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "c.json").write_text(json.dumps([{"id": "a.1", "conversations": [
        ...     {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]))
        >>> index, report = convert_llava(d / "c.json", d, d / "out")
        >>> index.splits["train"].samples, report.missing_images
        (1, [])
    """
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image dir {image_dir} not found: pass the folder the 'image' paths are relative to")
    records = load_records(conversations)
    report = LlavaReport()
    info = write_split(out_dir, split, _samples(records, image_dir, report), samples_per_shard)
    if report.samples == 0:
        raise ValueError(f"no record of {conversations} could be converted ({len(report.missing_images)} images missing "
                         f"under {image_dir}, e.g. {report.missing_images[:3]})")  # fmt: skip
    extra = {"source": str(conversations), "records": len(records), "missing_images": len(report.missing_images)}
    index = DatasetIndex("llava", {split: info}, None, extra)
    index.save(out_dir)
    return index, report


def read_conversations(data_dir: str | Path, split: str = "train") -> Iterator[dict[str, Any]]:
    """Read converted shards back as LLaVA records (``image`` restored from ``image_file``), in order.

    The inverse of :func:`convert_llava` up to records skipped for a missing image.
    """
    import webdataset as wds

    index = DatasetIndex.load(data_dir)
    for sample in wds.DataPipeline(wds.SimpleShardList(index.urls(split)), wds.tarfile_to_samples()):
        body = json.loads(sample["json"])
        if "image_file" in body:
            body["image"] = body.pop("image_file")
        yield body
