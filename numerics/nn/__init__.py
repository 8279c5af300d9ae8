"""The training library: what a quantized training loop is built from.

``policy`` (which format each tensor role of each layer is cast to), ``modules`` (the quantized
layers and the module swap), ``optim`` (optimizers with quantized weights and state),
``loss_scale``, ``comm`` (quantized all-reduce), ``periodic`` (the periodic regularizer),
``largebatch`` (learning-rate rules for large batches), ``embedding_cache`` and ``telemetry``.

Layer 1: it may import the core (``numerics.formats``, ``kernels``, ``quantize``, ``rounding``,
...) and itself; never the model zoo, ``numerics.train`` or ``numerics.sweeps``
(``tests/test_layers.py`` checks this).
"""
