"""The evaluation harness (docs/evaluation.md).

- :mod:`~editscope.evaluation.data`: benchmark loaders (MMEdit E-VQA/E-IC, VLKEB, the world's
  records) into :class:`~editscope.evaluation.data.EditCase`, and streams with re-edits
  (:func:`~editscope.evaluation.stream.build_stream`);
- :mod:`~editscope.evaluation.metrics`: the metrics as pure functions;
- :mod:`~editscope.evaluation.protocol`: online and retention scoring of editors on one model
  (:func:`~editscope.evaluation.protocol.run_comparison`);
- :mod:`~editscope.evaluation.report` and :mod:`~editscope.evaluation.plots`: ``results.json``,
  ``summary.md`` and PNG plots;
- :mod:`~editscope.evaluation.bench`: the ``editscope bench`` job
  (:func:`~editscope.evaluation.bench.run_bench`).
"""
