r"""One rollout of the GPO game, and the experience and metrics each player reads off it.

A rollout (:func:`rollout`): the adversary writes ``prompts_per_context`` prompts per drawn
context (a seed prompt, or ``""`` for an unconditional adversary), the defender answers each
distinct prompt ``responses_per_prompt`` times (plus a ``seed_mix`` share of raw seed prompts),
and the reward model scores every ``(prompt, response)``. Then

* the defender's experience is its responses with utility :math:`r(x, y)`, each row weighted by
  the probability of its prompt (the opponent's part);
* the adversary's is its prompts with utility :math:`-r(x, y) + \beta_{div} R_{div}(x)`, each
  row weighted by the probability of the response it met.

Every training update of :func:`gpo_core.alignment.run_game` and every best-response update of
:func:`gpo_core.gap.estimate_gap` goes through these functions (one path).
"""

from __future__ import annotations

import hashlib
import math
import inspect
import warnings
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from gpo_core._validate import short
from gpo_core.protocols import Experience, Policy, RewardModel, Samples

__all__ = ["checked_rewards", "check_scores"]


def _to_numpy(raw: Any, who: str) -> np.ndarray:
    if hasattr(raw, "detach") and hasattr(raw, "cpu"):  # a torch tensor, maybe on a GPU / in bf16
        tensor = raw.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.double()
        raw = tensor.numpy()
    try:
        return np.asarray(raw)
    except Exception as exc:  # ragged lists, exotic objects
        raise TypeError(
            f"{who} returned {short(raw)}, which is not convertible to a numeric array ({exc}); "
            "return a list or 1-d array of floats"
        ) from exc


def check_scores(
    raw: Any, who: str, prompts: list[str], responses: list[str], what: str = "scores"
) -> np.ndarray:
    """``raw`` as a float64 ``(N,)`` array of finite values, or an error naming ``who``."""
    n = len(prompts)
    arr = _to_numpy(raw, who)
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise TypeError(
            f"{who} returned dtype {arr.dtype} ({short(raw)}); it must return real numbers "
            "(int or float), one per (prompt, response) pair"
        )
    if arr.ndim != 1:
        raise ValueError(
            f"{who} returned an array of shape {arr.shape} for {n} pairs; it must return a flat "
            f"sequence of {n} {what} (e.g. .reshape(-1) a (N, 1) output)"
        )
    if arr.shape[0] != n:
        raise ValueError(f"{who} returned {arr.shape[0]} {what} for {n} pairs")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "NaN" if math.isnan(arr[i]) else repr(float(arr[i]))
        raise ValueError(
            f"{who} returned {kind} for pair {i} (prompt={short(prompts[i], 60)}, "
            f"response={short(responses[i], 60)}); rewards must be finite"
        )
    return arr


def checked_rewards(model: RewardModel, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """Call ``model.score`` and check it returned one finite float per pair, naming the model
    (lists, numpy arrays and tensors on any device are accepted; a fresh float64 array returns)."""
    raw = model.score(list(prompts), list(responses))
    return check_scores(raw, f"reward model {short(model)}", list(prompts), list(responses))


class Rollout(NamedTuple):
    """What one rollout produced (interior use)."""

    seeds: tuple[str, ...]  # context of each prompt occurrence (seed prompt or "")
    prompts: tuple[str, ...]  # each prompt occurrence, as the adversary wrote it
    all_prompts: tuple[str, ...]  # the global batch's prompts, every rank's in rank order
    prompt_weights: np.ndarray  # probability mass of each occurrence (sums to 1)
    occ_uniq: np.ndarray  # index of each occurrence's prompt among the unique prompts
    uniq_weights: np.ndarray  # mass of each unique prompt
    contexts: tuple[str, ...]  # context of each response row (unique prompt, then mixed seeds)
    responses: tuple[str, ...]
    response_weights: np.ndarray
    row_uniq: np.ndarray  # unique-prompt index of each response row; -1 for mixed seeds
    rewards: np.ndarray


def prefixed(prefix: str, metrics: Mapping[str, float] | None) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in (metrics or {}).items()}


def _takes_stream_ids(policy: Policy) -> bool:
    """Whether ``policy.sample`` accepts the optional ``stream_ids`` keyword (see Policy)."""
    try:
        param = inspect.signature(policy.sample).parameters.get("stream_ids")
    except (TypeError, ValueError):  # a builtin or C-implemented sample with no signature
        return False
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def _text_stream(text: str) -> int:
    """A stream id fixed by the text alone (64 bits of BLAKE2b), the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def _sample(policy, contexts, k, rng, rank, streams) -> Samples:
    """``policy.sample`` with exactly one draw from the shared generator ``rng``.

    Whatever the policy does with the generator it is given, ``rng`` advances the same on every
    rank, so the ranks keep drawing the same global batches. A policy that takes ``stream_ids``
    gets the same generator on every rank and split-independent stream ids (its rows then draw
    what one process would draw); any other policy gets a generator of its rank's own.
    """
    draw = int(rng.integers(2**63))
    if _takes_stream_ids(policy):
        return policy.sample(contexts, k, np.random.default_rng(draw), stream_ids=list(streams))
    return policy.sample(contexts, k, np.random.default_rng([draw, rank]))


def rollout(defender, adversary, reward, config, seeds, rng, shard=(0, 1), comm=None) -> Rollout:
    # Every rank draws the same global batch from the same generator and keeps its slice, so the
    # ranks' slices together are exactly the batch a single process would play. Sampling keeps
    # them together too: each policy call takes one draw from rng (_sample), the adversary's
    # rows are keyed by their global row index and the defender's by the prompt's text, so with
    # stream-keyed policies every row draws what it would draw in one process.
    if config.conditional_adversary:
        idx = rng.choice(len(seeds), size=config.batch_size, replace=len(seeds) < config.batch_size)
        contexts = [seeds[int(i)] for i in idx]
    else:
        contexts = [""] * config.batch_size
    rank, world = shard
    local = config.batch_size // world
    rows = range(rank * local, (rank + 1) * local)
    contexts = contexts[rows.start : rows.stop]
    ps = _sample(adversary, contexts, config.prompts_per_context, rng, rank, rows)
    # Each context's weights sum to 1; spread the batch's mass evenly over its contexts.
    p_weights = np.asarray(ps.weights, dtype=np.float64) / local
    # The defender answers each distinct prompt once, so rows map back to prompts unambiguously.
    index: dict[str, int] = {}
    occ_uniq = np.array([index.setdefault(p, len(index)) for p in ps.outputs], dtype=np.int64)
    uniq = list(index)
    uniq_w = np.bincount(occ_uniq, weights=p_weights, minlength=len(uniq))
    rs = _sample(defender, uniq, config.responses_per_prompt, rng, rank, map(_text_stream, uniq))
    row_uniq = np.array([_lookup(index, c) for c in rs.contexts], dtype=np.int64)
    ctx, out, w = list(rs.contexts), list(rs.outputs), list(np.asarray(rs.weights, dtype=np.float64))
    n_mix = int(round(config.seed_mix * len(uniq)))
    # One draw whatever n_mix is (it depends on the rank's own prompts); each rank mixes in its
    # own seed prompts from a generator of its own.
    mix_rng = np.random.default_rng([int(rng.integers(2**63)), rank]) if config.seed_mix else None
    if n_mix:
        mixed = [seeds[int(i)] for i in mix_rng.choice(len(seeds), size=n_mix)]
        ms = _sample(defender, mixed, config.responses_per_prompt, mix_rng, rank, range(n_mix))
        ctx += ms.contexts
        out += ms.outputs
        w += list(np.asarray(ms.weights, dtype=np.float64))
        row_uniq = np.r_[row_uniq, np.full(len(ms.outputs), -1, dtype=np.int64)]
    rewards = checked_rewards(reward, ctx, out)
    prompts = tuple(ps.outputs)
    return Rollout(
        seeds=tuple(ps.contexts),
        prompts=prompts,
        all_prompts=prompts if comm is None else tuple(comm.gather(list(prompts))),
        prompt_weights=p_weights,
        occ_uniq=occ_uniq,
        uniq_weights=uniq_w,
        contexts=tuple(ctx),
        responses=tuple(out),
        response_weights=np.asarray(w, dtype=np.float64),
        row_uniq=row_uniq,
        rewards=rewards,
    )


def warn_if_no_signal(
    player: str, policy: Any, exp: Experience, config: Any, warned: set[str]
) -> None:
    """Warn once per run when a context-centring policy gets one distinct output per context.

    A policy whose update centres each context's rows on their own mean (it says so with a true
    ``centres_contexts`` attribute, as :class:`backends.hf.HFPolicy` does) then has exactly zero
    gradient: it never moves. Other policies (an importance-weighted table) learn from single
    samples and are not warned about.
    """
    field = "responses_per_prompt" if player == "defender" else "prompts_per_context"
    if (getattr(config, field) > 1 or player in warned or len(exp.contexts) == 0
            or getattr(policy, "centres_contexts", False) is not True):
        return
    if len(set(zip(exp.contexts, exp.outputs))) > len(set(exp.contexts)):
        return  # some context compares two different outputs
    warned.add(player)
    warnings.warn(
        f"every context in the {player}'s batch has one sampled output ({field}=1): its update "
        f"centres each context on its own mean, so it gets no learning signal and the {player} "
        f"will not move; set {field} >= 2",
        UserWarning,
        stacklevel=3,
    )


def _lookup(index: Mapping[str, int], ctx: str) -> int:
    try:
        return index[ctx]
    except KeyError:
        raise ValueError(
            f"defender.sample returned a row for context {short(ctx, 60)} that was not asked for; "
            "Samples.contexts must repeat the given contexts"
        ) from None


def defender_experience(roll: Rollout) -> Experience:
    adv = roll.row_uniq >= 0
    n_adv = max(1, int(np.sum(adv)))
    # The row's weight is the probability of its prompt (the adversary's part); a mixed-in seed
    # prompt weighs like one sampled row.
    w = np.where(adv, roll.uniq_weights[np.maximum(roll.row_uniq, 0)], 1.0 / n_adv)
    return Experience(roll.contexts, roll.responses, roll.rewards, w)


def adversary_experience(roll, config, diversity, history) -> tuple[Experience, dict[str, float]]:
    metrics: dict[str, float] = {}
    div = np.zeros(len(roll.prompts))
    if config.beta_div > 0:
        div = np.asarray(diversity(list(roll.prompts), list(history)), dtype=np.float64).reshape(-1)
        if div.shape[0] != len(roll.prompts) or not np.all(np.isfinite(div)):
            raise ValueError(
                f"diversity reward {short(diversity)} must return one finite float per prompt "
                f"({len(roll.prompts)}), got {short(div)}"
            )
        metrics["diversity/reward"] = float(np.sum(roll.prompt_weights * div))
    seeds, prompts, utils, weights, mass = [], [], [], [], []
    for occ, u in enumerate(roll.occ_uniq):
        rows = np.flatnonzero(roll.row_uniq == u)
        seeds += [roll.seeds[occ]] * len(rows)
        prompts += [roll.prompts[occ]] * len(rows)
        utils.append(-roll.rewards[rows] + config.beta_div * div[occ])
        weights.append(roll.response_weights[rows])
        mass.append(roll.prompt_weights[occ] * roll.response_weights[rows])
    utilities = np.concatenate(utils)
    w = np.concatenate(weights)
    m = np.concatenate(mass)
    metrics["adversary/utility"] = float(np.sum(m * utilities) / np.sum(m))
    return Experience(tuple(seeds), tuple(prompts), utilities, w), metrics


def rollout_metrics(roll: Rollout, config: Any) -> dict[str, float]:
    adv = roll.row_uniq >= 0
    w = roll.uniq_weights[roll.row_uniq[adv]] * roll.response_weights[adv]
    r = roll.rewards[adv]
    total = float(np.sum(w))
    return {
        "reward/mean": float(np.sum(w * r) / total),
        "attack/success_rate": float(np.sum(w * (r < config.attack_threshold)) / total),
        "prompts/unique": float(len(set(roll.all_prompts))),  # in the global batch
    }
