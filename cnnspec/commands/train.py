"""cnnspec train FILE --data SOURCE: fit the network its compile section describes."""

from __future__ import annotations

import functools
import os
import sys

from ._common import EXIT_OK, EXIT_SPEC, load, shown

NAME, HELP, ORDER = "train", "train a spec on a dataset (torch or keras)", 60
DESCRIPTION = (
    "Train the network with its compile section (loss, optimizer, schedule, "
    "early stopping, ...). Writes OUT/history.csv, OUT/result.json, "
    "OUT/curves.png and best/last checkpoints; --resume continues a run that was "
    "stopped, even by kill -9."
)
EXIT_INTERRUPTED = 130


def configure(p):
    p.add_argument("file", metavar="FILE")
    p.add_argument("--backend", choices=("torch", "keras"), default="torch")
    p.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help="digits, shapes, or a path (image folder, images/+masks/, COCO, VOC, .npz)",
    )
    p.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a data loader option, e.g. n=500 for shapes (repeatable)",
    )
    p.add_argument("--epochs", type=int, help="override the spec's epochs")
    p.add_argument("--batch-size", type=int, help="override the spec's batch_size")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    p.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default runs/<spec name>)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run (or result.json / history.csv) already in --out; "
        "without it, or --resume, such a folder is refused",
    )
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="torch: N data-parallel processes (torchrun, DDP; NCCL on GPUs, gloo on CPUs)",
    )
    p.add_argument(
        "--nnodes",
        type=int,
        default=1,
        metavar="N",
        help="torch: machines taking part (each runs this command with its own "
        "--node-rank; torchrun's static rendezvous)",
    )
    p.add_argument(
        "--node-rank",
        type=int,
        default=0,
        metavar="R",
        help="this machine's place among --nnodes, 0 to N-1 (0 hosts the rendezvous)",
    )
    p.add_argument(
        "--rdzv-endpoint",
        metavar="HOST:PORT",
        help="where the machines meet: node 0's address and a free port",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes decoding images per training process (default: none "
        "for data in memory, else up to 4)",
    )
    p.add_argument(
        "--cache",
        choices=("none", "ram"),
        default="none",
        help="none: decode images every epoch; ram: decode once and keep them (uint8) in memory",
    )
    add_device(p)
    p.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads for torch (default: torch's choice); 1 is often "
        "faster for small networks on a busy machine",
    )
    pair = p.add_mutually_exclusive_group()  # one of the two, or neither: never both
    pair.add_argument(
        "--decoder",
        metavar="FILE",
        help="train FILE as a VAE encoder (outputs mean, logvar) with this decoder",
    )
    pair.add_argument(
        "--discriminator",
        metavar="FILE",
        help="train FILE as a GAN generator against this discriminator (DCGAN)",
    )
    p.add_argument(
        "--max-batches",
        type=int,
        metavar="N",
        help="GAN: stop each epoch after N batches (CPU-sized runs)",
    )
    p.add_argument(
        "--no-judge",
        dest="judge",
        action="store_false",
        help="VAE/GAN: skip scoring samples with a classifier of the real images (train/judge.py)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="per-epoch progress bar on stderr (auto: when it is a terminal)",
    )


def add_device(p) -> None:
    """--device for train / evaluate / predict (the torch backend)."""
    from ..train.devices import CHOICES, parse

    p.add_argument(
        "--device",
        type=parse,
        default="auto",
        metavar="DEVICE",
        help=f"torch: {CHOICES} (auto: cuda when there is one, else cpu; "
        "cuda under --nproc: one GPU per process)",
    )


def check_device(args, command: str, world: int = 1) -> bool:
    """False (after saying why) when --device names what this machine does not have, or
    a device for the keras backend, which places itself."""
    if getattr(args, "backend", None) == "keras" or (
        args.backend is None and str(args.weights).endswith(".h5")
    ):
        if args.device not in ("auto", "cpu"):
            print(
                f"cnnspec {command}: error: --device is for the torch backend (Keras "
                "places its own work)",
                file=sys.stderr,
            )
            return False
        return True
    if args.device == "cpu":
        return True
    from ..train.devices import DeviceError, available

    try:
        available(args.device, world - 1 if world > 1 else None, world)
    except DeviceError as exc:
        print(f"cnnspec {command}: error: {shown(exc)}", file=sys.stderr)
        return False
    return True


def parse_options(items: list[str]) -> dict:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--data-option {item!r} is not KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def usage_error(args) -> str | None:
    """What is wrong with the command line before any spec is read, or None."""
    from ..outputs import same_file

    if args.epochs is not None and args.epochs < 1:
        return "--epochs must be at least 1"
    if args.resume and args.overwrite:
        return "--resume continues the run in --out, --overwrite replaces it: give one"
    if args.workers is not None and args.workers < 0:
        return f"--workers must be 0 or more; received {args.workers}"
    if args.nnodes < 1 or not 0 <= args.node_rank < args.nnodes:
        return (
            f"--node-rank must be between 0 and --nnodes - 1 ({args.nnodes - 1}); "
            f"received --nnodes {args.nnodes} --node-rank {args.node_rank}"
        )
    if args.nnodes > 1:
        from ..train.distributed import check_endpoint

        if args.rdzv_endpoint is None:
            return "--nnodes > 1 needs --rdzv-endpoint HOST:PORT (node 0's address)"
        problem = check_endpoint(args.rdzv_endpoint)
        if problem:
            return problem
    if args.threads is not None and not 1 <= args.threads <= max_threads():
        return (
            f"--threads must be between 1 and {max_threads()} (4 per CPU core here); "
            f"received {args.threads}"
        )
    other = args.decoder or args.discriminator
    if other and same_file(other, args.file):
        flag = "--decoder" if args.decoder else "--discriminator"
        return f"{flag} {shown(other)} is the spec being trained: give the {flag[2:]} its own spec"
    return None


def max_threads() -> int:
    # far more threads than cores only slows training; 100000 crashes the OpenMP runtime
    return 4 * (os.cpu_count() or 1)


def run(args) -> int:
    from ..data import DataError
    from ..errors import SpecErrors
    from ..train import run_folder
    from ._common import report

    problem = usage_error(args)
    if problem:
        print(f"cnnspec train: error: {problem}", file=sys.stderr)
        return 2
    model = load(args.file)
    if model is None:
        return EXIT_SPEC
    out = args.out or os.path.join("runs", run_folder.folder_name(model.name))
    worker = "LOCAL_RANK" in os.environ  # under torchrun: the launcher checked and locked
    if args.backend == "keras" and os.environ.get("TF_CONFIG"):
        from ..train.keras_cluster import cluster_from_env

        try:  # Keras on several machines: the chief checks and locks the run folder
            cluster = cluster_from_env()
        except ValueError as exc:
            print(f"cnnspec train: error: {shown(exc)}", file=sys.stderr)
            return 2
        worker = cluster is not None and cluster.rank > 0
    if (args.nproc > 1 or args.nnodes > 1) and not worker:
        if args.backend != "torch":
            print(
                "cnnspec train: error: --nproc and --nnodes need --backend torch (Keras "
                "trains on several machines from TF_CONFIG)",
                file=sys.stderr,
            )
            return 2
        if not check_device(args, "train", args.nproc):  # before starting N processes
            return 2
        from ..train.distributed import launch, worker_argv

        try:
            run_folder.check_place(out, args.data)
            return _locked(
                out,
                args,
                lambda: launch(
                    args.nproc,
                    worker_argv(args, out),
                    args.nnodes,
                    args.node_rank,
                    args.rdzv_endpoint,
                ),
            )
        except run_folder.RunFolderError as exc:
            print(f"cnnspec train: error: {shown(exc)}", file=sys.stderr)
            return EXIT_SPEC
    try:
        options = parse_options(args.data_option)
    except ValueError as exc:
        print(f"cnnspec train: error: {shown(exc)}", file=sys.stderr)
        return 2
    if not check_device(args, "train"):
        return 2
    if args.threads:
        if args.backend == "keras" and model.compile is not None:
            from ..data.augmentation import import_torchvision_first
            from ..train.driver import augment_ops

            import_torchvision_first(augment_ops(model.compile.augment))  # before TF
        set_threads(args.threads, args.backend)
    try:
        train = _train_pair if args.decoder or args.discriminator else _train
        work = functools.partial(train, model, args, options, out)
        if worker:
            return work()
        run_folder.check_place(out, args.data)
        return _locked(out, args, work)
    except run_folder.RunFolderError as exc:
        print(f"cnnspec train: error: {shown(exc)}", file=sys.stderr)
        return EXIT_SPEC
    except SpecErrors as errs:
        report(errs, args.file)
        return EXIT_SPEC
    except DataError as exc:
        print(f"cnnspec train: data error: {shown(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {shown(exc.hint)}", file=sys.stderr)
        return EXIT_SPEC
    except (OSError, ValueError) as exc:
        print(f"cnnspec train: error: {shown(exc)}", file=sys.stderr)
        return EXIT_SPEC


def _locked(out, args, work) -> int:
    """work() holding the run folder's lock; --overwrite clears the old run once it is held
    (never under another training's feet)."""
    from ..train import run_folder

    with run_folder.Lock(out):
        run_folder.check_contents(out, args.resume, args.overwrite)
        if args.overwrite:
            run_folder.clear(out)
        return work()


def _train_pair(model, args, options, out) -> int:
    """VAE (encoder + --decoder) or GAN (generator + --discriminator), torch only."""
    from ..data import load as load_data
    from ..train import generate
    from ._common import report

    other = load(args.decoder or args.discriminator)
    if other is None:
        return EXIT_SPEC
    if args.backend != "torch":
        print(
            "cnnspec train: error: --decoder/--discriminator train with --backend torch",
            file=sys.stderr,
        )
        return 2
    from ..errors import SpecErrors

    try:  # the pair must fit before data is read or a network built
        (generate.check_vae if args.decoder else generate.check_gan)(model, other)
    except SpecErrors as errs:  # each error shown with the lines of its own spec
        for path in dict.fromkeys(e.path for e in errs.errors):
            report(SpecErrors([e for e in errs.errors if e.path == path]), path)
        return EXIT_SPEC
    spec = model.compile
    seed = args.seed if args.seed is not None else (spec.seed if spec else 0)
    batch = args.batch_size or (spec.batch_size if spec else 64)
    if args.decoder:
        data = load_data(args.data, model.input_shape, "classify", seed, **options)
        result = generate.train_vae(
            model,
            other,
            data,
            out,
            args.epochs or 10,
            batch,
            spec.optimizer.lr if spec else 1e-3,
            seed,
            judge=args.judge,
            resume=args.resume,
        )
    else:
        data = load_data(args.data, other.input_shape, "classify", seed, **options)
        result = generate.train_gan(
            model,
            other,
            data,
            out,
            args.epochs or generate.GAN_EPOCHS,
            batch,
            seed,
            args.max_batches,
            judge=args.judge,
            resume=args.resume,
        )
    shown = "  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"{result['model']}: {shown}; samples in {out}/samples.png")
    return EXIT_OK


def set_threads(n: int, backend: str) -> None:
    """Limit the framework's CPU threads (before it builds anything)."""
    if backend == "torch":
        import torch

        torch.set_num_threads(n)
    else:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # TensorFlow was initialised already in this process
            pass


def guarded(work, path: str, command: str):
    """Run work(); spec, data and weight-file errors become messages and exit codes."""
    from ..data import DataError
    from ..errors import SpecErrors
    from ._common import report

    try:
        return EXIT_OK, work()
    except SpecErrors as errs:
        report(errs, path)
    except DataError as exc:
        print(f"cnnspec {command}: data error: {shown(exc.message)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {shown(exc.hint)}", file=sys.stderr)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"cnnspec {command}: error: {shown(exc)}", file=sys.stderr)
    return EXIT_SPEC, None


def _train(model, args, options, out) -> int:
    from ..train.driver import Comm, Interrupted
    from ..train.session import train

    comm, device = Comm(), None
    if args.backend == "torch":
        from ..train.devices import from_env

        device = from_env(args.device)  # under torchrun: cuda:LOCAL_RANK
    if "LOCAL_RANK" in os.environ:
        from ..train.torch_backend import TorchComm

        comm = TorchComm(device or "cpu")  # NCCL on CUDA, gloo otherwise
    elif args.backend == "keras":
        from ..train.keras_cluster import cluster_comm

        comm = cluster_comm()  # MultiWorkerMirroredStrategy's workers under TF_CONFIG
    log = print if comm.rank == 0 else (lambda *a, **k: None)
    progress = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        result = train(
            model,
            args.data,
            args.backend,
            out,
            args.epochs,
            args.resume,
            args.seed,
            args.batch_size,
            options,
            progress,
            log,
            comm,
            device,
            workers=args.workers,
            cache=args.cache,
        )
        comm.barrier()  # rank 0 writes the files; the others wait before tearing gloo down
    except Interrupted as stop:
        log(
            f"interrupted in epoch {stop.epoch + 1}; {getattr(stop, 'epochs_done', 0)} "
            f"epoch(s) saved in {out}; continue with --resume"
        )
        return EXIT_INTERRUPTED
    finally:
        if comm.world > 1 and hasattr(comm, "dist"):
            # DDP's reducer refers to itself through its hooks, so it outlives train() until
            # a collection; collected after the group is gone, at interpreter exit, its gloo
            # work can abort the process ("terminate called without an active exception")
            import gc

            gc.collect()
            comm.dist.destroy_process_group()
    if comm.rank == 0:
        line = lambda metrics: "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        log(f"held-out ({result['held_out']}, {result['n_val'] or result['n_train']} images):")
        if result["kept"] == "best":
            log(
                f"  kept checkpoint (best.*, epoch {result['best_epoch']}): "
                f"{line(result['metrics'])}"
            )
        log(f"  last epoch ({result['last_epoch']}): {line(result['last_epoch_metrics'])}")
        log(f"wrote {out}/result.json, history.csv, curves.png")
    return EXIT_OK
