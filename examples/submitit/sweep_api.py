"""The declarative form: a 12-run grid of a Python function, results as a DataFrame.

`python sweep_api.py` launches (or, run again, reattaches to) the sweep and waits; from any
other process: `slurmexp.experiment("<id>").results()`.
"""
import slurmexp


def train(lr, seed):
    loss = (lr - 0.01) ** 2 + 0.001 * seed      # stands in for a training run
    return {"loss": loss}                        # a mapping of numbers: the run's metrics


if __name__ == "__main__":
    exp = slurmexp.sweep(train, params={"lr": [0.1, 0.03, 0.01], "seed": [0, 1, 2, 3]},
                         resources={"time": "00:05:00"}, retry={"max_attempts": 3})
    print(exp.id)
    exp.wait()
    print(exp.results()[["run_id", "state", "param.lr", "param.seed", "metric.loss"]])
