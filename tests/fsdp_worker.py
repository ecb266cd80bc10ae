"""Short GPO games between two tiny LMs under torchrun: data-parallel, sharded with FSDP, and a
sharded run stopped and resumed from its checkpoint, all in one launch.

    torchrun --standalone --nproc_per_node 2 tests/fsdp_worker.py OUT [--lora]

Each game is written to ``OUT/{game}.rank{r}.json`` (per-round metrics, prompt history, the
rounds played, how many empty forwards and zero-weight rows each player added to keep pace) and,
from rank 0, ``OUT/{game}.npz`` (both players' final snapshots: under FSDP rank 0's is the full,
gathered state). The games: ``ddp`` (``grad_sync=comm.average_gradients``), ``fsdp``
(:func:`backends.hf_fsdp.shard`), ``first`` (sharded, 2 rounds, checkpointed to
``OUT/ckpt``) and ``resumed`` (fresh sharded players resuming it to 3 rounds). ``--lora`` trains
LoRA adapters with L-BFGS instead of every weight with AdamW. The players are float64 (why:
tests/test_distributed.py). Used by tests/test_fsdp.py.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import time

import numpy as np
import torch

from backends.distributed import init, shutdown
from backends.hf import GenerationSettings, HFPolicy
from backends.hf_fsdp import shard
from backends.rewards import CallableReward
from backends.tiny import tiny_llama, word_tokenizer
from gpo_core.alignment import GameConfig, run_game

NAMES = ("defender", "adversary")
# (game, players, LoRA, rounds, checkpoint folder)
GAMES = [("ddp", "ddp", False, 2, None), ("fsdp", "fsdp", False, 2, None),
         ("first", "fsdp", False, 1, "ckpt"), ("resumed", "fsdp", False, 2, "ckpt"),
         ("lora_ddp", "ddp", True, 2, None), ("lora_fsdp", "fsdp", True, 2, None)]
# A small vocabulary: outputs often end early and often repeat, so the ranks' numbers of
# sampling forwards and of distinct rows differ (what shard() must keep in step).
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "here", "there"]
SEEDS = ["the cat sat", "a dog ran", "the dog sat here", "a cat ran there", "the cat ran",
         "a dog sat", "the dog ran there", "a cat sat here"]


def players(comm, mode: str, lora: bool) -> list:
    tok = word_tokenizer(WORDS)
    out = []
    for i, name in enumerate(NAMES):
        kwargs = {"optimizer": "adam", "lr": 1e-4}
        if lora:
            from peft import LoraConfig

            torch.manual_seed(100 + i)  # peft draws the adapters from the global generator
            kwargs = {"peft_config": LoraConfig(r=4, lora_alpha=8,
                                                target_modules=["q_proj", "v_proj"])}
        sync = comm.average_gradients if mode == "ddp" else None
        policy = HFPolicy(tiny_llama(tok, seed=i).double(), tok, objective="pg",
                          generation=GenerationSettings(max_new_tokens=4),
                          generation_batch_size=4, micro_batch_size=8, max_fit_steps=6,
                          fit_tol=0.05, device="cpu", name=name, grad_sync=sync,
                          value_sync=comm.mean, **kwargs)
        if mode == "ddp":
            comm.broadcast_parameters(policy.model)
        out.append(shard(policy, comm) if mode == "fsdp" else policy)
    return out


def play(comm, out: str, game: str, mode: str, lora: bool, rounds: int, ckpt=None) -> None:
    pair = players(comm, mode, lora)
    reward = CallableReward(lambda prompts, responses: [r.count("the") / 4 for r in responses])
    config = GameConfig(rounds=rounds, batch_size=8, responses_per_prompt=4,
                        prompts_per_context=2, defender_eta=10.0, adversary_eta=10.0, seed=0)
    played: list[int] = []
    result = run_game(pair[0], pair[1], reward, config, seed_prompts=SEEDS, comm=comm,
                      checkpoint_dir=ckpt, on_round=lambda log: played.append(log.round))
    snaps = [p.snapshot() for p in pair]
    with open(os.path.join(out, f"{game}.rank{comm.rank}.json"), "w") as fh:
        json.dump({"metrics": [dict(log.metrics) for log in result.logs],
                   "history": list(result.history), "played": played,
                   "empty_forwards": [getattr(p, "empty_forwards", 0) for p in pair],
                   "padded_rows": [getattr(p, "padded_rows", 0) for p in pair],
                   "shapes": {f"{n}.{k}": list(v.shape) for n, s in zip(NAMES, snaps)
                              for k, v in s.items()}}, fh)
    if comm.rank == 0:
        np.savez(os.path.join(out, f"{game}.npz"),
                 **{f"{n}.{k}": v.numpy() for n, s in zip(NAMES, snaps) for k, v in s.items()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a test script's choice; the library never sets it
    # ranks out of step wait on each other forever: print where, and fail, instead
    faulthandler.dump_traceback_later(int(os.environ.get("FSDP_WORKER_TIMEOUT", "240")),
                                      exit=True)
    comm = init("gloo")
    for game, mode, lora, rounds, where in GAMES:
        start = time.perf_counter()
        play(comm, args.out, game, mode, lora, rounds, where and os.path.join(args.out, where))
        if comm.rank == 0:
            print(f"{game}: {time.perf_counter() - start:.1f} s", flush=True)
    shutdown()


if __name__ == "__main__":
    main()
