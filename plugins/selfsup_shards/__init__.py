"""selfsup's data-at-scale sources: WebDataset tar shards (``webdataset``) and Hugging Face
datasets saved locally (``hf-dataset``); see docs/shards.md."""
