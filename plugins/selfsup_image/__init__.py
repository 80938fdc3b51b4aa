"""Built-in image plugin: SimCLR augmentation, ResNet encoders, NT-Xent, image data sources."""
