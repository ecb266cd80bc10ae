r"""``HFPolicy``: a ``transformers`` causal LM (optionally with ``peft`` adapters) as a GPO policy.

The policy is the LM's own conditional distribution over outputs, read as strings:

.. math::
    \pi(y\mid c) = \prod_{j=1}^{|y|} p_\theta(y_j \mid x, y_{<j})
                   \cdot p_\theta(\texttt{eos}\mid x, y)^{[\,|y| < m\,]},

where :math:`x` is the tokenised prompt (the context passed through the template), :math:`y` the
output's tokens and :math:`m` = ``generation.max_new_tokens``: an output that stopped by itself
carries the end-of-sequence term, one cut at :math:`m` tokens does not. Special tokens other than
eos (pad, bos, added chat markers, ids past the tokenizer's vocabulary) are excluded from
:math:`p_\theta` (their logits are :math:`-\infty`), so decoding with the special tokens stripped
loses nothing. With the default generation settings (temperature 1, ``top_p`` 1, no repetition
penalty) :meth:`HFPolicy.log_prob` is exactly the log-probability that :meth:`HFPolicy.sample`
returns the output, and the probabilities of all outputs of at most :math:`m` tokens sum to 1.
Other settings sample off-policy: :meth:`~HFPolicy.update` still treats its rows as draws from
:math:`\pi_t`. Outputs are re-tokenised from their text, so a sample whose decoded text encodes to
other tokens (rare with BPE) is scored as the canonical encoding.

An update fits the network to :class:`gpo_core.MirrorStep`'s closed-form target
:math:`\log\pi' = (\log\pi_t + \eta\alpha\log\rho + \eta u)/(1+\eta\alpha) - \log Z` with one of
the surrogates of :mod:`backends.objectives` (their maximiser is that target):

1. score the rows under the current model (:math:`\log\pi_t`, no grad) and the reference
   (:math:`\log\rho`: a frozen copy of the initial model, or under ``peft`` the same network with
   its adapters disabled);
2. minimise the surrogate until the fit is within ``fit_tol`` of the target on the rows
   (:mod:`backends.fit`: the residual variance of :math:`\log\pi - \log\pi^\star` relative to
   the move asked for), with L-BFGS by default, ``max_fit_steps`` gradient evaluations at most
   (a warning, once per policy, when they run out first), micro-batched (the loss couples the
   rows of a context, so with several micro-batches each evaluation first scores every row
   without grad, takes the loss's gradient with respect to the row log-probabilities, then
   back-propagates it one micro-batch at a time: the same gradient as one big batch);
3. report the fit (``fit/...``: where the residual started and ended, the gradient evaluations
   spent, whether it converged), the surrogate, non-negative estimates of
   :math:`\mathrm{KL}(\pi\|\pi_t)` and :math:`\mathrm{KL}(\pi\|\rho)`, and the gradient norm.

So ``eta`` means here what it means on a matrix game: the fitted policy moves by the mirror step's
log-ratio :math:`\kappa[u + \alpha(\log\rho - \log\pi_t)]` on the experience, to within
``sqrt(fit_tol)`` of its size, whatever the learning rate (``tests/test_lm_twin.py`` measures it).

Every :meth:`~HFPolicy.update` starts a fresh optimiser by default (``fresh_optimizer=True``):
each call fits a *new* target (the proximal step from the current iterate), so curvature pairs
or moments from the last target carry no information about this one, and a policy is then fully
described by its parameters, which makes checkpoints exact (a resumed run equals an
uninterrupted one). With ``optimizer="adam"`` and ``fresh_optimizer=False`` the moments persist
across calls, as PPO trainers do; :meth:`~HFPolicy.reset_optimizer` clears them, and
:meth:`~HFPolicy.restore` leaves them alone. The model runs in ``eval()`` mode throughout (no
dropout), so scoring is deterministic and :math:`\pi_t` is the policy that sampled.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from backends import fit as _fit
from backends import objectives as _obj
from gpo_core._io import atomic_path
from gpo_core._validate import (
    as_real_array,
    check_nonnegative,
    check_positive,
    check_positive_int,
    short,
)
from gpo_core.protocols import Experience, MirrorStep, Samples

__all__ = ["GenerationSettings", "HFPolicy", "save_snapshot", "load_snapshot"]

_OBJECTIVES: dict[str, Callable[[torch.Tensor, Any], torch.Tensor]] = {
    "regression": _obj._regression,
    "pg": _obj._pg,
}
_OPTIMIZERS = ("lbfgs", "adam")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How :meth:`HFPolicy.sample` draws outputs.

    Attributes:
        max_new_tokens: the most tokens an output may have (eos included when it stops by itself);
            also part of the policy's definition (see the module docstring).
        temperature: divides the logits before sampling (``> 0``); 1 samples the policy itself.
        top_p: nucleus sampling mass in ``(0, 1]``; 1 keeps every token.
        do_sample: draw at random (``True``) or take the most likely token (``False``, greedy).
        repetition_penalty: CTRL-style penalty ``> 0`` on tokens already in the prompt or output;
            1 disables it.

    Examples:
        >>> GenerationSettings(max_new_tokens=8).on_policy
        True
    """

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = True
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_positive_int(self.max_new_tokens, "max_new_tokens")
        check_positive(self.temperature, "temperature")
        top_p = check_positive(self.top_p, "top_p")
        if top_p > 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}; use 1.0 to keep every token")
        if not isinstance(self.do_sample, bool):
            raise TypeError(f"do_sample must be a bool, got {short(self.do_sample)}")
        check_positive(self.repetition_penalty, "repetition_penalty")

    @property
    def on_policy(self) -> bool:
        """Whether samples are draws from the distribution :meth:`HFPolicy.log_prob` scores."""
        return (
            self.do_sample
            and self.temperature == 1.0
            and self.top_p == 1.0
            and self.repetition_penalty == 1.0
        )


class HFPolicy:
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
            ``sqrt(fit_tol)`` of the move's).
        fit_atol: ... or at most this in absolute terms (float32 log-probabilities floor).
        max_fit_steps: the budget of gradient evaluations per :meth:`update` (a safety net).
        inner_steps: the old name of ``max_fit_steps`` (kept for existing configs).
        micro_batch_size: rows per forward pass, for sampling, scoring and training.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); ``None`` keeps the
            model's device.
        dtype: ``"float32"`` or ``"bfloat16"`` for the weights (log-probabilities are always
            computed in float32); ``None`` keeps the model's dtype.
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
        max_grad_norm: clip the gradient to this norm before each step; ``None``: no clipping.
        fresh_optimizer: start each :meth:`update` with a fresh optimiser (default; see the
            module docstring) instead of carrying AdamW's moments across calls (``"adam"`` only).
        grad_sync: called with the trainable parameters after each backward pass and before
            clipping, e.g. :meth:`backends.distributed.TorchComm.average_gradients` to train
            data-parallel (every rank then takes the same step). Needs ``value_sync``.
        value_sync: with ``grad_sync``, maps ``{name: float}`` to the mean over ranks (e.g.
            :meth:`backends.distributed.TorchComm.mean`), so that every rank sees the same loss and
            residual and takes the same line-search and stopping decisions.
        weight_decay: AdamW's decoupled weight decay. The default 0 keeps the fixed point of the
            update exactly the target; decay pulls the weights toward 0 instead.
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
        name: str = "policy",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {short(name)}")
        self._name = name
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(
                f"model must be a transformers causal LM (a torch.nn.Module with a .config), got "
                f"{short(model)}; build one with AutoModelForCausalLM.from_pretrained/from_config"
            )
        self._check_tokenizer(tokenizer)
        self._tokenizer = tokenizer
        if not isinstance(generation, GenerationSettings):
            raise TypeError(
                f"generation must be a GenerationSettings, got {short(generation)}; e.g. "
                "GenerationSettings(max_new_tokens=32)"
            )
        self._generation = generation
        if objective not in _OBJECTIVES:
            raise ValueError(
                f"objective must be one of {sorted(_OBJECTIVES)}, got {short(objective)}"
            )
        self._objective = objective
        self._lr = check_positive(lr, "lr")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {list(_OPTIMIZERS)}, got {short(optimizer)}"
            )
        self._optimizer_kind = optimizer
        self._fit_tol = check_positive(fit_tol, "fit_tol")
        if self._fit_tol >= 1:
            raise ValueError(
                f"fit_tol must be in (0, 1) (the residual's share of the move asked for), got "
                f"{fit_tol!r}; 1e-2 leaves 10% root-mean-square error in the step"
            )
        self._fit_atol = check_nonnegative(fit_atol, "fit_atol")
        if inner_steps is not None:
            max_fit_steps = inner_steps
        self._max_fit_steps = check_positive_int(
            max_fit_steps, "max_fit_steps" if inner_steps is None else "inner_steps"
        )
        self._fit_warned = False
        self._micro = check_positive_int(micro_batch_size, "micro_batch_size")
        self._max_grad_norm = None if max_grad_norm is None else check_positive(
            max_grad_norm, "max_grad_norm"
        )
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not (
            math.isfinite(weight_decay) and weight_decay >= 0
        ):
            raise ValueError(
                f"weight_decay must be a finite number >= 0, got {short(weight_decay)}"
            )
        self._weight_decay = float(weight_decay)
        if self._weight_decay and optimizer != "adam":
            raise ValueError(
                f"weight_decay={weight_decay!r} is AdamW's; it needs optimizer='adam' (L-BFGS "
                "fits the step's target exactly, with no decay)"
            )
        if not isinstance(fresh_optimizer, bool):
            raise TypeError(f"fresh_optimizer must be a bool, got {short(fresh_optimizer)}")
        self._fresh_optimizer = fresh_optimizer
        if grad_sync is not None and not callable(grad_sync):
            raise TypeError(f"grad_sync must be a callable params -> None or None, got {short(grad_sync)}")
        self._grad_sync = grad_sync
        if value_sync is not None and not callable(value_sync):
            raise TypeError(
                f"value_sync must be a callable {{name: float}} -> {{name: mean over ranks}} or "
                f"None, got {short(value_sync)}"
            )
        if grad_sync is not None and value_sync is None:
            raise ValueError(
                f"HFPolicy {name!r}: grad_sync is given but value_sync is not; the ranks must "
                "also agree on the loss and the fit's residual to take the same steps: pass "
                "value_sync=comm.mean (backends.distributed)"
            )
        self._value_sync = value_sync
        if not isinstance(truncate_prompts, bool):
            raise TypeError(f"truncate_prompts must be a bool, got {short(truncate_prompts)}")
        self._truncate = truncate_prompts
        self._template = self._check_template(template, tokenizer)

        # Special ids: eos ends outputs; pad is only ever masked; others are never generated.
        self._eos_id: int | None = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self._pad_id: int = pad if pad is not None else tokenizer.eos_token_id
        self._bos_id: int | None = tokenizer.bos_token_id
        self._excluded = sorted(set(tokenizer.all_special_ids) - {self._eos_id})
        self._tok_len = len(tokenizer)
        self._excluded_cache: dict[str, Any] = {}

        torch_dtype = self._check_dtype(dtype)
        self._device = self._check_device(device, model)

        # Every check comes before the model is touched (wrapped, moved or copied).
        self._peft = self._is_peft(model)
        if peft_config is not None and self._peft:
            raise ValueError(
                f"HFPolicy {name!r}: model is already a peft.PeftModel; pass peft_config=None "
                "(its adapters are trained as they are) or pass the base model"
            )
        base_config = (model.get_base_model() if self._peft else model).config
        self._vocab = getattr(base_config, "vocab_size", None)
        self._context_len = self._model_context(base_config)
        self._budget = self._check_budget(max_prompt_tokens)
        if reference is not None:
            if not isinstance(reference, torch.nn.Module):
                raise TypeError(
                    f"reference must be a torch.nn.Module causal LM (same tokenizer) or None, got "
                    f"{short(reference)}"
                )
            if reference is model:
                raise ValueError(
                    f"HFPolicy {name!r}: reference is the model being trained, so it would move "
                    "with it; pass reference=None for a frozen copy, or a separate model"
                )
            ref_vocab = getattr(getattr(reference, "config", None), "vocab_size", None)
            if ref_vocab is not None and self._vocab is not None and ref_vocab != self._vocab:
                raise ValueError(
                    f"HFPolicy {name!r}: reference has vocab_size {ref_vocab} but the model has "
                    f"{self._vocab}; the reference must share the model's tokenizer"
                )

        if peft_config is not None:
            import peft  # noqa: PLC0415  (optional dependency, only imported on use)

            with warnings.catch_warnings():
                # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` (a
                # FutureWarning from inside peft that callers cannot act on); nothing else muted.
                warnings.filterwarnings(
                    "ignore", message=r"`is_gradient_checkpointing` is deprecated",
                    category=FutureWarning,
                )
                model = peft.get_peft_model(model, peft_config)
            self._peft = True
        model = model.to(device=self._device, dtype=torch_dtype).eval()
        self._model = model
        base = model.get_base_model() if self._peft else model
        sig = inspect.signature(base.forward).parameters
        self._pass_positions = "position_ids" in sig
        self._pass_keep = "logits_to_keep" in sig
        self._cache_arg = "cache" if "cache" in sig else "past_key_values"
        self._reference: torch.nn.Module | None
        if reference is not None:
            self._reference = reference.to(device=self._device, dtype=torch_dtype).eval()
            self._reference.requires_grad_(False)
        elif self._peft:
            self._reference = None  # adapters disabled on the trained network
        else:
            self._reference = copy.deepcopy(model).requires_grad_(False).eval()

        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError(
                f"HFPolicy {name!r}: the model has no trainable parameters (requires_grad is "
                "False everywhere); unfreeze some or pass a peft_config"
            )
        self._optimizer = self._new_optimizer()

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
        """What defines this policy, for a checkpoint to compare on resume (stable across runs)."""
        base = self._model.get_base_model() if self._peft else self._model
        config = {k: v for k, v in base.config.to_dict().items() if k != "transformers_version"}
        digest = hashlib.blake2b(
            json.dumps(config, sort_keys=True, default=str).encode(), digest_size=8
        ).hexdigest()
        return (
            f"HFPolicy(name={self._name!r}, model={type(base).__name__}, config={digest}, "
            f"peft={self._peft}, objective={self._objective!r}, "
            f"optimizer={self._optimizer_kind!r}, fit_tol={self._fit_tol!r}, "
            f"max_fit_steps={self._max_fit_steps}, generation={self._generation!r}, "
            f"vocab={self._tok_len})"
        )

    def __repr__(self) -> str:
        return (
            f"HFPolicy(name={self._name!r}, model={type(self._model).__name__}, "
            f"objective={self._objective!r}, peft={self._peft}, device={str(self._device)!r})"
        )

    # --------------------------------------------------------------------------------- protocol

    def sample(
        self,
        contexts: Sequence[str],
        num_samples: int,
        rng: np.random.Generator,
        *,
        stream_ids: Sequence[int] | None = None,
    ) -> Samples:
        """Draw ``num_samples`` outputs per context, batched with left padding.

        Every output row has its own random stream: one integer ``s`` is drawn from ``rng``, and
        the ``j``-th sample of a context with stream id ``i`` uses uniforms hashed from
        ``(s, i, j, token position)`` (a counter-based generator; torch's global RNG is
        untouched). So a row's tokens depend on the parameters, its prompt and ``(s, i, j)``
        only: not on the other rows of the batch, the micro-batch it falls in, or which process
        samples it. The game loop uses this to make a data-parallel run draw exactly the samples
        a single process would (:func:`gpo_core.alignment.run_game` with ``comm``).

        Args:
            contexts: the contexts (seed prompts or prompts).
            num_samples: outputs per context, ``k >= 1``.
            rng: the numpy generator that determines the draws.
            stream_ids: one integer in ``[0, 2**64)`` per context naming its random stream;
                ``None``: the positions ``0, 1, ..., len(contexts) - 1``. Contexts given the same
                id in one call draw the same outputs.

        Returns:
            :class:`~gpo_core.protocols.Samples` with each context repeated ``k`` times in a row,
            the decoded outputs (up to the first eos, special tokens stripped) and weights ``1/k``
            (``1/(k m)`` for a context listed ``m`` times, so each context's weights sum to 1).

        Raises:
            TypeError, ValueError: for bad arguments or prompts longer than the prompt budget.
        """
        ctx = self._check_texts(contexts, "contexts")
        k = check_positive_int(num_samples, "num_samples")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"rng must be a numpy.random.Generator, got {short(rng)}; use "
                "np.random.default_rng(seed)"
            )
        streams = _check_stream_ids(stream_ids, len(ctx))
        prompts = self._encode_prompts(ctx)
        rows = [p for p in prompts for _ in range(k)]
        keys = _row_keys(int(rng.integers(0, 2**63 - 1)), streams, k)
        outputs: list[str] = []
        for start in range(0, len(rows), self._micro):
            stop = start + self._micro
            outputs.extend(self._generate(rows[start:stop], keys[start:stop]))
        times = collections.Counter(ctx)
        return Samples(
            contexts=tuple(c for c in ctx for _ in range(k)),
            outputs=tuple(outputs),
            weights=np.array([1.0 / (k * times[c]) for c in ctx for _ in range(k)]),
        )

    def log_prob(self, contexts: Sequence[str], outputs: Sequence[str]) -> np.ndarray:
        """``log pi(output_i | context_i)`` per row (module docstring), float64, shape ``(N,)``.

        An output of more than ``max_new_tokens`` tokens (which :meth:`sample` never returns) is
        scored like one cut there: the probability of its tokens, without an eos term.

        Args:
            contexts: one context per row.
            outputs: one output per row.

        Raises:
            TypeError, ValueError: for mismatched lengths, non-strings, or rows that do not fit
                the model context.
        """
        ctx = self._check_texts(contexts, "contexts")
        out = self._check_texts(outputs, "outputs")
        if len(ctx) != len(out):
            raise ValueError(
                f"contexts and outputs must have one entry per row, got {len(ctx)} contexts and "
                f"{len(out)} outputs"
            )
        if not ctx:
            return np.zeros(0)
        seqs, scored = self._encode_rows(ctx, out)
        with torch.no_grad():
            return self._score(self._model, seqs, scored).double().cpu().numpy()

    def token_log_probs(self, contexts: Sequence[str], outputs: Sequence[str]) -> list[np.ndarray]:
        """Per-token ``log pi(token_k | context, tokens_<k)`` of each output, float64 arrays.

        Row ``i``'s array sums to ``log_prob(contexts, outputs)[i]`` (its last entry is the eos
        term when the output ended by itself).
        """
        ctx = self._check_texts(contexts, "contexts")
        out = self._check_texts(outputs, "outputs")
        if len(ctx) != len(out):
            raise ValueError(
                f"contexts and outputs must have one entry per row, got {len(ctx)} contexts and "
                f"{len(out)} outputs"
            )
        seqs, scored = self._encode_rows(ctx, out)
        rows: list[np.ndarray] = []
        with torch.no_grad():
            for start in range(0, len(seqs), self._micro):
                batch = seqs[start : start + self._micro], scored[start : start + self._micro]
                picked, valid = self._token_scores(self._model, *batch)
                for p, v in zip(picked.double().cpu().numpy(), valid.cpu().numpy()):
                    rows.append(p[v])
        return rows

    def update(self, experience: Experience, step: MirrorStep) -> dict[str, float]:
        """Fit the policy to ``step``'s target on ``experience``, to ``fit_tol`` (module docstring).

        Rows are read as draws from the current policy: within each context the weights are
        normalised to sum to one, so ``sum_i w_i f(y_i)`` estimates ``E_{y ~ pi_t}[f]`` (a weight
        is the probability of the row's opponent part; equal weights for plain samples), and each
        context counts in proportion to its total weight (e.g. a prompt's probability). To hand
        it an exact enumeration of a support instead, weight each row by
        ``pi_t(output | context)`` (times the opponent part's probability). Rows that repeat a
        ``(context, output)`` are first merged into one (weights summed, utilities
        weight-averaged), which leaves the gradient and the target as they are; with the
        regression objective the reported ``loss`` then leaves out the repeats' spread of
        utilities (a constant).

        Args:
            experience: rows ``(context, output, utility, weight)``; utilities are "higher is
                better" for this policy.
            step: the mirror step (``eta``, ``alpha``); the reference is this policy's.

        Returns:
            ``fit/residual_initial``, ``fit/residual``, ``fit/relative``, ``fit/steps``,
            ``fit/converged`` (:class:`backends.fit.FitReport`); ``loss`` (the surrogate at the new
            parameters), ``loss/initial``, ``objective`` (the importance-sampled J there),
            ``kl/previous_is`` and ``kl/reference_is`` (non-negative importance-sampled estimates
            of the new policy's KL to ``pi_t`` and to the reference, see
            :class:`backends.objectives.ObjectiveEstimate`), ``kl/reference`` (the iterate that
            drew the rows, by the non-negative estimator ``E_{pi_t}[q - 1 - log q]``,
            ``q = rho/pi_t``) and ``grad_norm`` (of the last evaluation, before clipping).

        Raises:
            TypeError, ValueError: for malformed experience (e.g. rows of unequal lengths) or step.
            FloatingPointError: if a gradient is not finite (the parameters are left as they were
                before that evaluation's step).
        """
        ctx, out, utilities, weights = _merge_repeated_rows(*self._check_experience(experience))
        if not isinstance(step, MirrorStep):
            raise TypeError(
                f"step must be a gpo_core.protocols.MirrorStep, got {short(step)}; e.g. "
                "MirrorStep(eta=0.5, alpha=0.1)"
            )
        if self._fresh_optimizer or self._optimizer_kind == "lbfgs":
            self._optimizer = self._new_optimizer()
        seqs, scored = self._encode_rows(ctx, out)
        index: dict[str, int] = {}
        gid = np.array([index.setdefault(c, len(index)) for c in ctx], dtype=np.int64)
        with torch.no_grad():
            logp_old = self._score(self._model, seqs, scored)
            logp_ref = self._score_reference(seqs, scored)
        rows = _obj._prepare(
            logp_old, logp_old, logp_ref, utilities, weights, step.eta, step.alpha, gid
        )
        r0 = _fit.residual(rows.logp_old, rows)
        if not math.isfinite(r0):
            raise FloatingPointError(
                f"HFPolicy {self._name!r}: the move the step asks for is not finite (residual "
                f"{r0}); utilities up to {float(np.max(np.abs(utilities))):.3g} times eta="
                f"{step.eta} overflow; rescale the utilities or lower eta"
            )
        loss_fn = _OBJECTIVES[self._objective]
        single = len(seqs) <= self._micro
        trace = {"initial": math.nan, "grad_norm": math.nan}

        def evaluate() -> tuple[torch.Tensor, torch.Tensor]:
            self._optimizer.zero_grad(set_to_none=True)
            if single:
                lp = self._score(self._model, seqs, scored)
                loss = loss_fn(lp, rows)
                loss.backward()
                current = lp.detach()
            else:
                with torch.no_grad():
                    current = self._score(self._model, seqs, scored)
                leaf = current.detach().requires_grad_(True)
                loss = loss_fn(leaf, rows)
                loss.backward()
                self._backward_rows(seqs, scored, leaf.grad)
            if math.isnan(trace["initial"]):
                trace["initial"] = loss.item()
            if self._grad_sync is not None:
                self._grad_sync(self._params)
            # Clipping changes the direction a line search probes, so only AdamW clips.
            clip = self._max_grad_norm if self._optimizer_kind == "adam" else None
            norm = float(torch.nn.utils.clip_grad_norm_(
                self._params, math.inf if clip is None else clip
            ))
            trace["grad_norm"] = norm
            if not math.isfinite(norm):
                self._optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError(
                    f"HFPolicy {self._name!r}: gradient norm is {norm} (loss {loss.item():.6g}); "
                    "the step was skipped. Check the utilities' scale, use dtype='float32', or "
                    "lower lr with optimizer='adam'"
                )
            return loss, current

        report, final = _fit.fit(
            self._optimizer, evaluate, rows, tol=self._fit_tol, atol=self._fit_atol,
            max_steps=self._max_fit_steps, sync=self._sync_float,
        )
        self._optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            if final is None:
                final = self._score(self._model, seqs, scored)
                report = report._replace(residual=self._sync_float(_fit.residual(final, rows)))
            est = _obj._estimate(final, rows)
            loss_final = loss_fn(final, rows).item()
        if not report.converged and not self._fit_warned:
            self._fit_warned = True
            warnings.warn(
                f"HFPolicy {self._name!r}: the fit used its whole budget of "
                f"{self._max_fit_steps} gradient evaluations (max_fit_steps) and stopped at a "
                f"residual of {report.relative:.3g} x the move asked for (tolerance "
                f"{self._fit_tol:g}; {report.residual:.3g} against {report.residual_initial:.3g}), "
                f"so this step is shorter than eta asks; {self._fit_advice()}. Said once per "
                "policy; every update logs fit/converged",
                RuntimeWarning,
                stacklevel=2,
            )
        # KL(pi_t || rho) of the iterate that drew the rows by the "k3" estimator
        # E_{pi_t}[q - 1 - log q], q = rho/pi_t: unbiased on pi_t-draws, >= 0 term by term.
        log_q = (logp_ref.double() - logp_old.double()).cpu().numpy()
        w = np.asarray(weights, dtype=np.float64)
        kl_iterate = float(np.sum(w * (np.expm1(log_q) - log_q)) / np.sum(w))
        return {
            **report.metrics(),
            "loss": loss_final,
            "loss/initial": trace["initial"] if report.steps else loss_final,
            "objective": est.objective,
            "kl/reference": kl_iterate,
            "kl/previous_is": est.kl_previous,
            "kl/reference_is": est.kl_reference,
            "grad_norm": trace["grad_norm"],
        }

    def _fit_advice(self) -> str:
        if self._optimizer_kind == "adam":
            return "raise max_fit_steps, or use optimizer='lbfgs' (scale-free, fewer evaluations)"
        advice = "raise max_fit_steps or fit_tol"
        if self._objective == "pg":
            advice += ", or use objective='regression' (a least-squares fit: fewer evaluations)"
        if next(self._model.parameters()).dtype == torch.bfloat16:
            advice += " (bfloat16 weights round small steps away: use float32 for tight fits)"
        return advice

    def _sync_float(self, value: float) -> float:
        """``value`` as every rank agrees on it (its mean over ranks under ``value_sync``)."""
        if self._value_sync is None:
            return float(value)
        return float(self._value_sync({"value": float(value)})["value"])

    def snapshot(self) -> dict[str, torch.Tensor]:
        """An independent CPU copy of the trainable state.

        Returns:
            Under ``peft``, the trainable (adapter) parameters by name; otherwise the model's
            full ``state_dict()``. Each tensor is a fresh CPU copy.
        """
        if self._peft:
            items = ((n, p) for n, p in self._model.named_parameters() if p.requires_grad)
        else:
            items = self._model.state_dict().items()
        return {n: t.detach().to("cpu", copy=True) for n, t in items}

    def restore(self, snapshot: Mapping[str, torch.Tensor]) -> None:
        """Load a value that :meth:`snapshot` (or :func:`load_snapshot`) returned.

        The optimiser state is left as it is (call :meth:`reset_optimizer` for a fresh start).

        Raises:
            TypeError, ValueError: naming this policy, if the snapshot's names, shapes or types
                do not match this policy's trainable state; nothing is changed then.
        """
        expected = self.snapshot_shapes()
        if not isinstance(snapshot, Mapping):
            raise TypeError(
                f"HFPolicy {self._name!r}: restore failed: snapshot must be a mapping of names to "
                f"tensors (what snapshot() returns), got {short(snapshot)}"
            )
        missing = sorted(set(expected) - set(snapshot))
        unexpected = sorted(set(snapshot) - set(expected))
        wrong = [
            f"{k}: {tuple(getattr(v, 'shape', ()))} vs {expected[k]}"
            for k, v in snapshot.items()
            if k in expected
            and (not isinstance(v, torch.Tensor) or tuple(v.shape) != expected[k])
        ]
        bad = [k for k, v in snapshot.items() if k in expected and isinstance(v, torch.Tensor)
               and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad and not (missing or unexpected or wrong):
            raise ValueError(
                f"HFPolicy {self._name!r}: restore failed: the snapshot holds NaN or infinite "
                f"values in {short(bad)}; nothing was changed. Restore a snapshot of a healthy "
                "iterate (a checkpoint's earlier round) instead"
            )
        if missing or unexpected or wrong:
            raise ValueError(
                f"HFPolicy {self._name!r}: restore failed: the snapshot does not match this "
                f"policy's {'adapter parameters' if self._peft else 'state_dict'} (missing "
                f"{short(missing)}, unexpected {short(unexpected)}, wrong shape or type "
                f"{short(wrong)}); pass a value from this policy's snapshot() or a file saved "
                "from a policy built the same way"
            )
        with torch.no_grad():
            if self._peft:
                params = dict(self._model.named_parameters())
                for k, v in snapshot.items():
                    params[k].copy_(v)
            else:
                self._model.load_state_dict(dict(snapshot), strict=True)

    def save_snapshot(
        self, snapshot: Mapping[str, torch.Tensor], path: str | os.PathLike[str]
    ) -> None:
        """Write ``snapshot`` to ``path`` as safetensors, atomically (see :func:`save_snapshot`).

        Raises:
            TypeError, ValueError: naming this policy, if ``snapshot`` does not fit it.
        """
        shapes = self.snapshot_shapes()
        if not isinstance(snapshot, Mapping) or shapes != {
            k: tuple(getattr(v, "shape", ())) for k, v in snapshot.items()
        }:
            raise ValueError(
                f"HFPolicy {self._name!r}: save_snapshot failed: {short(snapshot, 60)} is not a "
                "snapshot of this policy (names or shapes differ); pass a value from its snapshot()"
            )
        save_snapshot(snapshot, path)

    def load_snapshot(self, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
        """Read a snapshot file written by :meth:`save_snapshot` and check it fits this policy.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: naming this policy, if the file is unreadable or holds another shape.
        """
        try:
            snap = load_snapshot(path)
        except ValueError as exc:
            raise ValueError(f"HFPolicy {self._name!r}: load_snapshot failed: {exc}") from exc
        shapes = self.snapshot_shapes()
        got = {k: tuple(v.shape) for k, v in snap.items()}
        if got != shapes:
            raise ValueError(
                f"HFPolicy {self._name!r}: load_snapshot failed: {str(path)!r} holds "
                f"{len(got)} tensors that do not match this policy's {len(shapes)} (missing "
                f"{short(sorted(set(shapes) - set(got)))}, unexpected "
                f"{short(sorted(set(got) - set(shapes)))}); load a file saved from a policy built "
                "the same way"
            )
        return snap

    def snapshot_shapes(self) -> dict[str, tuple[int, ...]]:
        """Names and shapes that :meth:`snapshot` returns (without copying anything)."""
        if self._peft:
            return {n: tuple(p.shape) for n, p in self._model.named_parameters() if p.requires_grad}
        return {n: tuple(t.shape) for n, t in self._model.state_dict().items()}

    # -------------------------------------------------------------------------------- optimiser

    def reset_optimizer(self) -> None:
        """Forget the AdamW moments (the next :meth:`update` starts a fresh optimiser)."""
        self._optimizer = self._new_optimizer()

    def optimizer_state_dict(self) -> dict[str, Any]:
        """A deep copy of the AdamW state (``torch.optim.Optimizer.state_dict`` format)."""
        return copy.deepcopy(self._optimizer.state_dict())

    def load_optimizer_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a value that :meth:`optimizer_state_dict` returned.

        Raises:
            ValueError: naming this policy, if the state does not fit its parameters.
        """
        try:
            self._optimizer.load_state_dict(copy.deepcopy(dict(state)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                f"HFPolicy {self._name!r}: load_optimizer_state_dict failed ({exc}); pass a value "
                "from optimizer_state_dict() of a policy with the same trainable parameters"
            ) from exc

    def _new_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer_kind == "lbfgs":
            # tolerances 0: backends.fit stops on the residual, not on LBFGS's own tests
            return torch.optim.LBFGS(
                self._params, lr=1.0, history_size=10, line_search_fn="strong_wolfe",
                tolerance_grad=0.0, tolerance_change=0.0,
            )
        return torch.optim.AdamW(self._params, lr=self._lr, weight_decay=self._weight_decay)

    # ------------------------------------------------------------------------------- validation

    @staticmethod
    def _check_tokenizer(tokenizer: Any) -> None:
        needed = ("decode", "all_special_ids", "eos_token_id", "pad_token_id", "bos_token_id")
        if not callable(tokenizer) or not all(hasattr(tokenizer, a) for a in needed):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer (AutoTokenizer.from_pretrained(...) "
                f"or backends.tiny.train_tokenizer()), got {short(tokenizer)}"
            )
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError(
                "tokenizer has neither a pad token nor an eos token: outputs could not end and "
                "batches could not be padded; set one, e.g. "
                "tokenizer.add_special_tokens({'eos_token': '</s>'}) and resize the model's "
                "embeddings"
            )

    @staticmethod
    def _check_template(template: Any, tokenizer: Any) -> str | Callable[[str], str] | None:
        if template is None:
            return "chat" if getattr(tokenizer, "chat_template", None) else None
        if isinstance(template, str):
            if "{context}" not in template:
                raise ValueError(
                    f"template must contain the placeholder '{{context}}', got {short(template)}; "
                    "e.g. 'Question: {context}\\nAnswer:'"
                )
            return template
        if callable(template):
            return template
        raise TypeError(
            f"template must be a string with '{{context}}', a callable context -> str, or None, "
            f"got {short(template)}"
        )

    @staticmethod
    def _check_dtype(dtype: Any) -> torch.dtype | None:
        if dtype is None:
            return None
        if isinstance(dtype, torch.dtype):
            if dtype in _DTYPES.values():
                return dtype
        elif isinstance(dtype, str) and dtype in _DTYPES:
            return _DTYPES[dtype]
        raise ValueError(
            f"dtype must be 'float32', 'bfloat16' or None, got {short(dtype)} (float16 is not "
            "offered: training it needs loss scaling; use bfloat16)"
        )

    @staticmethod
    def _check_device(device: Any, model: torch.nn.Module) -> torch.device:
        if device is None:
            first = next(model.parameters(), None)
            return first.device if first is not None else torch.device("cpu")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device must be like 'cpu' or 'cuda:0', got {short(device)}") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device {str(dev)!r} was asked for but torch.cuda.is_available() is False; use "
                "device='cpu' or install a CUDA build of torch"
            )
        return dev

    @staticmethod
    def _is_peft(model: torch.nn.Module) -> bool:
        try:
            import peft  # noqa: PLC0415
        except ImportError:  # pragma: no cover - peft is part of the llm extra
            return False
        return isinstance(model, peft.PeftModel)

    @staticmethod
    def _model_context(config: Any) -> int | None:
        for key in _CONTEXT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _check_budget(self, max_prompt_tokens: Any) -> int | None:
        m = self._generation.max_new_tokens
        if max_prompt_tokens is not None:
            budget = check_positive_int(max_prompt_tokens, "max_prompt_tokens")
            if self._context_len is not None and budget + m > self._context_len:
                raise ValueError(
                    f"HFPolicy {self._name!r}: max_prompt_tokens={budget} plus "
                    f"max_new_tokens={m} exceeds the model context of {self._context_len} "
                    f"tokens; lower max_prompt_tokens to at most {self._context_len - m}"
                )
            return budget
        if self._context_len is None:
            return None
        if m >= self._context_len:
            raise ValueError(
                f"HFPolicy {self._name!r}: generation.max_new_tokens={m} leaves no room for a "
                f"prompt in the model context of {self._context_len} tokens; lower max_new_tokens"
            )
        return self._context_len - m

    @staticmethod
    def _check_texts(texts: Any, name: str) -> list[str]:
        if isinstance(texts, (str, bytes)):
            raise TypeError(
                f"{name} must be a sequence of strings, got the single string {short(texts)}; "
                "wrap it in a list"
            )
        if not isinstance(texts, Sequence):
            raise TypeError(f"{name} must be a sequence of strings, got {short(texts)}")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise TypeError(
                f"{name} must hold only strings, got {short(texts[bad[0]])} at index {bad[0]}"
            )
        return list(texts)

    def _check_experience(
        self, experience: Any
    ) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        fields = ("contexts", "outputs", "utilities", "weights")
        if not all(hasattr(experience, f) for f in fields):
            raise TypeError(
                f"experience must be a gpo_core.protocols.Experience (fields {fields}), got "
                f"{short(experience)}"
            )
        ctx = self._check_texts(experience.contexts, "experience.contexts")
        out = self._check_texts(experience.outputs, "experience.outputs")
        u = as_real_array(experience.utilities, "experience.utilities")
        w = as_real_array(experience.weights, "experience.weights")
        lengths = {
            "contexts": len(ctx), "outputs": len(out), "utilities": u.size, "weights": w.size
        }
        if u.ndim != 1 or w.ndim != 1 or len(set(lengths.values())) != 1:
            raise ValueError(
                f"experience rows must have equal lengths (one entry per row in 1-D fields), got "
                f"{lengths} with utilities shape {u.shape} and weights shape {w.shape}"
            )
        if not ctx:
            raise ValueError("experience must hold at least one row, got 0 rows")
        if np.any(w < 0):
            raise ValueError(f"experience.weights must be >= 0, got {short(w.tolist())}")
        totals: dict[str, float] = {}
        for c, wi in zip(ctx, w):
            totals[c] = totals.get(c, 0.0) + float(wi)
        zero = [c for c, t in totals.items() if t <= 0]
        if zero:
            raise ValueError(
                f"experience.weights must have a positive sum for every context, got 0 for "
                f"context {short(zero[0])}; drop its rows or give them positive weights"
            )
        return ctx, out, u, w

    # ----------------------------------------------------------------------------- tokenisation

    def _render(self, context: str) -> tuple[str, bool]:
        """The prompt text and whether the tokenizer should add its special tokens."""
        if self._template is None:
            return context, True
        if self._template == "chat":
            text = self._tokenizer.apply_chat_template(
                [{"role": "user", "content": context}], tokenize=False, add_generation_prompt=True
            )
            return text, False
        if isinstance(self._template, str):
            return self._template.replace("{context}", context), True
        text = self._template(context)
        if not isinstance(text, str):
            raise TypeError(
                f"HFPolicy {self._name!r}: template must return a str, got {short(text)} for "
                f"context {short(context)}"
            )
        return text, True

    def _encode_prompts(self, contexts: list[str]) -> list[list[int]]:
        cache: dict[str, list[int]] = {}
        out = []
        for i, c in enumerate(contexts):
            if c not in cache:
                cache[c] = self._encode_prompt(c, i)
            out.append(cache[c])
        return out

    def _encode_prompt(self, context: str, index: int) -> list[int]:
        text, add_special = self._render(context)
        ids = list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])
        if not ids:
            # An empty context (an unconditional adversary, or an adversary that wrote an empty
            # prompt) starts from bos; a tokenizer without one starts from eos, GPT-2's
            # convention, so that a run never stops on an empty prompt.
            start = self._bos_id if self._bos_id is not None else self._eos_id
            if start is None:
                raise ValueError(
                    f"HFPolicy {self._name!r}: context {index} ({short(context)}) encodes to no "
                    "tokens and the tokenizer has neither a bos nor an eos token to start from; "
                    "give non-empty contexts or a template"
                )
            ids = [start]
        if self._budget is not None and len(ids) > self._budget:
            if not self._truncate:
                raise ValueError(
                    f"HFPolicy {self._name!r}: context {index} ({short(context, 40)}) makes a "
                    f"prompt of {len(ids)} tokens but at most {self._budget} fit (model context "
                    f"{self._context_len} minus max_new_tokens {self._generation.max_new_tokens}, "
                    "or max_prompt_tokens); pass truncate_prompts=True to keep the last "
                    f"{self._budget} tokens, or shorten the contexts"
                )
            ids = ids[-self._budget :]
        return ids

    def _encode_rows(self, ctx: list[str], out: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token sequences ``prompt + output (+ eos)`` and the number of scored tokens per row."""
        prompts = self._encode_prompts(ctx)
        m = self._generation.max_new_tokens
        excluded = set(self._excluded) | ({self._eos_id} if self._eos_id is not None else set())
        seqs, scored = [], []
        for i, (p, o) in enumerate(zip(prompts, out)):
            ids = list(self._tokenizer(o, add_special_tokens=False)["input_ids"]) if o else []
            bad = [t for t in ids if t in excluded or t >= self._tok_len]
            if bad:
                raise ValueError(
                    f"HFPolicy {self._name!r}: output {i} ({short(o, 40)}) encodes to special "
                    f"token ids {bad[:5]}, which this policy never generates; remove special-token "
                    "text from outputs"
                )
            if self._eos_id is not None and len(ids) < m:
                ids.append(self._eos_id)
            total = len(p) + len(ids)
            if self._context_len is not None and total > self._context_len:
                raise ValueError(
                    f"HFPolicy {self._name!r}: row {i} needs {total} positions (prompt {len(p)}, "
                    f"output {len(ids)}) but the model context is {self._context_len}; shorten "
                    "the output or the prompt (max_prompt_tokens / truncate_prompts=True)"
                )
            seqs.append(p + ids)
            scored.append(len(ids))
        return seqs, scored

    # -------------------------------------------------------------------------------- numerics

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        # numpy fills the rows far faster than one small torch.tensor per row (a hot path)
        ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = s
                mask[i, width - len(s) :] = 1
        return torch.from_numpy(ids).to(self._device), torch.from_numpy(mask).to(self._device)

    def _forward(
        self,
        module: torch.nn.Module,
        ids: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        *,
        keep: int,
        use_cache: bool = False,
        cache: Any = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
        if self._pass_positions:
            kwargs["position_ids"] = positions
        if self._pass_keep:
            kwargs["logits_to_keep"] = keep
        if cache is not None:
            kwargs[self._cache_arg] = cache
        return module(**kwargs)

    def _mask_excluded(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits with never-generated ids (specials but eos, ids past the vocab) set to -inf."""
        vocab = logits.shape[-1]
        key = (vocab, logits.device)
        if self._excluded_cache.get("key") != key:
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[[i for i in self._excluded if i < vocab]] = True
            mask[self._tok_len :] = True
            self._excluded_cache = {"key": key, "mask": mask.to(logits.device)}
        return logits.masked_fill(self._excluded_cache["mask"], -math.inf)

    def _score(
        self, module: torch.nn.Module, seqs: list[list[int]], scored: list[int]
    ) -> torch.Tensor:
        """Float32 ``(N,)`` sums of the scored tokens' log-probabilities, micro-batched."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # less padding
        parts = []
        for start in range(0, len(order), self._micro):
            idx = order[start : start + self._micro]
            batch = [seqs[i] for i in idx], [scored[i] for i in idx]
            parts.append(self._score_batch(module, *batch))
        flat = torch.cat(parts)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return flat[inverse.to(flat.device)]

    def _score_reference(self, seqs: list[list[int]], scored: list[int]) -> torch.Tensor:
        if self._reference is not None:
            return self._score(self._reference, seqs, scored)
        with self._model.disable_adapter():
            return self._score(self._model, seqs, scored)

    def _score_batch(self, module: torch.nn.Module, seqs, scored) -> torch.Tensor:
        picked, valid = self._token_scores(module, seqs, scored)
        return torch.where(valid, picked, torch.zeros_like(picked)).sum(-1)

    def _token_scores(self, module: torch.nn.Module, seqs, scored) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the last ``max(scored)`` positions and which ones are scored."""
        ids, mask = self._left_pad(seqs)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        width, top = ids.shape[1], max(scored)
        logits = self._forward(module, ids, mask, positions, keep=top + 1).logits
        logits = logits[:, logits.shape[1] - top - 1 : logits.shape[1] - 1].float()
        logp = torch.log_softmax(self._mask_excluded(logits), dim=-1)
        targets = ids[:, width - top :]
        picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        n = torch.tensor(scored, device=ids.device)
        valid = torch.arange(top, device=ids.device)[None, :] >= (top - n)[:, None]
        return picked, valid

    def _backward_rows(self, seqs, scored, coeff: torch.Tensor) -> None:
        """Accumulate ``d loss = sum_i coeff_i d logp_i`` one micro-batch at a time."""
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self._micro):
            idx = order[start : start + self._micro]
            lp = self._score_batch(self._model, [seqs[i] for i in idx], [scored[i] for i in idx])
            c = coeff[torch.tensor(idx, device=coeff.device)].to(lp.dtype)
            (lp * c).sum().backward()

    @torch.no_grad()
    def _generate(self, prompts: list[list[int]], keys: np.ndarray) -> list[str]:
        """Decode one micro-batch; row ``i`` draws its tokens from the stream ``keys[i]``."""
        s = self._generation
        ids, mask = self._left_pad(prompts)
        batch = ids.shape[0]
        step_ids, step_pos = ids, (mask.cumsum(-1) - 1).clamp_min(0)
        seen: torch.Tensor | None = None
        finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        tokens: list[torch.Tensor] = []
        cache = None
        for step in range(s.max_new_tokens):
            out = self._forward(
                self._model, step_ids, mask, step_pos, keep=1, use_cache=True, cache=cache
            )
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            logits = out.logits[:, -1, :].float()
            if s.repetition_penalty != 1.0 and seen is None:
                counts = torch.zeros(logits.shape, dtype=torch.long, device=ids.device)
                seen = counts.scatter_add_(1, ids, mask).gt(0)
            nxt = self._pick(logits, seen, keys, step)
            nxt = torch.where(finished, torch.full_like(nxt, self._pad_id), nxt)
            tokens.append(nxt)
            if seen is not None:
                seen[torch.arange(batch, device=nxt.device), nxt] = True
            if self._eos_id is not None:
                finished |= nxt == self._eos_id
            if bool(finished.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if cache is not None:
                step_ids, step_pos = nxt[:, None], step_pos[:, -1:] + 1
            else:  # a model that returns no cache: feed the whole sequence again
                step_ids = torch.cat([ids, torch.stack(tokens, 1)], dim=1)
                step_pos = (mask.cumsum(-1) - 1).clamp_min(0)
        texts = []
        for row in torch.stack(tokens, 1).tolist():
            if self._eos_id is not None and self._eos_id in row:
                row = row[: row.index(self._eos_id)]
            texts.append(
                self._tokenizer.decode(
                    row, skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
            )
        return texts

    def _pick(
        self, logits: torch.Tensor, seen: torch.Tensor | None, keys: np.ndarray, step: int
    ) -> torch.Tensor:
        s = self._generation
        logits = self._mask_excluded(logits)
        if seen is not None:
            penalised = torch.where(
                logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty
            )
            logits = torch.where(seen, penalised, logits)
        if not s.do_sample:
            return logits.argmax(-1)
        logits = logits / s.temperature
        if s.top_p < 1.0:
            probs_sorted, order = torch.softmax(logits, -1).sort(-1, descending=True)
            before = probs_sorted.cumsum(-1) - probs_sorted  # mass of strictly likelier tokens
            drop_sorted = before >= s.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logits = logits.masked_fill(drop, -math.inf)
        # Inverse-CDF sampling with one uniform per row: the first token whose cumulative
        # probability exceeds u * total. A token of probability 0 never has a cdf step, so it is
        # never picked; v stays strictly below the total, so some token always is.
        wide = torch.float32 if logits.device.type == "mps" else torch.float64
        cdf = torch.softmax(logits, -1, dtype=wide).cumsum(-1)
        total = cdf[:, -1:]
        u = torch.from_numpy(_uniforms(keys, step)).to(device=logits.device, dtype=wide)
        v = torch.minimum(u[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
        return torch.searchsorted(cdf, v, right=True).squeeze(-1)


# ----------------------------------------------------------------------------------- updates


def _merge_repeated_rows(
    ctx: list[str], out: list[str], u: np.ndarray, w: np.ndarray
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """One row per distinct ``(context, output)``: weights summed, utilities weight-averaged.

    Given the output, the surrogates are linear in a row's utility and weight (the pg loss and
    every estimate exactly; the regression loss up to a constant, the spread of the repeats'
    utilities), so their gradients and fixed points do not change. What changes: repeats are
    scored once, and a context whose rows all repeat one output -- e.g. an adversary's prompt
    with its k answers, which carries no signal under a per-context baseline -- gets a zero
    gradient (measured: exactly 0) instead of float32 rounding noise (~1e-7), which AdamW's
    g / (sqrt(v) + eps) would scale up to lr-sized steps.
    """
    index: dict[tuple[str, str], int] = {}
    ids = np.array([index.setdefault(row, len(index)) for row in zip(ctx, out)], dtype=np.int64)
    n = len(index)
    if n == len(ctx):
        return ctx, out, u, w
    weight = np.bincount(ids, weights=w, minlength=n)
    weighted = np.bincount(ids, weights=w * u, minlength=n)
    # a zero-weight row adds nothing to either loss, so its utility may be anything (0 here)
    utility = np.divide(weighted, weight, out=np.zeros(n), where=weight > 0)
    rows = list(index)
    return [c for c, _ in rows], [o for _, o in rows], utility, weight


# ------------------------------------------------------------------------------ random streams

# splitmix64 (Steele, Lea and Flood 2014): a counter-based generator whose outputs are a strong
# 64-bit mix of (key + n * gamma). numpy's uint64 array arithmetic wraps modulo 2**64 silently.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function, elementwise on a 1-D uint64 array."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _row_keys(seed: int, streams: np.ndarray, k: int) -> np.ndarray:
    """One uint64 stream key per output row (contexts in order, ``k`` samples each)."""
    base = _mix64(np.array([seed], dtype=np.uint64) + _GAMMA)
    per_context = _mix64(base ^ _mix64(streams + _GAMMA))
    sample = np.arange(1, k + 1, dtype=np.uint64) * _GAMMA
    return _mix64(per_context[:, None] + sample[None, :]).reshape(-1)


def _uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """The ``step``-th uniform in ``[0, 1)`` of each stream, float64 with 53 random bits."""
    # arrays, not numpy scalars: scalar uint64 overflow warns (and raises under errstate)
    bits = _mix64(keys + np.array([step + 1], dtype=np.uint64) * _GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def _check_stream_ids(stream_ids: Sequence[int] | None, n: int) -> np.ndarray:
    if stream_ids is None:
        return np.arange(n, dtype=np.uint64)
    if isinstance(stream_ids, np.ndarray) and stream_ids.ndim == 1:
        stream_ids = stream_ids.tolist()  # an integer array is as good as a list
    if isinstance(stream_ids, (str, bytes)) or not isinstance(stream_ids, Sequence):
        raise TypeError(
            f"stream_ids must be a sequence of integers (one per context) or None, got "
            f"{short(stream_ids)}"
        )
    if len(stream_ids) != n:
        raise ValueError(
            f"stream_ids must have one entry per context ({n}), got {len(stream_ids)}; pass one "
            "integer per context or None"
        )
    for i, v in enumerate(stream_ids):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"stream_ids[{i}] must be an integer, got {short(v)}")
        if not 0 <= int(v) < 2**64:
            raise ValueError(
                f"stream_ids[{i}] must be in [0, 2**64), got {int(v)}; reduce it modulo 2**64"
            )
    return np.array([int(v) for v in stream_ids], dtype=np.uint64)


# ------------------------------------------------------------------------------------ snapshots


def save_snapshot(snapshot: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write a snapshot to ``path`` as safetensors, atomically (temporary file + ``os.replace``).

    Args:
        snapshot: a mapping of names to tensors (what :meth:`HFPolicy.snapshot` returns).
        path: the file to write; its directory must exist. An existing file is replaced only once
            the new one is complete.

    Returns:
        The path written.

    Raises:
        TypeError: if ``snapshot`` is not a mapping of ``str`` to tensors.
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    if not isinstance(snapshot, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in snapshot.items()
    ):
        raise TypeError(
            f"snapshot must be a mapping of str to torch.Tensor (HFPolicy.snapshot()), got "
            f"{short(snapshot)}"
        )
    target = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in snapshot.items()}
    if not target.parent.is_dir():
        raise FileNotFoundError(f"save_snapshot: the folder {str(target.parent)!r} does not exist")
    with atomic_path(target) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt", "content": "gpo HFPolicy snapshot"})
    return target


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a snapshot written by :func:`save_snapshot` (CPU tensors).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it is not a readable safetensors file.
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"no snapshot file at {str(source)!r}; save one with save_snapshot")
    try:
        return load_file(source, device="cpu")
    except Exception as exc:
        raise ValueError(
            f"could not read a safetensors snapshot from {str(source)!r} ({exc}); was it written "
            "by save_snapshot?"
        ) from exc
