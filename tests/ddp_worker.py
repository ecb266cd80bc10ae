"""A short GPO game between two tiny LMs, run as one process, under torchrun, or under accelerate.

    python tests/ddp_worker.py OUT                                  # one process
    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py OUT   # backends.distributed.init
    accelerate launch --multi_gpu --num_processes 2 tests/ddp_worker.py OUT --accelerate

Options: ``--rounds N`` (default 3), ``--checkpoint DIR`` (checkpoint there, resuming if it holds
one), ``--seed S`` (the game's seed, default 0), ``--float32`` (float32 players instead of float64;
see tests/test_distributed.py for why the test uses float64). Writes ``OUT/rank{r}.json`` (per-round metrics, prompt history, digests of both players'
parameters before and after, the rounds this process played, and how often it saved and loaded
snapshots) and, from rank 0, ``OUT/params.npz`` (the final parameters). Used by
tests/test_distributed.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

import numpy as np
import torch

from backends.hf import GenerationSettings, HFPolicy
from backends.rewards import CallableReward
from backends.tiny import HARMLESS_SENTENCES, tiny_llama, word_tokenizer
from gpo_core.alignment import GameConfig, run_game

NAMES = ("defender", "adversary")


def digest(*models: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for model in models:
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def count_calls(policy: HFPolicy, method: str, counts: dict[str, int]) -> None:
    """Count the calls of policy.<method> (an instance attribute shadows the class's)."""
    original = getattr(policy, method)
    counts.setdefault(method, 0)

    def counted(*args, **kwargs):
        counts[method] += 1
        return original(*args, **kwargs)

    setattr(policy, method, counted)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--accelerate", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)  # a test script's choice; the library never sets it
    comm = None
    if args.accelerate:
        from backends.distributed import init_accelerate

        comm = init_accelerate()
    elif "WORLD_SIZE" in os.environ:
        from backends.distributed import init

        comm = init("gloo")
    device = "cpu" if comm is None else comm.device
    tok = word_tokenizer(sorted({w for t in HARMLESS_SENTENCES for w in t.split()}))
    gen = GenerationSettings(max_new_tokens=6)
    sync = None if comm is None else comm.average_gradients
    dtype = torch.float32 if args.float32 else torch.float64
    value_sync = None if comm is None else comm.mean
    players = [HFPolicy(tiny_llama(tok, seed=i).to(dtype), tok, generation=gen, objective="pg",
                        max_fit_steps=8, fit_tol=0.05, grad_sync=sync, value_sync=value_sync,
                        device=device, name=name)
               for i, name in enumerate(NAMES)]
    if comm is not None:
        for p in players:
            comm.broadcast_parameters(p.model)
    counts: dict[str, int] = {}
    for p in players:
        count_calls(p, "save_snapshot", counts)
        count_calls(p, "load_snapshot", counts)
    start = digest(*(p.model for p in players))
    reward = CallableReward(lambda prompts, responses: [r.count("the") / 6 for r in responses])
    # batch_size <= len(seed_prompts): each batch holds distinct seed prompts, so no adversary
    # context has rows on two ranks and N ranks play exactly the game one process plays.
    # Two rewrites per seed prompt: the adversary's per-context objective needs two rows per
    # context to have a learning signal (with one it would stand still and prove little).
    config = GameConfig(rounds=args.rounds, batch_size=8, responses_per_prompt=4,
                        prompts_per_context=2, defender_eta=10.0, adversary_eta=10.0,
                        seed=args.seed)
    played: list[int] = []
    result = run_game(players[0], players[1], reward, config,
                      seed_prompts=list(HARMLESS_SENTENCES[:8]), comm=comm,
                      checkpoint_dir=args.checkpoint, on_round=lambda log: played.append(log.round))
    rank = 0 if comm is None else comm.rank
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as fh:
        json.dump({"metrics": [dict(log.metrics) for log in result.logs],
                   "history": list(result.history), "start": start,
                   "digest": digest(*(p.model for p in players)), "played": played,
                   "world_size": 1 if comm is None else comm.world_size,
                   "comm": type(comm).__name__, "counts": counts}, fh)
    if rank == 0:
        np.savez(os.path.join(args.out, "params.npz"),
                 **{f"{name}.{k}": v.detach().cpu().numpy()
                    for name, p in zip(NAMES, players) for k, v in p.model.state_dict().items()})
    if comm is not None:
        from backends.distributed import shutdown

        # Without it gloo's threads outlive the interpreter and a rank can abort at exit
        # (seen once in a full suite run: SIGABRT after all the work was written).
        shutdown()


if __name__ == "__main__":
    main()
