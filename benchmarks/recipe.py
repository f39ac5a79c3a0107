"""Time to 98.0 % test accuracy with the default recipe (configs/default.toml).

barenet runs the recipe exactly as `barenet train` builds it (barenet.app.runs.Prepared):
54,000 training images, 6,000 for validation evaluated every epoch, dropout 0.2, SGD with
Nesterov momentum, lr 0.1 with a per-batch cosine decay over 20 epochs. PyTorch runs the
same recipe on the same split from the same initial weights. After each epoch the test
accuracy is measured outside the clock; the figure is the training time (validation
included, as `barenet train` reports it) up to the first epoch at 98.0 % or more.
"""

from __future__ import annotations

from .common import Result, alternate
from .mlp import BarenetTrainer, TorchTrainer, torch_twin

TARGET_ACCURACY = 0.98


def recipe_case(torch, *, max_epochs: int | None = None, data_dir=None) -> Result:
    from barenet.app.runs import Prepared
    from barenet.config import Config
    from barenet.training import evaluate

    config = Config()
    run = Prepared(config, data_dir, progress=False)
    epochs = max_epochs or config.training.epochs
    base_lr = config.optimizer.lr
    # run.state carries the run's seeded shuffle generator: the run `barenet train` makes.
    sides = {"barenet": BarenetTrainer(run.model, run.optimizer, run.x_train, run.y_train,
                                       schedule=run.schedule, validation=run.validation,
                                       state=run.state)}
    accuracy = {"barenet": lambda: evaluate(run.model, run.x_test, run.y_test)["accuracy"]}
    if torch is not None:
        o = config.optimizer
        net = torch_twin(run.model, torch)
        opt = torch.optim.SGD(net.parameters(), lr=base_lr, momentum=o.momentum,
                              nesterov=o.nesterov)
        trainer = TorchTrainer(net, opt, run.x_train, run.y_train, torch,
                               lr_at=lambda t: base_lr * run.schedule.factor(t),
                               validation=run.validation)
        sides["torch"] = trainer
        xt = torch.from_numpy(run.x_test.reshape(len(run.x_test), -1).copy())
        yt = torch.from_numpy(run.y_test.astype("int64"))
        accuracy["torch"] = lambda: trainer.evaluate(xt, yt)

    elapsed = {k: 0.0 for k in sides}
    reached: dict[str, int | None] = {k: None for k in sides}
    best = {k: 0.0 for k in sides}
    for epoch in range(1, epochs + 1):
        pending = [k for k in sides if reached[k] is None]
        if not pending:
            break
        # One epoch of each side still training, alternating; test accuracy off the clock.
        times = alternate({k: sides[k].epoch for k in pending}, repeats=1, warmup=0)
        for k in pending:
            elapsed[k] += times[k][0]
            acc = accuracy[k]()
            best[k] = max(best[k], acc)
            if acc >= TARGET_ACCURACY:
                reached[k] = epoch

    def figure(k):
        return round(elapsed[k], 3) if reached[k] is not None else None

    notes = []
    for k in sides:
        if reached[k] is None:
            notes.append(f"{k}: not reached in {epochs} epochs (best {best[k]:.2%})")
        else:
            notes.append(f"{k}: epoch {reached[k]}")
    result = Result(
        case="recipe", what="Default recipe: training time to 98.0 % test accuracy",
        unit="s", barenet=figure("barenet"), torch=figure("torch") if torch else None,
        target="barenet <= 20 s", note="; ".join(notes),
        samples={k: [elapsed[k], float(reached[k] or 0), best[k]] for k in sides})
    result.ok = None if result.barenet is None else result.barenet <= 20.0
    if result.barenet is None:
        result.ok = False
    return result
