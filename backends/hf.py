r"""``HFPolicy``: a ``transformers`` causal LM (optionally with ``peft`` adapters) as a GPO policy.

The policy is the LM's own conditional distribution over outputs, read as strings:

.. math::
    \pi(y\mid c) = \prod_{j=1}^{|y|} p_\theta(y_j \mid x, y_{<j})
                   \cdot \Big(\sum_{s\in S} p_\theta(s\mid x, y)\Big)^{[\,|y| < m\,]},

where :math:`x` is the tokenised prompt (the context passed through the template), :math:`y` the
output's tokens, :math:`m` = ``generation.max_new_tokens`` and :math:`S` the stop ids (the
tokenizer's eos, the model's ``generation_config.eos_token_id``, an int or a list, and
``stop_token_ids``): an output that stopped by itself carries the end term (any stop id ends it
with the same text), one cut at :math:`m` tokens does not. Special tokens other than the stops
(pad, bos, added chat markers, ids past the tokenizer's vocabulary) are excluded from
:math:`p_\theta` (their logits are :math:`-\infty`), so decoding with the special tokens stripped
loses nothing. With the default generation settings (temperature 1, ``top_p`` 1, no repetition
penalty) :meth:`HFPolicy.log_prob` is exactly the log-probability that :meth:`HFPolicy.sample`
returns the output, and the probabilities of all outputs of at most :math:`m` tokens sum to 1.
Other settings sample off-policy: :meth:`~HFPolicy.update` still treats its rows as draws from
:math:`\pi_t`. An output the policy sampled is scored from the token ids it sampled (the last
``token_cache_size`` rows are kept): its text is for rewards and logs, and may spell special
tokens out of ordinary pieces. Any other output is scored as its canonical encoding.

An update fits the network to the mirror step's target to ``fit_tol`` (:mod:`backends.hf_update`,
:mod:`backends.fit`). So ``eta`` means here what it means on a matrix game: the fitted policy
moves by the mirror step's log-ratio on the experience, to within ``sqrt(fit_tol)`` of its size,
whatever the learning rate (``tests/test_lm_twin.py`` measures it).

Each :meth:`~HFPolicy.update` starts a fresh optimiser by default (why, and when AdamW's moments
persist: :mod:`backends.hf_update`). The model runs in ``eval()`` mode (no dropout), so scoring
is deterministic and :math:`\pi_t` is the policy that sampled; with ``gradient_checkpointing`` it
is in training mode, every dropout zeroed, for the gradient evaluations alone.

This module is glue: :mod:`backends.hf_build` (checks, then assembly), :mod:`backends.hf_tokens`
(templates, prompt budgets, rows, sampled ids), :mod:`backends.hf_sample` (:meth:`~HFPolicy.sample`:
prompts, row keys, generation batches), :mod:`backends.hf_sampling` (the sampler and its random
streams), :mod:`backends.hf_scoring` (padding, forwards, log-probabilities, micro-batched
backward), :mod:`backends.hf_update` (the fit and the optimiser), :mod:`backends.hf_snapshots`
(snapshot I/O) and :mod:`backends.hf_checks` (argument checks) do the work.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from backends import hf_checks as _chk
from backends import hf_snapshots as _snap
from backends._texts import _as_texts
from backends.hf_build import build
from backends.hf_sample import SamplingMethods
from backends.hf_sampling import GenerationSettings, _row_keys, _uniforms  # noqa: F401
from backends.hf_sampling import check_stream_ids
from backends.hf_snapshots import load_snapshot, save_snapshot  # noqa: F401
from backends.hf_tokens import Rows
from backends.hf_update import OptimizerMethods, _merge_repeated_rows, train_mode
from gpo_core._validate import short
from gpo_core.protocols import Experience, MirrorStep

__all__ = ["GenerationSettings", "HFPolicy", "save_snapshot", "load_snapshot"]
# _merge_repeated_rows, _row_keys, _uniforms and _check_stream_ids stay importable from here
_check_stream_ids = check_stream_ids


class HFPolicy(SamplingMethods, _snap.Snapshots, OptimizerMethods):
    """A ``transformers`` causal LM as a :class:`gpo_core.protocols.Policy`.

    Both objectives compare a context's rows with each other (they centre on the context's own
    mean), so a context needs two different outputs to move the policy: ``centres_contexts`` tells
    :func:`gpo_core.alignment.run_game` to warn when a batch gives every context one output.

    The policy takes ownership of ``model``: it is moved to ``device``/``dtype``, put in
    ``eval()`` mode, wrapped by ``peft`` when ``peft_config`` is given, and trained in place.

    Args:
        model: a causal LM (``AutoModelForCausalLM``-like: ``model(input_ids, attention_mask,
            ...)`` returns ``.logits``), or a ``peft.PeftModel`` around one.
        tokenizer: its tokenizer. With no pad token the eos token pads (padding is always masked);
            with neither, construction fails.
        template: how a context becomes the prompt text: a string containing ``"{context}"``, a
            callable ``context -> str``, or ``None``: the tokenizer's chat template with the
            context as the user turn when it has one, else the raw context.
        generation: sampling settings; ``max_new_tokens`` is part of the policy's definition.
        objective: ``"regression"`` (:func:`backends.objectives.target_log_ratio_regression_loss`)
            or ``"pg"`` (:func:`backends.objectives.kl_regularized_pg_loss`).
        lr: AdamW learning rate for ``optimizer="adam"`` (try 1e-5 for full fine-tuning, 1e-4
            for LoRA); L-BFGS needs none (its line search sets the step).
        optimizer: ``"lbfgs"`` (default: quasi-Newton with a strong-Wolfe line search, scale-free,
            few evaluations; memory ``2 * 10`` copies of the trainable parameters, so use LoRA on
            large models) or ``"adam"`` (AdamW); see :mod:`backends.fit`.
        fit_tol: stop when the residual of the fit is at most this share of the move asked for
            (``R <= fit_tol * R0``: the log-ratio's root-mean-square error is then at most
            ``sqrt(fit_tol)`` of the move's). With bfloat16 forwards the residual floors near
            ``1e-3`` of the move (the forward's rounding; ``tests/test_hf.py``), so a tighter
            ``fit_tol`` spends the whole ``max_fit_steps``: use float32 for tight fits.
        fit_atol: ... or at most this in absolute terms (float32 log-probabilities floor).
        max_fit_steps: the budget of gradient evaluations per :meth:`update` (a safety net).
        inner_steps: the old name of ``max_fit_steps`` (kept for existing configs).
        micro_batch_size: rows per scoring and training forward; an update's gradient is
            accumulated over its micro-batches (exactly that of one batch).
        generation_batch_size: rows per sampling batch (``None``: ``micro_batch_size``);
            sampling keeps no activations for a backward, so it can take more.
        gradient_checkpointing: recompute activations in the backward instead of keeping them
            (less memory, one more forward per gradient evaluation); the model is in training
            mode only for those forwards and backwards, with every dropout set to 0.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); ``None`` keeps the
            model's device.
        dtype: ``"float32"``, or ``"bfloat16"``: forwards run under ``torch.autocast`` in
            bfloat16 while the trainable weights stay float32 master weights (a ``peft`` base is
            stored in bfloat16); ``None`` keeps the model's dtype (bfloat16 trainable weights
            are then treated as ``"bfloat16"``). Log-probabilities are always float32.
        peft_config: a ``peft`` config (e.g. ``LoraConfig``) to wrap the model with
            ``peft.get_peft_model``; only the adapter weights train, and the reference is the same
            network with its adapters disabled (no copy).
        reference: the reference model :math:`\\rho` (same tokenizer; it is moved to ``device``,
            put in ``eval()`` mode and frozen); ``None``: a frozen deep copy of the initial model,
            or the adapter-free base under ``peft``.
        truncate_prompts: keep the last tokens of prompts longer than the prompt budget instead
            of raising.
        max_prompt_tokens: the prompt budget in tokens; ``None``: the model context minus
            ``max_new_tokens`` (unlimited when the model config has no context length).
        max_grad_norm: clip the gradient to this norm before each AdamW step (``None``: never).
        fresh_optimizer: start each :meth:`update` with a fresh optimiser (default; why:
            :mod:`backends.hf_update`), or carry AdamW's moments across calls (``"adam"`` only).
        grad_sync: called with the trainable parameters after each backward pass and before
            clipping, e.g. :meth:`backends.distributed.TorchComm.average_gradients` to train
            data-parallel (every rank then takes the same step). Needs ``value_sync``.
        value_sync: with ``grad_sync``, maps ``{name: float}`` to the mean over ranks (e.g.
            :meth:`backends.distributed.TorchComm.mean`), so that every rank sees the same loss and
            residual and takes the same line-search and stopping decisions.
        weight_decay: AdamW's decoupled weight decay. The default 0 keeps the fixed point of the
            update exactly the target; decay pulls the weights toward 0 instead.
        stop_token_ids: ids that end an output besides the tokenizer's eos and the model's
            ``generation_config.eos_token_id`` (an int or a list; e.g. Llama 3's ``<|eot_id|>``
            is listed there): any of them ends a row (module docstring).
        reference_metrics: score the reference on every update for the ``kl/reference``
            metrics; ``False`` skips that forward when the step's ``alpha`` is 0 (the target
            then does not depend on the reference) and leaves ``kl/reference`` and
            ``kl/reference_is`` out of the update's metrics (as TRL's GRPO does at ``beta=0``).
        token_cache_size: how many sampled ``(context, output)`` rows keep their token ids
            (least recently used first out; 0 keeps none), so that :meth:`log_prob` and
            :meth:`update` score what was sampled (:mod:`backends.hf_tokens`).
        name: how errors and ``repr`` name this policy (``"defender"``, ``"adversary"``).

    Raises:
        TypeError, ValueError: for any invalid argument, naming it and the fix.

    Examples:
        >>> from backends.tiny import tiny_llama, word_tokenizer
        >>> tok = word_tokenizer(["yes", "no"])
        >>> policy = HFPolicy(tiny_llama(tok, 16, 1, heads=2), tok,
        ...                   generation=GenerationSettings(max_new_tokens=1))
        >>> outs = ["", "yes", "no"]  # the whole completion space
        >>> float(np.exp(policy.log_prob(["yes"] * 3, outs)).sum().round(6))
        1.0
    """

    centres_contexts = True  # see the class docstring; read by run_game's no-signal warning

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        template: str | Callable[[str], str] | None = None,
        generation: GenerationSettings = GenerationSettings(),
        objective: str = "regression",
        lr: float = 1e-5,
        optimizer: str = "lbfgs",
        fit_tol: float = 1e-2,
        fit_atol: float = 1e-8,
        max_fit_steps: int = 50,
        inner_steps: int | None = None,
        micro_batch_size: int = 16,
        generation_batch_size: int | None = None,
        gradient_checkpointing: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        peft_config: Any = None,
        reference: Any = None,
        truncate_prompts: bool = False,
        max_prompt_tokens: int | None = None,
        max_grad_norm: float | None = 1.0,
        weight_decay: float = 0.0,
        fresh_optimizer: bool = True,
        grad_sync: Callable[[Sequence[torch.nn.Parameter]], None] | None = None,
        value_sync: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None,
        stop_token_ids: int | Sequence[int] | None = None,
        token_cache_size: int = 32768,
        reference_metrics: bool = True,
        name: str = "policy",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {short(name)}")
        # every argument but the model and the tokenizer, by name
        args = {k: v for k, v in locals().items()
                if k not in ("self", "model", "tokenizer", "reference_metrics")}
        reference_metrics = _chk.check_bool(reference_metrics, "reference_metrics")
        parts = build(model, tokenizer, **args)
        parts.trainer.reference_metrics = reference_metrics
        self._name, self._tokenizer, self._generation = name, tokenizer, generation
        self._objective, self._optimizer_kind = objective, optimizer
        self._model, self._reference, self._peft = parts.model, parts.reference, parts.peft
        self._device, self._micro, self._tok_len = parts.device, parts.micro, parts.tok_len
        self._eos_id, self._pad_id, self._stop_ids = parts.eos_id, parts.pad_id, parts.stop_ids
        self._encoder, self._scorer, self._trainer = parts.encoder, parts.scorer, parts.trainer
        self._sampled, self._gen_batch = parts.sampled, parts.gen_batch
        self._checkpointing = parts.checkpointing
        self._fresh_optimizer = fresh_optimizer

    # ------------------------------------------------------------------------------- properties

    @property
    def model(self) -> torch.nn.Module:
        """The trained network (the ``peft`` wrapper under ``peft``)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (never modified: a missing pad token is handled internally)."""
        return self._tokenizer

    @property
    def name(self) -> str:
        """The name used in errors."""
        return self._name

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self._device

    @property
    def generation(self) -> GenerationSettings:
        """The sampling settings."""
        return self._generation

    @property
    def stateful_optimizer(self) -> bool:
        """Whether optimiser state carries from one update to the next (AdamW with
        ``fresh_optimizer=False``): then a checkpoint of the parameters alone does not resume
        exactly, and :func:`gpo_core.alignment.run_game` refuses to checkpoint it."""
        return self._optimizer_kind == "adam" and not self._fresh_optimizer

    @property
    def pad_token_id(self) -> int:
        """The id used for padding (the eos id when the tokenizer has no pad token)."""
        return self._pad_id

    def describe(self) -> str:
        """What defines this policy, for a checkpoint to compare on resume (stable across runs):
        the model's class and config, the training settings, the stop ids, the precision and
        whether activations are recomputed."""
        base = self._model.get_base_model() if self._peft else self._model
        config = {k: v for k, v in base.config.to_dict().items() if k != "transformers_version"}
        digest = hashlib.blake2b(
            json.dumps(config, sort_keys=True, default=str).encode(), digest_size=8
        ).hexdigest()
        t = self._trainer
        # the precision forwards run in: autocast's, else the trainable weights' own
        dtype = self._scorer.autocast or t.params[0].dtype
        return (
            f"HFPolicy(name={self._name!r}, model={type(base).__name__}, config={digest}, "
            f"peft={self._peft}, objective={self._objective!r}, "
            f"optimizer={self._optimizer_kind!r}, fit_tol={t.fit_tol!r}, "
            f"max_fit_steps={t.max_fit_steps}, generation={self._generation!r}, "
            f"vocab={self._tok_len}, stop_token_ids={list(self._stop_ids)}, "
            f"dtype={str(dtype).removeprefix('torch.')}, "
            f"gradient_checkpointing={self._checkpointing})"
        )

    def __repr__(self) -> str:
        return (
            f"HFPolicy(name={self._name!r}, model={type(self._model).__name__}, "
            f"objective={self._objective!r}, peft={self._peft}, device={str(self._device)!r})"
        )

    # --------------------------------------------------------------------------------- protocol

    def _rows(self, contexts: Any, outputs: Any) -> Rows:
        ctx, out = _as_texts(contexts, "contexts"), _as_texts(outputs, "outputs")
        if len(ctx) != len(out):
            raise ValueError(
                f"contexts and outputs must have one entry per row, got {len(ctx)} contexts and "
                f"{len(out)} outputs"
            )
        return self._encoder.rows(ctx, out, self._sampled.get)

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """``log pi(output_i | context_i)`` per row (module docstring), float64, shape ``(N,)``.

        An output of more than ``max_new_tokens`` tokens (which :meth:`sample` never returns) is
        scored like one cut there: the probability of its tokens, without an eos term.

        Raises:
            TypeError, ValueError: for mismatched lengths, non-strings, or rows that do not fit
                the model context.
        """
        rows = self._rows(contexts, outputs)
        if not rows.seqs:
            return np.zeros(0)
        with torch.no_grad():
            return self._score(self._model, rows).double().cpu().numpy()

    def token_log_probs(self, contexts: Sequence[str], outputs: Sequence[str]) -> list[np.ndarray]:
        """Per-token ``log pi(token_k | context, tokens_<k)`` of each output, float64 arrays.

        Row ``i``'s array sums to ``log_prob(contexts, outputs)[i]`` (its last entry is the eos
        term when the output ended by itself).
        """
        with torch.no_grad():
            return self._scorer.per_row(self._model, self._rows(contexts, outputs))

    def update(self, experience: Experience, step: MirrorStep) -> dict[str, float]:
        """Fit the policy to ``step``'s target on ``experience``, to ``fit_tol``
        (:mod:`backends.hf_update`).

        Rows are read as draws from the current policy, weights normalised within each context
        (weight a row by ``pi_t(output | context)`` to hand it an exact enumeration instead);
        rows that repeat a ``(context, output)`` are merged first, which changes neither the
        gradient nor the target (:func:`backends.hf_update._merge_repeated_rows`).

        Args:
            experience: rows ``(context, output, utility, weight)``; utilities are "higher is
                better" for this policy.
            step: the mirror step (``eta``, ``alpha``); the reference is this policy's.

        Returns:
            The fit's and the step's metrics (``fit/...``, ``loss``, ``loss/initial``,
            ``objective``, ``kl/...``, ``grad_norm``; :meth:`backends.hf_update.Trainer.fit`).

        Raises:
            TypeError, ValueError: for malformed experience (e.g. rows of unequal lengths) or step.
            FloatingPointError: if a gradient is not finite (the parameters are left as they were
                before that evaluation's step).
        """
        ctx, out, utilities, weights = _merge_repeated_rows(*_chk.check_experience(experience))
        if not isinstance(step, MirrorStep):
            raise TypeError(
                f"step must be a gpo_core.protocols.MirrorStep, got {short(step)}; e.g. "
                "MirrorStep(eta=0.5, alpha=0.1)"
            )
        rows = self._encoder.rows(ctx, out, self._sampled.get)
        index: dict[str, int] = {}
        gid = np.array([index.setdefault(c, len(index)) for c in ctx], dtype=np.int64)
        return self._trainer.fit(
            step, gid, utilities, weights,
            score=lambda: self._score(self._model, rows),
            score_grad=lambda: self._score(self._model, rows),
            score_reference=lambda: self._score_reference(rows),
            backward=lambda coeff: self._scorer.backward(self._model, rows, coeff,
                                                         self._score_batch),
            single=len(rows.seqs) <= self._micro,
            grad_mode=lambda: train_mode(self._model, self._checkpointing),
        )

    # ------------------------------------------------------------------------------- scoring

    def _score_batch(self, module: torch.nn.Module, rows: Rows) -> torch.Tensor:
        """One micro-batch's summed log-probabilities (the hook benchmarks time as forward)."""
        return self._scorer.batch(module, rows)

    def _score(self, module: torch.nn.Module, rows: Rows) -> torch.Tensor:
        return self._scorer.score(module, rows, self._score_batch)

    def _score_reference(self, rows: Rows) -> torch.Tensor:
        if self._reference is not None:
            return self._score(self._reference, rows)
        with self._model.disable_adapter():
            return self._score(self._model, rows)
