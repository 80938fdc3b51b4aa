"""Built-in cross-modal plugin: contrastive pretraining on paired data (CLIP, SigLIP, LiT).

An item is a dict of modality -> value (``{"image": uint8 (C, H, W), "text": [captions]}``); the
``pairs`` augmentation makes one view per modality, the ``two-tower`` encoder embeds each
modality with its own nested encoder into one space, and ``clip`` / ``siglip`` align the two.
Retrieval and zero-shot classification measure the result; the export writes each tower alone
as well (``docs/pairs.md``).
"""
