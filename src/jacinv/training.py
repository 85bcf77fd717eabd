"""The training loop behind train.py: one function a reader takes in at one sitting.

Checkpointing, metrics files and figures live in their own modules; this file only
orders the work of an epoch: train on minibatches, evaluate, save, plot.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import (CHECKPOINT, RunDirTaken, atomic_torch_save, check_new_run_dir, load_checkpoint, load_weights,
                         previous, write_csv, write_json)
from .config import ConfigError, check_matches_checkpoint, dump_config, with_absolute_paths
from .schema import check_config
from .console import epoch_line, startup_block
from .cpu_memory import keep_freed_memory
from .errors import UserError
from .evaluation import evaluate_split, probe_jacobian_norms
from .experiment import build_experiment, build_run_regularizer
from .plots import plot_training
from .regularizers import AUTO, J_NORM, l2_distance


class NonFiniteLoss(UserError, RuntimeError):
    """The loss became NaN or inf; the run directory keeps the last good checkpoint."""


class DivergedLoss(UserError, RuntimeError):
    """The loss grew past ``train.max_loss_ratio`` times its first value; the last good checkpoint is kept."""


def fidelity(pred: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean over the batch of ||f(y) - x||_2 ("l2", the seed's loss) or of the squared error ("mse")."""
    if kind == "l2":
        return l2_distance(pred, x).mean()
    if kind == "mse":
        return (pred - x).pow(2).mean()
    raise ConfigError(f"config key 'train.loss' must be 'l2' or 'mse', got {kind!r}")


def make_scheduler(optimizer, name: str, epochs: int):
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    raise ConfigError(f"config key 'train.scheduler' must be none, cosine or step, got {name!r}")


def _loader(dataset, batch_size: int, seed: int, epoch: int, num_workers: int) -> DataLoader:
    """Shuffled batches; the order depends only on (seed, epoch), so a resumed run sees the same ones."""
    rank, size = distributed.world()
    if size > 1:
        sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen, num_workers=num_workers)


def train(config: dict, run_dir, resume: bool = False, progress: bool | None = None,
          stop_after: int | None = None, overwrite: bool = False) -> list[dict]:
    """Train as ``config`` says, writing into ``run_dir``; returns the per-epoch metrics.

    With ``resume`` the run continues from ``run_dir/checkpoint_last.pt`` and reproduces the
    numbers of an uninterrupted run.  ``stop_after`` ends this session after that many epochs
    (for time-limited or preemptible jobs; resume later).  A new run refuses a ``run_dir`` that
    already holds one, unless ``overwrite``.
    """
    run_dir = Path(run_dir)
    check_config(config)
    tc = config["train"]
    device = distributed.setup(tc["device"])
    rank, world_size = distributed.world()
    if not resume:
        problem = distributed.from_rank0(lambda: _run_dir_problem(run_dir, overwrite))
        if problem is not None:
            raise RunDirTaken(problem)
    if tc["threads"]:
        torch.set_num_threads(tc["threads"])
    allocator = keep_freed_memory() if tc["keep_freed_memory"] and device.type == "cpu" else None
    progress = sys.stderr.isatty() if progress is None else progress
    exp = build_experiment(config)
    model = exp.model.to(device)
    operator = exp.operator.to(device)
    reg = build_run_regularizer(config, operator).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc["lr"])
    scheduler = make_scheduler(optimizer, tc["scheduler"], tc["epochs"])
    history: list[dict] = []
    start = 0
    first_loss = None
    ckpt_path = run_dir / CHECKPOINT
    reg_path = run_dir / f"regularizer_rank{rank}.pt"
    saved_config = with_absolute_paths(config)
    if resume:
        state, source = load_checkpoint(ckpt_path, fallback=True)
        check_matches_checkpoint(state.get("config"), saved_config, source)
        if tc["epochs"] < state["epoch"] + 1:
            raise ConfigError(f"config key 'train.epochs' is {tc['epochs']}, but the run in {run_dir} has already "
                              f"trained {state['epoch'] + 1} epochs; give train.epochs > {state['epoch'] + 1} to "
                              "train further")
        load_weights(model, state["model"], source)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        reg.load_state_dict(load_checkpoint(reg_path if source == ckpt_path else previous(reg_path))[0])
        history, start, first_loss = state["history"], state["epoch"] + 1, state.get("first_loss")
    elif rank == 0:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"run directory {run_dir} cannot be made ({err.strerror}); expected a writable "
                              "place: check out_dir / --run-dir") from None
        dump_config(saved_config, run_dir / "config.yaml")
    distributed.broadcast_parameters(model)
    if rank == 0:
        what = ("finished: all its epochs are trained (raise train.epochs to continue)" if start == tc["epochs"]
                else f"from epoch {start + 1} of {tc['epochs']}")
        print(f"{'resuming' if resume else 'training'} {config['name']} {what}\n"
              f"{startup_block(config, exp, reg, device, run_dir, allocator)}", flush=True)

    train_data = exp.training_data()
    probe_y = exp.test_set.measure(torch.arange(min(tc["probe_size"], len(exp.test_set)))).to(device)
    end = tc["epochs"] if stop_after is None else min(tc["epochs"], start + stop_after)
    epochs = tqdm(range(start, end), desc=config["name"], disable=not progress or rank != 0,
                  initial=start, total=tc["epochs"])
    for epoch in epochs:
        model.train()
        reg.train()
        exp.train_set.set_epoch(epoch)
        train_data.set_epoch(epoch)
        t0 = time.perf_counter()
        loader = _loader(train_data, tc["batch_size"], config["seed"], epoch, tc["num_workers"])
        running = 0.0
        for step, (y, x, index) in enumerate(tqdm(loader, leave=False, disable=not progress or rank != 0)):
            y, x = y.to(device), x.to(device)
            optimizer.zero_grad(set_to_none=True)
            # fidelity and penalty are backpropagated one after the other, so the peak memory is that
            # of the larger graph, not of both; their gradients add up as those of loss + penalty
            loss = fidelity(model(y), x, tc["loss"])
            loss.backward()
            penalty = reg(model, y, x, index=index, loss=loss.detach())
            value, penalty_value = torch.stack((loss.detach(), penalty.detach().to(loss))).tolist()  # one wait
            if not math.isfinite(value + penalty_value):
                raise NonFiniteLoss(f"non-finite loss ({value}, penalty {penalty_value}) at epoch {epoch + 1} "
                                    f"step {step}; the last good checkpoint is {ckpt_path}")
            first_loss = value if first_loss is None else first_loss
            if tc["max_loss_ratio"] is not None and value > tc["max_loss_ratio"] * first_loss:
                raise DivergedLoss(f"training diverged: loss {value:.4g} at epoch {epoch + 1} step {step} is "
                                   f"over {tc['max_loss_ratio']:g} x its first value {first_loss:.4g} "
                                   f"(train.max_loss_ratio); lower train.lr (now {tc['lr']:g}); the last good "
                                   f"checkpoint is {ckpt_path}")
            if penalty.requires_grad:
                penalty.backward()
            distributed.average_gradients(model)
            optimizer.step()
            running += value
            if epoch == 0 and step == 0 and rank == 0 and AUTO in reg.weights.values():
                print("  automatic weights at the first step: " + ", ".join(
                    f"{k} {v:.3g}" for k, v in reg.last_stats.items() if k.startswith("lambda_")), flush=True)
        if scheduler is not None:
            scheduler.step()
        row = {"epoch": epoch, "train_loss_running": running / max(1, step + 1)}
        for k, v in reg.last_stats.items():
            if k.startswith(("penalty_", "lambda_", "multiplier_")):
                row[k] = float(v)
        if rank == 0 and ((epoch + 1) % tc["eval_every"] == 0 or epoch + 1 == tc["epochs"]):
            model.eval()
            train_m = evaluate_split(model, exp.train_set, device)
            test_m = evaluate_split(model, exp.test_set, device)
            row.update({"train_loss": train_m["l2"], "test_loss": test_m["l2"],
                        "ge": abs(test_m["l2"] - train_m["l2"]), "test_psnr": test_m["psnr"],
                        "test_ssim": test_m["ssim"], "train_psnr": train_m["psnr"]})
            if exp.val_set is not None:
                val_m = evaluate_split(model, exp.val_set, device)
                row.update({"val_loss": val_m["l2"], "val_psnr": val_m["psnr"], "val_ssim": val_m["ssim"]})
            row.update(probe_jacobian_norms(model, probe_y, operator, tc["probe_iters"], config["seed"],
                                            config["regularizer"]["j_domain"]))
            epochs.set_postfix(test_psnr=f"{row['test_psnr']:.2f}", ge=f"{row['ge']:.4f}")
        row["seconds"] = time.perf_counter() - t0   # training and evaluation
        if rank == 0 and "test_psnr" in row and not progress:
            print(epoch_line(row, tc["epochs"]), flush=True)
        history.append(row)
        if (epoch + 1) % tc["checkpoint_every"] != 0 and epoch + 1 != end:
            continue
        atomic_torch_save(reg.state_dict(), reg_path)
        if rank == 0:
            atomic_torch_save({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict() if scheduler is not None else None,
                               "history": history, "config": saved_config, "first_loss": first_loss}, ckpt_path)
            write_csv(history, run_dir / "metrics.csv")
            write_json(history, run_dir / "metrics.json")
        if world_size > 1:
            dist.barrier()
    if rank == 0 and end == tc["epochs"]:
        plot_training(history, model, exp, run_dir, device)
    distributed.teardown()
    return history


def _run_dir_problem(run_dir: Path, overwrite: bool) -> str | None:
    try:
        check_new_run_dir(run_dir, overwrite)
    except RunDirTaken as err:
        return str(err)
    return None


def summary_table(history: list[dict], regularizer: dict | None = None) -> str:
    """A short text table of the last evaluated epoch (its number first); with the ``regularizer`` config, a
    line per stability target (regularizer.target_ja / target_j) saying whether the probe set meets it."""
    last = next((r for r in reversed(history) if "test_psnr" in r), None)
    if last is None:
        return "no evaluated epoch"
    j_norm = J_NORM[(regularizer or {}).get("j_domain", "all")]
    rows = [("test PSNR (dB)", last["test_psnr"]), ("test SSIM", last["test_ssim"]),
            ("train loss ||f(y)-x||", last["train_loss"]), ("test loss ||f(y)-x||", last["test_loss"]),
            ("generalisation gap |test - train|", last["ge"]),
            ("max ||J A|| on probe set", last["probe_max_sja"]), (f"max {j_norm} on probe set", last["probe_max_sj"])]
    width = max(len(k) for k, _ in rows)
    lines = [f"{'epoch reported':<{width}}  {last['epoch'] + 1}",
             *(f"{k:<{width}}  {v:.4f}" if math.isfinite(v) else f"{k:<{width}}  n/a" for k, v in rows)]
    for term, norm in (("ja", "||J A||"), ("j", j_norm)):
        bound = (regularizer or {}).get(f"target_{term}")
        if bound is not None:
            measured = last[f"probe_max_s{term}"]
            lines.append(f"{'target max ' + norm:<{width}}  {bound:.4f} ({'met' if measured <= bound else 'NOT met'} "
                         f"on the probe set: {measured:.4f})")
    return "\n".join(lines)
