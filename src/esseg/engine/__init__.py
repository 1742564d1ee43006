"""Training engine: plain functions over a visible loop (torchvision references style).

- ``esseg.engine.config``: the config schema (dataclasses), YAML loading, ``--set`` overrides.
- ``esseg.engine.train``: :func:`~esseg.engine.train.train` and ``train_step``.
- ``esseg.engine.evaluate``: :func:`~esseg.engine.evaluate.evaluate` and ``evaluate_checkpoint``.
- ``esseg.engine.predict``: ``predict_files`` (label / colour / overlay PNGs).
- ``esseg.engine.run``: :class:`~esseg.engine.run.RunFolder`, the run folder's layout.
- ``esseg.engine.checkpoint``, ``data``, ``distributed``, ``logging``: the helpers.
- ``esseg.engine.demo``: ``esseg demo``; ``esseg.engine.commands``: the CLI subcommands.

Nothing is imported here, so ``esseg.engine.train`` and ``esseg.engine.evaluate`` name the modules.
"""
