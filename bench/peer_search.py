"""The peer: a hyperparameter search as users write it today, for bench_search_peer.py.

Optuna's TPE sampler and median pruner, optuna-integration's MLflowCallback (one MLflow run
per trial: params and the final value), a plain PyTorch loop (DataLoader, `.item()` each
step, validation AUC with scikit-learn each epoch, `trial.report` / `should_prune`). The
network is the project's `SiameseNet` (a plain nn.Module), so both sides train the same
model on the same pairs (an .npz written by the benchmark); nothing else is shared.

    python bench/peer_search.py --pairs PAIRS.npz --tracking-uri sqlite:///x.db --trials 8
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna
import torch
from optuna_integration.mlflow import MLflowCallback
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from siamese.model import SiameseNet


def loaders(path: str, batch_size: int) -> tuple[DataLoader, DataLoader]:  # type: ignore[type-arg]
    raw = np.load(path)

    def pairs(split: str, shuffle: bool) -> DataLoader:  # type: ignore[type-arg]
        images = torch.as_tensor(raw[f"{split}_images"]).float()
        left, right = torch.as_tensor(raw[f"{split}_left"]), torch.as_tensor(raw[f"{split}_right"])
        labels = torch.as_tensor(raw[f"{split}_labels"]).float()
        dataset = TensorDataset(images[left], images[right], labels)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle)

    return pairs("train", True), pairs("val", False)


def make_objective(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    train, val = loaders(args.pairs, 32)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-6, 1e-1, log=True)
        name = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
        head = trial.suggest_categorical("head", ["relu2", "abs", "sq", "contrastive"])
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        torch.manual_seed(args.seed)
        model = SiameseNet(head, dropout)
        pixels = train.dataset.tensors[0]  # type: ignore[attr-defined]
        model.set_normalization(float(pixels.mean()), float(pixels.std()))
        if name in ("sgd", "rmsprop"):
            momentum = trial.suggest_float("momentum", 0.0, 0.99)
            optimizer_class = torch.optim.SGD if name == "sgd" else torch.optim.RMSprop
            optimizer = optimizer_class(model.parameters(), lr=lr, momentum=momentum)
        else:
            optimizer_class = torch.optim.Adam if name == "adam" else torch.optim.AdamW
            optimizer = optimizer_class(model.parameters(), lr=lr)
        auc = 0.5
        for epoch in range(args.epochs):
            model.train()
            for left, right, same in train:
                optimizer.zero_grad()
                loss = model.loss(model(left, right), same)
                loss.backward()
                optimizer.step()
                if not np.isfinite(loss.item()):
                    raise optuna.TrialPruned("loss is NaN")
            auc = validate(model, val)
            trial.report(auc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return auc

    return objective


def validate(model: SiameseNet, val: DataLoader) -> float:  # type: ignore[type-arg]
    model.eval()
    scores, labels = [], []
    with torch.no_grad():
        for left, right, same in val:
            scores.append(model.prob_same(model(left, right)))
            labels.append(same)
    score = torch.cat(scores).numpy()
    return (
        float(roc_auc_score(torch.cat(labels).numpy(), score)) if np.isfinite(score).all() else 0.5
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callback = MLflowCallback(tracking_uri=args.tracking_uri, metric_name="val_auc")
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(),
    )
    study.optimize(make_objective(args), n_trials=args.trials, callbacks=[callback])
    print(f"peer best val_auc {study.best_value:.4f}")


if __name__ == "__main__":
    main()
