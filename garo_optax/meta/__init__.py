"""Meta-training of GARO's controller, kept apart from the optimizer.

What is learned is :class:`garo_optax.ControllerParams`; the problems it
learns on are in :mod:`garo_optax.meta.tasks`; how it learns is in
:mod:`garo_optax.meta.estimators`; :mod:`garo_optax.meta.train` is the
command-line trainer. The held-out evaluation of a controller is a benchmark
(``python -m benchmarks.pretrained``). Needs the ``examples`` extra
(scikit-learn, matplotlib, tqdm).
"""
