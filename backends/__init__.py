"""Backends: thin adapters that connect models to gpo_core's game loop and update rules.

Each backend satisfies the structural protocols of :mod:`gpo_core.protocols`; nothing here is
imported by ``gpo_core``. Submodules are imported on use so that, for example, the torch-free
tabular backend does not load torch:

* :mod:`backends.tabular` -- exact softmax-table policies (the LLM loop in miniature).
* :mod:`backends.hf` -- ``transformers`` causal LMs (optionally with ``peft`` adapters).
* :mod:`backends.objectives` -- sampled surrogate losses whose maximiser is the rule's target.
* :mod:`backends.rewards` -- sequence-classifier, callable, lexical and pairwise-judge rewards.
* :mod:`backends.diversity` -- SelfBLEU and embedding-novelty rewards against the prompt history
  (over :mod:`backends.selfbleu`, :mod:`backends.embedders` and the incremental indexes of
  :mod:`backends.diversity_index`).
* :mod:`backends.tracking` -- ``on_round`` callbacks for TensorBoard and Weights & Biases.
"""
