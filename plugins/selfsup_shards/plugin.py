"""Registers the sharded data sources; declared as the ``shards`` entry point of selfsup-toolkit."""

from __future__ import annotations

from toolkit import hookimpl
from toolkit.hookspecs import Register

from selfsup_shards.huggingface import HFDataset
from selfsup_shards.webdataset import WebDataset


@hookimpl
def register_datasources(register: Register) -> None:
    register("webdataset", WebDataset)
    register("hf-dataset", HFDataset)
