"""Built-in image plugin: SimCLR augmentation (with multi-crop), ResNet encoders, image data sources,
and the SimCLR, MoCo v2, BYOL, SimSiam, SupCon and InstDisc objectives."""
