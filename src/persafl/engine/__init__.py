"""The engine: time, staleness and order (``schedule``, ``schedule_clock``, ``speeds``), client
jobs and how they are computed (``jobs``, ``batches``, ``fused``), the replay of a trace
(``executor``, one run or a group of runs stacked together) and evaluation (``evaluate``).

Methods (``persafl.methods``) never see it: they receive a ``grad_fn`` and parameter dicts.
"""
