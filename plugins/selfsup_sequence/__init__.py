"""Built-in sequence plugin: Contrastive Predictive Coding (van den Oord et al. 2018) for raw
audio and time series: strided conv encoders with a causal context network, the CPC objective,
window augmentations, and audio (wav folders, FSDD npz) and UCR/UEA (npz, ``.ts``) data sources."""
