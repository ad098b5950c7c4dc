"""Weak scaling of srjax's stage-2 step over processes on one machine's CPU: each process
trains on its own share of a batch that grows with the process count, as on a cluster
of hosts (``jax.distributed``, gloo collectives).

  python tools/bench_scaling.py                  # 1, 2 and 4 processes, one device each
  python tools/bench_scaling.py --processes 1,2 --batch 8 --size 64

Each process is pinned to its own core, as on separate hosts. For N processes it prints
the crops/s of the whole job, its ratio to N times one process's (the weak-scaling
efficiency; 1 is perfect), the step's milliseconds and those of its gradient all-reduce
timed alone (a sum over the devices of arrays shaped as the net's parameters, and of one
array as large as all of them), and the same N devices on N cores in one process (a data mesh
inside one process) for comparison. With more processes than cores they share cores,
and the efficiency says so more than it says anything about srjax.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np


def worker(args) -> None:
    # Each process gets its own cores, as on separate hosts: XLA's threads would otherwise
    # spread every process over the whole machine.
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // args.num_processes) if args.cores_each == 0 else args.cores_each
    os.sched_setaffinity(0, cores[args.process_id * share % len(cores):][:share])
    from srjax import parallel

    if args.num_processes > 1:
        parallel.initialize(f"localhost:{args.port}", args.num_processes, args.process_id)
    import jax

    from srjax import presets, train
    from srjax.config import apply_overrides
    from srjax.losses import loss_values
    from srjax.models import build_model
    from srjax.optim import OptimizerSpec, make_optimizer

    devices = jax.device_count()
    config = apply_overrides(presets.paper(), [f"data.crop={args.size}", f"model.width={args.width}"])
    model = build_model("unet_noskip", 4, args.width)
    params = train.init_params(model, config.data.slices, args.size, 0)
    mesh = train.make_mesh()
    optimizer = make_optimizer(config.stage2, 1000)
    state = train.placed(train.stage2_state(params, optimizer, {"loss": loss_values(config.loss)}),
                         train.replicated(mesh))
    kind = train.StepKind("stage2", model, OptimizerSpec.of(config.stage2, 1000), config.loss.name)
    step = train.compiled_step(kind, mesh)
    local = args.batch * jax.local_device_count()  # the batch per device is fixed: weak scaling
    rng = np.random.default_rng(jax.process_index())
    batch = {"image": rng.random((local, args.size, args.size, config.data.slices), np.float32),
             "label": rng.integers(0, 4, (local, args.size, args.size)).astype(np.int32)}
    placed = {k: jax.make_array_from_process_local_data(train.batch_sharded(mesh), v) for k, v in batch.items()}
    key = jax.random.key(0)
    for _ in range(args.warmup):
        state, metrics = step(state, placed, key)
    jax.block_until_ready(metrics)
    parallel.barrier("timed")
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, placed, key)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    leaves, flat = _allreduce_seconds(mesh, [leaf.shape for leaf in jax.tree.leaves(params)], args.steps)
    if jax.process_index() == 0:
        print(json.dumps({"devices": devices, "crops_per_s": args.steps * args.batch * devices / seconds,
                          "step_ms": 1e3 * seconds / args.steps, "allreduce_ms": 1e3 * leaves,
                          "flat_allreduce_ms": 1e3 * flat, "arrays": len(jax.tree.leaves(params))}))


def _allreduce_seconds(mesh, shapes, repeats: int) -> tuple[float, float]:
    """Seconds of one sum over the devices of arrays of ``shapes`` (the gradient's
    all-reduce, alone): as those separate arrays, and as one array of their total size;
    each the mean of ``repeats`` after one."""
    import jax

    from srjax import train

    def parts(shape):
        return jax.make_array_from_process_local_data(
            train.batch_sharded(mesh), np.ones((jax.local_device_count(), *shape), np.float32))

    def timed(arrays) -> float:
        total = jax.jit(lambda xs: [x.sum(0) for x in xs], out_shardings=train.replicated(mesh))
        jax.block_until_ready(total(arrays))
        start = time.perf_counter()
        for _ in range(repeats):
            out = total(arrays)
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / repeats

    return timed([parts(shape) for shape in shapes]), timed([parts((sum(int(np.prod(s)) for s in shapes),))])


def run(processes: int, devices_each: int, cores_each: int, args) -> float:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}", JAX_PLATFORMS="cpu")
    command = [sys.executable, __file__, "--worker", "--num-processes", str(processes), "--port", str(port),
               "--cores-each", str(cores_each),
               "--batch", str(args.batch), "--size", str(args.size), "--width", args.width,
               "--steps", str(args.steps), "--warmup", str(args.warmup)]
    procs = [subprocess.Popen(command + ["--process-id", str(p)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for p in range(processes)]
    outs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a worker of the {processes}-process run failed")
    return json.loads(outs[0].strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--batch", type=int, default=4, help="crops per device per step")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cores-each", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    counts = [int(n) for n in args.processes.split(",")]
    print(f"stage-2 step of unet_noskip ({args.width} widths), {args.batch} crops of {args.size}² per device; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'processes':>10}{'crops/s':>10}{'efficiency':>12}{'step ms':>10}{'all-reduce ms':>15}"
          f"{'as one array':>14}{'1 process, N devices':>24}{'all-reduce ms':>15}")
    one = run(1, 1, 1, args)
    for n in counts:
        several = one if n == 1 else run(n, 1, 1, args)
        same_devices = one if n == 1 else run(1, n, n, args)
        print(f"{n:>10}{several['crops_per_s']:>10.1f}{several['crops_per_s'] / (n * one['crops_per_s']):>12.2f}"
              f"{several['step_ms']:>10.1f}{several['allreduce_ms']:>15.2f}{several['flat_allreduce_ms']:>14.2f}"
              f"{same_devices['crops_per_s']:>18.1f} crops/s{same_devices['allreduce_ms']:>15.2f}")


if __name__ == "__main__":
    main()
