"""Registers the text components; declared as the ``text`` entry point of selfsup-toolkit."""
