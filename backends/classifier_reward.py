r"""A sequence classifier as the reward: ``r(x, y) = softmax(f(x, y))[label]`` (or its logit).

Any ``AutoModelForSequenceClassification`` (a toxicity or safety classifier, or a
Bradley--Terry reward head read as a logit) scores each (prompt, response) pair; this is the
paper's "probability of being classified as safe" (GPO.md §3.2.1). It loads from a local path
only and never runs remote code; ``torch`` and ``transformers`` are imported on use. Part of
:mod:`backends.rewards`, which re-exports it.
"""

from __future__ import annotations

import numbers
import os
import string
from typing import Any, Sequence

import numpy as np

from backends._texts import _check_pairs
from gpo_core._validate import check_positive_int, short
from gpo_core.rollout import check_scores as _check_scores

__all__ = ["SequenceClassifierReward"]

_OUTPUTS = ("prob", "logit")




def _template_fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ValueError(f"template {short(template)} is not a valid format string: {exc}") from exc


class SequenceClassifierReward:
    r"""Reward = a sequence classifier's probability of one label for the (prompt, response) pair.

    .. math::
        r(x, y) = \mathrm{softmax}\big(f_\theta(\mathrm{enc}(x, y))\big)_{\ell}

    where ``enc`` is the tokenizer's text-pair encoding (``[CLS] x [SEP] y [SEP]`` for BERT) or,
    with ``template``, the single text ``template.format(prompt=x, response=y)``. With
    ``output="logit"`` the reward is the raw logit ``f_theta(...)_l`` instead (a Bradley--Terry
    reward model's single score: ``label=0``).

    The model runs in eval mode under ``torch.inference_mode`` (its train/eval mode is restored
    after each call), in batches of ``batch_size``, truncated to ``max_length`` tokens (pairs:
    longest-first; templates: the tokenizer's ``truncation_side``, right by default, which cuts the
    response first: set ``tokenizer.truncation_side = "left"`` for long prompts).

    Args:
        model: a ``transformers`` sequence-classification model (``...ForSequenceClassification``).
        tokenizer: its tokenizer; needs a pad token when ``batch_size > 1``.
        label: the label whose probability is the reward: an index into the logits, or a name
            from ``model.config.id2label`` (e.g. ``"safe"``).
        template: ``None`` (text pair) or a format string with exactly the fields ``{prompt}``
            and ``{response}``.
        device: where to run; the model is moved there now (``None``: leave it where it is).
        batch_size: pairs per forward pass.
        max_length: tokens per encoded pair.
        output: ``"prob"`` (softmax probability of ``label``) or ``"logit"``.

    Raises:
        TypeError: a wrong type for any argument.
        ValueError: unknown label name or index out of range; a template with other fields;
            ``output="prob"`` on a one-logit head; no pad token while ``batch_size > 1``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        label: int | str,
        *,
        template: str | None = None,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        output: str = "prob",
    ) -> None:
        config = getattr(model, "config", None)
        if config is None or not callable(model) or not hasattr(model, "parameters"):
            raise TypeError(
                f"model must be a transformers sequence-classification model (a torch module with "
                f".config), got {short(model)}"
            )
        if not callable(tokenizer):
            raise TypeError(
                f"tokenizer must be a callable transformers tokenizer, got {short(tokenizer)}"
            )
        if not isinstance(output, str) or output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, got {short(output)}")
        num_labels = int(getattr(config, "num_labels", 0) or 0)
        if num_labels < 1:
            raise ValueError(f"model.config.num_labels must be >= 1, got {short(num_labels)}")
        if output == "prob" and num_labels == 1:
            raise ValueError(
                "output='prob' needs at least 2 labels: the softmax of a single logit is always 1; "
                "use output='logit' for a one-logit (Bradley-Terry) reward head"
            )
        self.label_index = self._resolve_label(label, config, num_labels)
        id2label = getattr(config, "id2label", None) or {}
        self.label_name = str(
            id2label.get(self.label_index, id2label.get(str(self.label_index), self.label_index))
        )
        if template is not None:
            if not isinstance(template, str):
                raise TypeError(f"template must be a str or None, got {short(template)}")
            fields = _template_fields(template)
            if fields != {"prompt", "response"}:
                raise ValueError(
                    f"template must contain exactly the fields {{prompt}} and {{response}}, got "
                    f"fields {sorted(fields)} in {short(template)}"
                )
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be a str such as 'cpu' or 'cuda:0', got {short(device)}")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.max_length = check_positive_int(max_length, "max_length")
        if self.batch_size > 1 and getattr(tokenizer, "pad_token", None) is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no pad token, so batches of "
                f"batch_size={self.batch_size} cannot be padded; set tokenizer.pad_token (e.g. "
                "tokenizer.pad_token = tokenizer.eos_token, and model.config.pad_token_id to "
                "match) or pass batch_size=1"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.output = output
        if device is not None:
            model.to(device)

    @staticmethod
    def _resolve_label(label: Any, config: Any, num_labels: int) -> int:
        id2label = getattr(config, "id2label", None) or {}
        names = {int(k): str(v) for k, v in id2label.items()}
        if isinstance(label, bool) or not isinstance(label, (numbers.Integral, str)):
            raise TypeError(
                f"label must be a label index (int) or a name from model.config.id2label "
                f"{names}, got {short(label)}"
            )
        if isinstance(label, str):
            matches = [i for i, name in names.items() if name == label]
            if len(matches) != 1:
                raise ValueError(
                    f"label {label!r} is not a unique name in model.config.id2label {names}; "
                    "pass one of these names or its index"
                )
            return matches[0]
        if not 0 <= int(label) < num_labels:
            raise ValueError(
                f"label index must be in [0, {num_labels}) for a model with {num_labels} labels "
                f"(id2label {names}), got {int(label)}"
            )
        return int(label)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        label: int | str,
        template: str | None = None,
        device: str | None = None,
        batch_size: int = 16,
        max_length: int = 512,
        output: str = "prob",
    ) -> "SequenceClassifierReward":
        """Load a classifier and its tokenizer from a local directory (no download, no remote code).

        Args:
            path: a directory written by ``save_pretrained`` (model and tokenizer).
            label, template, device, batch_size, max_length, output: as for the constructor.

        Returns:
            The reward model.

        Raises:
            TypeError: ``path`` is not a path.
            ValueError: ``path`` is not an existing directory; see the constructor.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a local directory path, got {short(path)}")
        if not os.path.isdir(path):
            raise ValueError(
                f"path {os.fspath(path)!r} is not an existing local directory; this loader never "
                "downloads: save the model and tokenizer there first (save_pretrained)"
            )
        from transformers import (  # noqa: PLC0415  (lazy: torch is optional)
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        tokenizer = AutoTokenizer.from_pretrained(
            os.fspath(path), local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            os.fspath(path), local_files_only=True, trust_remote_code=False
        )
        return cls(
            model,
            tokenizer,
            label,
            template=template,
            device=device,
            batch_size=batch_size,
            max_length=max_length,
            output=output,
        )

    def __repr__(self) -> str:
        name = getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__
        return (
            f"SequenceClassifierReward({name!s}, label={self.label_name!r}, "
            f"output={self.output!r})"
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Score the pairs.

        Args:
            prompts: ``N`` prompts.
            responses: ``N`` responses.

        Returns:
            Shape ``(N,)`` float64: probabilities in ``[0, 1]`` (or logits).

        Raises:
            TypeError: bad texts.
            ValueError: lengths differ; the model's logits have an unexpected shape.
        """
        import torch  # noqa: PLC0415

        prompts, responses = _check_pairs(prompts, responses)
        out = np.zeros(len(prompts), dtype=np.float64)
        if not prompts:
            return out
        model = self.model
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            for s in range(0, len(prompts), self.batch_size):
                ps = prompts[s : s + self.batch_size]
                rs = responses[s : s + self.batch_size]
                if self.template is None:
                    args: tuple = (ps, rs)
                else:
                    args = ([self.template.format(prompt=p, response=r) for p, r in zip(ps, rs)],)
                enc = self.tokenizer(
                    *args,
                    padding=len(ps) > 1,  # a single pair needs no pad token
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                enc = {k: v.to(device) for k, v in enc.items()}
                with torch.inference_mode():
                    logits = model(**enc).logits.float()
                if logits.ndim != 2 or logits.shape[0] != len(ps):
                    raise ValueError(
                        f"{self!r}: the model returned logits of shape {tuple(logits.shape)} for "
                        f"{len(ps)} pairs; expected ({len(ps)}, num_labels)"
                    )
                vals = logits.softmax(dim=-1) if self.output == "prob" else logits
                out[s : s + len(ps)] = vals[:, self.label_index].double().cpu().numpy()
        finally:
            model.train(was_training)
        return _check_scores(out, f"reward model {self!r}", prompts, responses)


