"""A small real training program: a one-hidden-layer MLP in NumPy on the digits data.

Reads train.npz and test.npz from --data, prints loss and accuracy per epoch, and writes
the trained weights (model.npz) and its metrics (metrics.json) to $RESULT_DIR. Each epoch's
metrics also go where the service reads them besides the log: one JSON line appended to
$LOG_DIR/evaluation-metrics.txt, and the whole list so far in $RESULT_DIR/val_dict_list.json.
As a trial of an experiment, it reads its values from config.json in MODEL_DIR (its working
folder) when the command does not give them as flags.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        return data["images"].reshape(len(data["labels"]), -1), data["labels"]


def forward(params, x):
    hidden = np.maximum(0.0, x @ params["w1"] + params["b1"])
    logits = hidden @ params["w2"] + params["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def evaluate(params, x, y) -> tuple[float, float]:
    _, probs = forward(params, x)
    loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
    return float(loss), float((probs.argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("DATA_DIR", ".")))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait each epoch")
    # An experiment's trial: its values (learning_rate, hidden, ...) are the defaults.
    config = Path("config.json")
    if config.exists():
        values = json.loads(config.read_text())
        parser.set_defaults(**{k: v for k, v in values.items() if k in vars(parser.parse_args([]))})
    args = parser.parse_args()

    x_train, y_train = load(args.data / "train.npz")
    x_test, y_test = load(args.data / "test.npz")
    rng = np.random.default_rng(args.seed)
    inputs, classes = x_train.shape[1], 10
    params = {
        "w1": rng.normal(0, np.sqrt(2 / inputs), (inputs, args.hidden)),
        "b1": np.zeros(args.hidden),
        "w2": rng.normal(0, np.sqrt(1 / args.hidden), (args.hidden, classes)),
        "b2": np.zeros(classes),
    }
    print(
        f"training on {len(y_train)} images, testing on {len(y_test)}; "
        f"GPUs visible: {os.environ.get('CUDA_VISIBLE_DEVICES') or 'none'}"
    )
    result_dir = Path(os.environ.get("RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(os.environ.get("LOG_DIR", "."))
    history = []
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            x, y = x_train[idx], y_train[idx]
            hidden, probs = forward(params, x)
            grad = probs
            grad[np.arange(len(y)), y] -= 1.0
            grad /= len(y)
            grad_hidden = (grad @ params["w2"].T) * (hidden > 0)
            params["w2"] -= args.learning_rate * hidden.T @ grad
            params["b2"] -= args.learning_rate * grad.sum(axis=0)
            params["w1"] -= args.learning_rate * x.T @ grad_hidden
            params["b1"] -= args.learning_rate * grad_hidden.sum(axis=0)
        train_loss, train_acc = evaluate(params, x_train, y_train)
        test_loss, test_acc = evaluate(params, x_test, y_test)
        print(
            f"epoch {epoch:2d}  loss {train_loss:.4f}  accuracy {train_acc:.4f}  "
            f"test_loss {test_loss:.4f}  test_accuracy {test_acc:.4f}"
        )
        record = {"epoch": epoch, "loss": round(train_loss, 4), "accuracy": round(train_acc, 4)}
        record.update(test_loss=round(test_loss, 4), test_accuracy=round(test_acc, 4))
        with open(log_dir / "evaluation-metrics.txt", "a") as f:
            f.write(json.dumps(record) + "\n")
        history.append({"steps": epoch, "val_accuracy": record["test_accuracy"]})
        partial = result_dir / "val_dict_list.json.partial"
        partial.write_text(json.dumps(history))
        partial.replace(result_dir / "val_dict_list.json")
        time.sleep(args.pause)

    np.savez(result_dir / "model.npz", **params)
    metrics = {"test_loss": test_loss, "test_accuracy": test_acc, "epochs": args.epochs}
    (result_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved model.npz and metrics.json to {result_dir}")


if __name__ == "__main__":
    main()
