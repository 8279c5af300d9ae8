"""The application: one training run from a recipe file to a run directory.

``recipe`` and ``recipe_files`` (the inert recipe files, their schema and ``--set`` overrides),
``tasks`` (image, language, recsys: the loss and the metrics of each), ``trainer`` (the loop),
``launch`` (data-parallel processes), ``rundir`` (the run directory and its files), ``logger``
and ``summary``. The metric functions themselves are core (``numerics.metrics``): the planted
click data of the zoo scores itself with them.

Layer 3: it may import the core, ``numerics.nn``, the model and data zoo (``numerics.models``,
``numerics.data``, ``numerics.ngram``, ``numerics.zoo``) and itself; never ``numerics.sweeps``
or the command line (``tests/test_layers.py`` checks this).
"""
