"""GAN benchmarks: step throughput of hw3's engine against the DCGAN tutorial's plain loop, and
sample quality of the default `gan` and `acgan` runs next to an untrained generator and real data.

Part 1, in this one process: images/second of `runner.engine.fit()` driving the built-in
`gan` method's step, against the tutorial's loop written out in plain PyTorch (D on a real batch,
then on a fake batch, one Adam step; G on the same fakes, one Adam step; `.item()` of the
losses and of D(x), D(G(z)) every step, as the tutorial prints them). Same networks, same
initial weights, same Adam settings, same batch size, same uint8 tensors in memory scaled per
batch, same number of steps. The sides alternate after a warm-up and the medians are reported.
Per-epoch evaluation and image logging are left out of the engine side (the loop has none).

Part 2: the default `hw3 run gan` and `hw3 run acgan` on embedded mnist (in a temporary working
folder, tracked in a temporary MLflow store), then the same quality metrics for an untrained
generator (the method's setup, no steps) and for real held-out images (the test split) against
the same training-image reference.

    .venv/bin/python bench/gan.py               # about 8 minutes on 2 otherwise idle CPU cores
    .venv/bin/python bench/gan.py --skip-runs   # part 1 only
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import tempfile
import time
from typing import Any

import torch
from rich.console import Console

from plugins.methods.gan import Gan
from runner.context import RunContext
from runner.engine import fit, steps_per_epoch
from runner.runs.plan import RunRequest, make_plan
from runner.runs.plugins import get_manager
from runner.runs.prepare import load_domains
from runner.runs.prepare import make_context as new_context
from runner.seeding import seed_everything
from runner.sinks import NullSink


class TrainOnlyGan(Gan):
    """The built-in step untouched; no quality evaluator, per-epoch evaluation, image grid,
    figures or model (timed apart)."""

    def _quality_setup(self, ctx: Any) -> None:
        pass

    def evaluate(self, ctx: Any) -> dict[str, float]:
        return {}

    def images(self, ctx: Any) -> dict[str, Any]:
        return {}

    def summarize(self, ctx: Any) -> dict[str, float]:
        return {}

    def figures(self, ctx: Any) -> dict[str, Any]:
        return {}

    def inference_model(self) -> None:
        return None


def make_context(epochs: int) -> RunContext:
    manager = get_manager()
    req = RunRequest("gan", overrides=[("epochs", epochs), ("checkpoint_dir", tempfile.mkdtemp())])
    resolved = make_plan(req, manager).resolved
    device = torch.device("cpu")
    domains = load_domains(resolved, manager, None, device)
    return new_context(resolved, domains, device, run_id="bench-gan")


def fresh(ctx: RunContext) -> TrainOnlyGan:
    seed_everything(ctx.settings.seed)
    method = TrainOnlyGan(ctx.resolved.method_config)
    ctx.epoch = ctx.step = 0
    ctx.steps_per_epoch = steps_per_epoch(method, ctx)
    method.setup(ctx)
    return method


def time_engine(ctx: RunContext) -> float:
    """Seconds the engine spent training (its own clock of the epochs' steps, as the bare loop's)."""
    method = TrainOnlyGan(ctx.resolved.method_config)
    ctx.epoch = ctx.step = 0
    ctx.history.clear()
    gc.collect()
    return fit(method, ctx, NullSink(), console=Console(file=io.StringIO())).seconds["train"]


def time_tutorial(ctx: RunContext) -> float:
    """The DCGAN tutorial's training loop, on the same networks and data."""
    method = fresh(ctx)  # only builds G, D and the two Adams
    G, D, opt_g, opt_d = method.G, method.D, method.opt_g, method.opt_d
    criterion = torch.nn.BCEWithLogitsLoss()
    data = ctx.domains["data"].train
    bs, nz = ctx.settings.batch_size, method.config.nz
    gen = torch.Generator().manual_seed(1)
    steps = ctx.settings.epochs * ctx.steps_per_epoch
    perm, pos = None, 0
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(steps):
        if perm is None or pos + bs > len(data):
            perm, pos = torch.randperm(len(data), generator=gen), 0
        real = data.images[perm[pos : pos + bs]].float().div_(127.5).sub_(1.0)
        pos += bs
        # (1) D: maximize log(D(x)) + log(1 - D(G(z)))
        D.zero_grad()
        label = torch.full((bs,), 1.0)
        output = D(real)[0]
        err_d_real = criterion(output, label)
        err_d_real.backward()
        d_x = torch.sigmoid(output).mean().item()
        fake = G(torch.randn(bs, nz))
        label.fill_(0.0)
        output = D(fake.detach())[0]
        err_d_fake = criterion(output, label)
        err_d_fake.backward()
        d_g_z1 = torch.sigmoid(output).mean().item()
        err_d = err_d_real + err_d_fake
        opt_d.step()
        # (2) G: maximize log(D(G(z)))
        G.zero_grad()
        label.fill_(1.0)
        output = D(fake)[0]
        err_g = criterion(output, label)
        err_g.backward()
        opt_g.step()
        _ = (err_d.item(), err_g.item(), d_x, d_g_z1)
    return time.perf_counter() - t0


def throughput(epochs: int, repeats: int) -> None:
    ctx = make_context(epochs)
    ctx.steps_per_epoch = steps_per_epoch(TrainOnlyGan(ctx.resolved.method_config), ctx)
    images = ctx.settings.batch_size * ctx.steps_per_epoch * epochs
    time_engine(ctx), time_tutorial(ctx)  # warm-up
    eng, tut = [], []
    for r in range(repeats):
        order = (time_tutorial, time_engine) if r % 2 == 0 else (time_engine, time_tutorial)
        for fn in order:
            (eng if fn is time_engine else tut).append(images / fn(ctx))
    ratios = [e / t for e, t in zip(eng, tut, strict=True)]
    print(f"part 1: {images} images per timing, {repeats} alternating repeats, {torch.get_num_threads()} threads")
    print(f"  engine   {statistics.median(eng):8.0f} img/s (median; best {max(eng):.0f})")
    print(f"  tutorial {statistics.median(tut):8.0f} img/s (median; best {max(tut):.0f})")
    print(
        f"  ratio engine/tutorial {statistics.median(ratios):.3f} (median of per-repeat ratios; best/best "
        f"{max(eng) / max(tut):.3f})"
    )


def quality(n_real_held_out: int = 1000) -> None:
    from runner.batches import to_network_range
    from runner.generate import features, frechet_distance, kernel_distance
    from runner.runs.execute import execute

    work = tempfile.mkdtemp(prefix="hw3-bench-gan-")
    os.chdir(work)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
    rows = []
    for method in ("gan", "acgan"):
        t0 = time.perf_counter()
        result = execute(RunRequest(method), Console(file=io.StringIO()))
        wall = time.perf_counter() - t0
        m = result.metrics
        rows.append((f"{method}, default run", m["quality/fd"], m["quality/kid"], m.get("quality/label_acc"), wall))
        # The same metrics for the same method before any step.
        ctx = make_context(1)
        cls = get_manager().method(method)
        seed_everything(0)
        untrained = cls(result.resolved.method_config)
        untrained.setup(ctx)
        u = untrained.summarize(ctx)
        rows.append(
            (f"{method}, untrained generator", u["quality/fd"], u["quality/kid"], u.get("quality/label_acc"), 0)
        )
        if method == "gan":
            # Real held-out images against the same training reference.
            train, test = ctx.domains["data"].train, ctx.domains["data"].test
            net = untrained.evaluator
            real = features(net, to_network_range(train.subset(5000).images), ctx.device)
            held = features(net, to_network_range(test.subset(n_real_held_out).images), ctx.device)
            rows.append(
                (
                    "real held-out images",
                    frechet_distance(held, real),
                    kernel_distance(held, real),
                    m["quality/classifier_acc"],
                    0,
                )
            )
            classifier_acc = m["quality/classifier_acc"]
            print(
                f"  (feature classifier: {classifier_acc:.1%} test accuracy; metrics use "
                f"{m['quality/n_fake']:.0f} generated vs {m['quality/n_real']:.0f} training images)"
            )
    print("part 2: quality on embedded mnist, in the feature space of hw3's classifier")
    print(f"  {'':32s} {'Fréchet':>9s} {'KID':>9s} {'label acc':>10s} {'wall':>7s}")
    for name, fd, kid, acc, wall in rows:
        acc_s = f"{acc:.1%}" if acc is not None else "-"
        wall_s = f"{wall:.0f} s" if wall else "-"
        print(f"  {name:32s} {fd:9.2f} {kid:9.3f} {acc_s:>10s} {wall_s:>7s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per throughput timing")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--skip-runs", action="store_true", help="part 1 only")
    args = parser.parse_args()
    throughput(args.epochs, args.repeats)
    if not args.skip_runs:
        quality()


if __name__ == "__main__":
    main()
