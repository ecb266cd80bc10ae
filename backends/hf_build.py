"""Assembling a :class:`backends.hf.HFPolicy` from its constructor's arguments.

One job: check every argument (:mod:`backends.hf_checks`), and only then touch the model (wrap
it with ``peft``, move it to its device and dtype, copy or prepare the reference) and build the
parts the policy glues together: the :class:`~backends.hf_tokens.Encoder`, the
:class:`~backends.hf_scoring.Scorer` and the :class:`~backends.hf_update.Trainer`. A refused
construction leaves the caller's model as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import torch

from backends import hf_checks as _chk
from backends._texts import _check_choice
from backends.hf_sampling import GenerationSettings
from backends.hf_scoring import Scorer
from backends.hf_tokens import Encoder, SampledIds, check_template
from backends.hf_update import OBJECTIVES, OPTIMIZERS, Trainer
from gpo_core._validate import check_nonnegative, check_positive, check_positive_int, short

__all__ = ["Parts", "build"]


@dataclasses.dataclass
class Parts:
    """What a policy is made of (see :func:`build`)."""

    model: torch.nn.Module
    reference: torch.nn.Module | None
    peft: bool
    device: torch.device
    eos_id: int | None
    pad_id: int
    stop_ids: list[int]
    tok_len: int
    micro: int
    gen_batch: int
    checkpointing: bool
    sampled: SampledIds
    encoder: Encoder
    scorer: Scorer
    trainer: Trainer


def _check_sync(grad_sync: Any, value_sync: Any, name: str) -> None:
    if grad_sync is not None and not callable(grad_sync):
        raise TypeError(
            f"grad_sync must be a callable params -> None or None, got {short(grad_sync)}"
        )
    if value_sync is not None and not callable(value_sync):
        raise TypeError(
            f"value_sync must be a callable {{name: float}} -> {{name: mean over ranks}} or "
            f"None, got {short(value_sync)}"
        )
    if grad_sync is not None and value_sync is None:
        raise ValueError(
            f"HFPolicy {name!r}: grad_sync is given but value_sync is not; the ranks must also "
            "agree on the loss and the fit's residual to take the same steps: pass "
            "value_sync=comm.mean (backends.distributed)"
        )


def _stop_ids(model: Any, eos_id: int | None, stop_token_ids: Any, tok_len: int) -> list[int]:
    """The ids that end an output: the tokenizer's eos, the model's
    ``generation_config.eos_token_id`` (an int or a list: chat models list their end-of-turn
    token there) and ``stop_token_ids``."""
    base = model.get_base_model() if _chk.is_peft(model) else model
    listed = getattr(getattr(base, "generation_config", None), "eos_token_id", None)
    ids = _chk.check_token_ids(listed, "generation_config.eos_token_id", tok_len)
    ids += _chk.check_token_ids(stop_token_ids, "stop_token_ids", tok_len)
    return sorted(set(ids) | ({eos_id} if eos_id is not None else set()))


def _set_precision(model: torch.nn.Module, dtype: torch.dtype | None) -> torch.dtype | None:
    """Store the weights for ``dtype`` and return the dtype forwards autocast to (or ``None``).

    float32: every weight in float32. bfloat16 (asked for, or ``None`` with bfloat16 trainable
    weights): the trainable weights are kept in float32 (master weights: an update smaller than
    bfloat16's resolution, 2**-8 of a weight, accumulates instead of rounding away), frozen ones
    (a ``peft`` base) are stored in bfloat16, and forwards run under ``torch.autocast`` in
    bfloat16. ``None`` otherwise: the model as it is.
    """
    params = list(model.parameters())
    if dtype is None and any(p.requires_grad and p.dtype == torch.bfloat16 for p in params):
        dtype = torch.bfloat16
    if dtype != torch.bfloat16:
        if dtype is not None:
            model.to(dtype=dtype)
        return None
    for p in params:
        want = torch.float32 if p.requires_grad else torch.bfloat16
        if p.dtype != want:
            p.data = p.data.to(want)
    return torch.bfloat16


def _enable_checkpointing(model: torch.nn.Module, peft: bool) -> None:
    """Recompute each layer's activations in the backward (non-reentrant ``torch.utils.checkpoint``)
    and set every dropout to 0: transformers checkpoints only in training mode, which the policy
    enters for its gradient evaluations alone, and HFPolicy never drops (``eval()`` otherwise)."""
    base = model.get_base_model() if peft else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for key, value in vars(module).items():  # e.g. LlamaAttention.attention_dropout
            if "dropout" in key and isinstance(value, float) and value:
                setattr(module, key, 0.0)


def _wrap_peft(model: torch.nn.Module, peft_config: Any) -> torch.nn.Module:
    import peft  # noqa: PLC0415  (optional dependency, only imported on use)

    with warnings.catch_warnings():
        # peft 0.21 reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning
        # from inside peft that callers cannot act on); nothing else muted.
        warnings.filterwarnings(
            "ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        return peft.get_peft_model(model, peft_config)


def build(model: Any, tokenizer: Any, *, name: str, template: Any, generation: Any,
          objective: Any, lr: Any, optimizer: Any, fit_tol: Any, fit_atol: Any,
          max_fit_steps: Any, inner_steps: Any, micro_batch_size: Any, device: Any, dtype: Any,
          peft_config: Any, reference: Any, truncate_prompts: Any, max_prompt_tokens: Any,
          max_grad_norm: Any, weight_decay: Any, fresh_optimizer: Any, grad_sync: Any,
          value_sync: Any, stop_token_ids: Any, token_cache_size: Any,
          generation_batch_size: Any, gradient_checkpointing: Any) -> Parts:
    """Check the arguments of :class:`backends.hf.HFPolicy` (same names), then build its parts.

    Raises:
        TypeError, ValueError: for any invalid argument, naming it and the fix.
    """
    if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
        raise TypeError(
            f"model must be a transformers causal LM (a torch.nn.Module with a .config), got "
            f"{short(model)}; build one with AutoModelForCausalLM.from_pretrained/from_config"
        )
    _chk.check_tokenizer(tokenizer)
    if not isinstance(generation, GenerationSettings):
        raise TypeError(
            f"generation must be a GenerationSettings, got {short(generation)}; e.g. "
            "GenerationSettings(max_new_tokens=32)"
        )
    objective = _check_choice(objective, "objective", sorted(OBJECTIVES))
    optimizer = _check_choice(optimizer, "optimizer", list(OPTIMIZERS))
    lr = check_positive(lr, "lr")
    fit_tol = check_positive(fit_tol, "fit_tol")
    if fit_tol >= 1:
        raise ValueError(
            f"fit_tol must be in (0, 1) (the residual's share of the move asked for), got "
            f"{fit_tol!r}; 1e-2 leaves 10% root-mean-square error in the step"
        )
    fit_atol = check_nonnegative(fit_atol, "fit_atol")
    steps = check_positive_int(max_fit_steps if inner_steps is None else inner_steps,
                               "max_fit_steps" if inner_steps is None else "inner_steps")
    micro = check_positive_int(micro_batch_size, "micro_batch_size")
    gen_batch = micro if generation_batch_size is None else check_positive_int(
        generation_batch_size, "generation_batch_size")
    sampled = SampledIds(_chk.check_count(token_cache_size, "token_cache_size"))
    if max_grad_norm is not None:
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    weight_decay = _chk.check_weight_decay(weight_decay, optimizer)
    fresh = _chk.check_bool(fresh_optimizer, "fresh_optimizer")
    _check_sync(grad_sync, value_sync, name)
    truncate = _chk.check_bool(truncate_prompts, "truncate_prompts")
    template = check_template(template, tokenizer)

    # Special ids: a stop id ends outputs; pad is only ever masked; others are never generated.
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    tok_len = len(tokenizer)
    stop_ids = _stop_ids(model, eos_id, stop_token_ids, tok_len)
    excluded = sorted(set(tokenizer.all_special_ids) - set(stop_ids))
    torch_dtype = _chk.check_dtype(dtype)
    dev = _chk.check_device(device, model)
    peft = _chk.is_peft(model)
    if peft_config is not None and peft:
        raise ValueError(
            f"HFPolicy {name!r}: model is already a peft.PeftModel; pass peft_config=None (its "
            "adapters are trained as they are) or pass the base model"
        )
    base_config = (model.get_base_model() if peft else model).config
    vocab = getattr(base_config, "vocab_size", None)
    context_len = _chk.model_context(base_config)
    budget = _chk.check_budget(max_prompt_tokens, generation.max_new_tokens, context_len, name)
    _chk.check_reference(reference, model, vocab, name)
    checkpointing = _chk.check_bool(gradient_checkpointing, "gradient_checkpointing")
    base = model.get_base_model() if peft else model
    if checkpointing and not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"HFPolicy {name!r}: gradient_checkpointing=True but {type(base).__name__} does not "
            "support transformers' gradient checkpointing (supports_gradient_checkpointing is "
            "not True); pass gradient_checkpointing=False"
        )

    # Every check is done: now the model may be touched.
    if peft_config is not None:
        model, peft = _wrap_peft(model, peft_config), True
    autocast = _set_precision(model.to(device=dev).eval(), torch_dtype)
    if reference is not None:
        reference = reference.to(device=dev, dtype=autocast or torch_dtype).eval()
        reference.requires_grad_(False)
    elif not peft:  # under peft the reference is the network with its adapters disabled
        reference = copy.deepcopy(model).requires_grad_(False).eval()
    if checkpointing:  # after the reference's copy: only the trained network recomputes
        _enable_checkpointing(model, peft)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"HFPolicy {name!r}: the model has no trainable parameters (requires_grad is False "
            "everywhere); unfreeze some or pass a peft_config"
        )
    encoder = Encoder(
        tokenizer, template, max_new_tokens=generation.max_new_tokens, budget=budget,
        context_len=context_len, truncate=truncate,
        stop_id=eos_id if eos_id in stop_ids else (stop_ids[0] if stop_ids else None),
        forbidden=set(excluded) | set(stop_ids), vocab=tok_len, name=name,
    )
    scorer = Scorer(model, device=dev, pad_id=pad_id, excluded=excluded, vocab=tok_len,
                    stop_ids=stop_ids, micro=micro, autocast=autocast)
    trainer = Trainer(
        params, name=name, objective=objective, optimizer=optimizer, lr=lr,
        weight_decay=weight_decay, fit_tol=fit_tol, fit_atol=fit_atol, max_fit_steps=steps,
        max_grad_norm=max_grad_norm, fresh_optimizer=fresh, grad_sync=grad_sync,
        value_sync=value_sync, low_precision=autocast is not None,
    )
    return Parts(model=model, reference=reference, peft=peft, device=dev, eos_id=eos_id,
                 pad_id=pad_id, stop_ids=stop_ids, tok_len=tok_len, micro=micro, sampled=sampled,
                 gen_batch=gen_batch, checkpointing=checkpointing,
                 encoder=encoder, scorer=scorer, trainer=trainer)
