"""A TFDS builder for the Multifaceted Collection schemas, built from local files (or any `sources.py` input).

Works without TensorFlow: the dataset is written as ArrayRecord and read back with `as_data_source`
(random access, no tf.data). Rows keep their source order (shuffling is the pipeline's job), so row indices
in data reports match the input file.

    python -m janus_jax.data.tfds_builder --format sft --train data/samples/sft.jsonl --data_dir /tmp/tfds

prints the prepared directory, which `config.data.source` accepts as is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

from janus_jax.data.report import DataReport
from janus_jax.data.sources import load_rows

FILE_FORMAT = "array_record"


def _text(row: dict, key: str, where: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "missing" if value is None else type(value).__name__
        raise ValueError(f"{where}: field {key!r} must be a string ({got})")
    return value


def _records(row: dict, key: str, fields: tuple[str, ...], where: str, *, required: bool = True) -> list[dict]:
    value = row.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        got = "missing" if value is None else type(value).__name__
        raise ValueError(f"{where}: field {key!r} must be a list of {{{', '.join(fields)}}} objects ({got})")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"{where}: {key}[{i}] must be an object, got {type(item).__name__}")
        out.append({f: _text(item, f, f"{where}: {key}[{i}]") for f in fields})
    return out


PREFERENCE_FIELDS = ("dimension", "subdimension", "preference", "description")
MESSAGE_FIELDS = ("content", "role")


def _features(fmt: str) -> tfds.features.FeaturesDict:
    text = tfds.features.Text
    if fmt == "sft":
        return tfds.features.FeaturesDict({
            "main_source": text(), "original_source": text(),
            "preference_set": tfds.features.Sequence({f: text() for f in PREFERENCE_FIELDS}),
            "system": text(), "prompt": text(), "output": text(),
        })
    if fmt == "dpo":
        message = {f: text() for f in MESSAGE_FIELDS}
        return tfds.features.FeaturesDict({
            "main_source": text(), "original_source": text(), "system": text(), "prompt": text(),
            "chosen": tfds.features.Sequence(message), "rejected": tfds.features.Sequence(message),
        })
    return tfds.features.FeaturesDict({"input": text(), "chosen": text(), "rejected": text()})


def convert_row(row: dict, fmt: str, where: str) -> dict:
    """A row in the exact feature layout; a malformed row is an error naming it and the field."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: row must be an object, got {type(row).__name__}")
    if fmt == "rm":
        return {k: _text(row, k, where) for k in ("input", "chosen", "rejected")}
    out = {
        "main_source": _text(row, "main_source", where, required=False),
        "original_source": _text(row, "original_source", where, required=False),
        "system": _text(row, "system", where),
        "prompt": _text(row, "prompt", where),
    }
    if fmt == "sft":
        out["preference_set"] = _records(row, "preference_set", PREFERENCE_FIELDS, where, required=False)
        out["output"] = _text(row, "output", where)
    else:
        out["chosen"] = _records(row, "chosen", MESSAGE_FIELDS, where)
        out["rejected"] = _records(row, "rejected", MESSAGE_FIELDS, where)
    return out


class MultifacetedCollection(tfds.core.GeneratorBasedBuilder):
    """Multifaceted Collection (SFT, DPO/ORPO or RM schema) from the given source per split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Released schemas of the Multifaceted Collection (SFT, DPO/ORPO, RM)."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="sft", description="main_source, original_source, preference_set, system, "
                                                        "prompt, output"),
        tfds.core.BuilderConfig(name="dpo", description="main_source, original_source, system, prompt, "
                                                        "chosen/rejected message lists (also ORPO)"),
        tfds.core.BuilderConfig(name="rm", description="input, chosen, rejected"),
    ]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # The stock lookup goes through the `importlib_resources` backport, which TFDS does not install;
        # this file's own path is what it would find (it only looks for a checksums file beside it).
        return epath.Path(__file__)

    def __init__(self, *, sources: dict[str, str] | None = None, **kwargs):
        self._sources = dict(sources or {})
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="System messages, instructions and gold responses of the Multifaceted Collection schema.",
            features=_features(self.builder_config.name),
            disable_shuffling=True,  # keep source order: row indices in reports match the input
            homepage="https://huggingface.co/datasets/kaist-ai/Multifaceted-Collection",
        )

    def _split_generators(self, dl_manager):
        if not self._sources:
            raise ValueError("MultifacetedCollection needs sources={'train': path, ...} to build")
        return {split: self._generate_examples(source, split) for split, source in self._sources.items()}

    def _generate_examples(self, source: str, split: str):
        report = DataReport()
        rows = load_rows(source, split, report, split)
        if report.issues:
            raise ValueError(f"{source}: " + "; ".join(str(i) for i in report.issues[:5]))
        fmt = self.builder_config.name
        for index, row in enumerate(rows):
            yield index, convert_row(row, fmt, f"{source} row {index}")


def build(sources: dict[str, str], data_dir: str | Path, fmt: str) -> Path:
    """Prepare the dataset under `data_dir` and return its directory (a valid `config.data.source`)."""
    builder = MultifacetedCollection(sources=sources, config=fmt, data_dir=str(data_dir), file_format=FILE_FORMAT)
    builder.download_and_prepare(file_format=FILE_FORMAT)
    return Path(builder.data_dir)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", choices=("sft", "dpo", "rm"), required=True)
    p.add_argument("--train", required=True, help="train split source: a file, shard directory or hub name")
    p.add_argument("--test", default="", help="optional test split source")
    p.add_argument("--data_dir", required=True)
    args = p.parse_args(argv)
    sources = {"train": args.train, **({"test": args.test} if args.test else {})}
    print(build(sources, args.data_dir, args.format))


if __name__ == "__main__":
    main()
