"""A stand-in for a training script: reads its parameters, 'trains', writes metrics."""
import argparse
import math
import time

import slurmexp

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--model", required=True)
p.add_argument("--seed", type=int, required=True)
args = p.parse_args()

for step in range(1, 4):
    time.sleep(0.5)
    loss = abs(math.log10(args.lr) + 2) + 0.1 * args.seed + (0.2 if args.model == "vit" else 0.0) + 1.0 / step
    slurmexp.log_metrics(step=step, loss=loss)
slurmexp.log_metrics(accuracy=round(1.0 / (1.0 + loss), 4))
print(f"done: lr={args.lr} model={args.model} seed={args.seed} loss={loss:.3f}")
