"""Built-in TensorBoard logger, made only of selfsup's lifecycle hooks."""
