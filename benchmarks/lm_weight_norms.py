"""Weight norms of the tiny LM after training at lr_grid and at 10 x lr_grid (constant LR).

Explains docs/lm_task.md's "a model trained at a too-large LR needs a larger LR afterwards":
AdamW moves every weight by about the LR per step whatever its size, so weights that a large LR
grew several times larger take proportionally smaller *relative* steps at any later LR, until
weight decay shrinks them again (about 1 / (lr x wd) steps). Prints, per weight matrix, the
Frobenius norm after ``--steps`` steps at each LR and their ratio (same seed and data order).

    python benchmarks/lm_weight_norms.py                  # 600 steps, lr_grid 3.16e-3
"""

from __future__ import annotations

import argparse
import os


def _norms(lr: float, steps: int, seed: int) -> dict[str, float]:
    import torch

    from train_loops.lm import LMConfig, LMTrainer

    trainer = LMTrainer(
        LMConfig(
            preset="tiny",
            lr=lr,
            steps=steps,
            schedule="constant",
            seed=seed,
            num_threads=1,
            eval_batches=2,
            save_final=False,
            log_every=10**9,
        )
    )
    trainer.setup()
    try:
        trainer.train()
        with torch.no_grad():
            return {
                name: float(p.norm()) for name, p in trainer.model.named_parameters() if p.ndim == 2
            }
    finally:
        trainer.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr-grid", type=float, default=3.16e-3)
    p.add_argument("--factor", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    high_lr = args.lr_grid * args.factor
    high = _norms(high_lr, args.steps, args.seed)
    base = _norms(args.lr_grid, args.steps, args.seed)
    print(f"tiny Qwen2, constant LR, {args.steps} steps, seed {args.seed}")
    print(f"| weight | norm at {high_lr:.3g} | norm at {args.lr_grid:.3g} | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for name in high:
        ratio = high[name] / base[name]
        ratios.append(ratio)
        print(f"| {name} | {high[name]:.2f} | {base[name]:.2f} | {ratio:.2f} |")
    print(f"\nratio range: {min(ratios):.2f} .. {max(ratios):.2f}")


if __name__ == "__main__":
    main()
