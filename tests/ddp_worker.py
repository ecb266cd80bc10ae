"""A 3-round GPO game between two tiny LMs; run plain (1 process) or under torchrun (N ranks).

Writes ``OUT/rank{r}.json`` with the per-round metrics, the prompt history and a digest of both
players' parameters. Used by tests/test_distributed.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import torch

from backends.hf import GenerationSettings, HFPolicy
from backends.rewards import CallableReward
from backends.tiny import HARMLESS_SENTENCES, tiny_llama, word_tokenizer
from gpo_core.alignment import GameConfig, run_game


def digest(*models: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for model in models:
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: str) -> None:
    torch.set_num_threads(1)
    comm = None
    if "WORLD_SIZE" in os.environ:
        from backends.distributed import init

        comm = init("gloo")
    tok = word_tokenizer(sorted({w for t in HARMLESS_SENTENCES for w in t.split()}))
    gen = GenerationSettings(max_new_tokens=6)
    sync = None if comm is None else comm.average_gradients
    players = [HFPolicy(tiny_llama(tok, seed=i), tok, generation=gen, objective="pg", lr=1e-2,
                        inner_steps=2, grad_sync=sync, name=name)
               for i, name in enumerate(("defender", "adversary"))]
    if comm is not None:
        for p in players:
            comm.broadcast_parameters(p.model)
    start = digest(*(p.model for p in players))
    reward = CallableReward(lambda prompts, responses: [r.count("the") / 6 for r in responses])
    config = GameConfig(rounds=3, batch_size=8, responses_per_prompt=4, defender_eta=10.0,
                        adversary_eta=10.0, seed=0)
    result = run_game(players[0], players[1], reward, config,
                      seed_prompts=list(HARMLESS_SENTENCES[:8]), comm=comm)
    rank = 0 if comm is None else comm.rank
    with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
        json.dump({"metrics": [dict(log.metrics) for log in result.logs],
                   "history": list(result.history), "start": start,
                   "digest": digest(*(p.model for p in players))}, fh)


if __name__ == "__main__":
    main(sys.argv[1])
