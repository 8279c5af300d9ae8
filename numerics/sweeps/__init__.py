"""Sweeps: many training runs from one sweep file, and their comparison.

``spec`` (the sweep-file schema, expansion into runs, run ids), ``engine`` (running a sweep:
the executor factory, resume, the tally, the results index), ``executors`` (local processes,
Ray, Slurm), ``wandb_export``, ``cli`` (``numerics sweep``), ``compare``, ``stats`` and
``report`` (``numerics compare``), ``docgen`` (``numerics docs``).

Layer 4: it may import every layer below (the core, ``numerics.nn``, the zoo,
``numerics.train``) and itself; never ``numerics.cli`` (``tests/test_layers.py`` checks this).
"""
