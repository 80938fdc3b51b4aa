"""selfsup-dummy: a minimal third-party selfsup plugin (see ``selfsup_dummy.plugin``)."""
