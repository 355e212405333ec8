"""Everything that runs a network (imports torch): architectures and the torchvision/timm
zoo (:mod:`~opnp.nets.architectures`, :mod:`~opnp.nets.zoo`), model specs, checkpoints and
preprocessing (:mod:`~opnp.nets.models`), training, feature extraction into the feature
store (:mod:`~opnp.nets.extraction`; the store itself is :mod:`opnp.features`),
pruning inside the network, and detectors on a model (:mod:`~opnp.nets.model_api`,
:mod:`~opnp.nets.model_head`, :mod:`~opnp.nets.fit_statistics`, :mod:`~opnp.nets.export`).

This file imports nothing: :mod:`opnp.nets.model_api` must import without torch.
"""
