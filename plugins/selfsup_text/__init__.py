"""Built-in text plugin: SimCSE on Hugging Face transformers, text data sources, STS evaluation."""
