"""selfsup-vicreg: VICReg and Barlow Twins objectives for selfsup (see ``selfsup_vicreg.plugin``)."""
