"""A small PyTorch training program: an MLP on the spiral data (make_data.py), on the CPU.

Reads meta.json, train.bin and test.bin from --data ($DATA_DIR), prints one line per epoch
(training loss, accuracy, test loss and accuracy), and writes the trained state dict
(model.pt) and its metrics (metrics.json) to $RESULT_DIR.
"""

import argparse
import json
import os
import time
import warnings
from pathlib import Path

# torch says so on import when NumPy is missing; this program uses none of NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
from torch import nn  # noqa: E402


def load(path: Path, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.float32)
    rows = rows.view(-1, features + 1)
    return rows[:, :features].clone(), rows[:, features].long()


def mlp(features: int, hidden: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, classes),
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    return loss.item(), (logits.argmax(dim=1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("DATA_DIR", ".")))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # A small model: a couple of threads is all it uses well (and all a small slot has).
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    meta = json.loads((args.data / "meta.json").read_text())
    x_train, y_train = load(args.data / "train.bin", meta["features"])
    x_test, y_test = load(args.data / "test.bin", meta["features"])
    model = mlp(meta["features"], args.hidden, meta["classes"])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; training on "
        f"{len(y_train)} points, testing on {len(y_test)}; "
        f"GPUs visible: {os.environ.get('CUDA_VISIBLE_DEVICES') or 'none'}",
        flush=True,
    )
    began = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        train_loss, train_acc = evaluate(model, x_train, y_train)
        test_loss, test_acc = evaluate(model, x_test, y_test)
        print(
            f"epoch {epoch}/{args.epochs} loss {train_loss:.4f} accuracy {train_acc:.4f} "
            f"test_loss {test_loss:.4f} test_accuracy {test_acc:.4f}",
            flush=True,
        )

    result_dir = Path(os.environ.get("RESULT_DIR", "."))
    result_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), result_dir / "model.pt")
    metrics = {
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "epochs": args.epochs,
        "seconds": round(time.monotonic() - began, 2),
    }
    (result_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved model.pt and metrics.json to {result_dir}")


if __name__ == "__main__":
    main()
