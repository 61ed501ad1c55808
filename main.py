"""CCL entry point: train, validate, infer, retrieve (see README.md).

Data flows one way: files → datasets → batch → student/teachers → losses → step →
logs and checkpoints; evaluation reads the trained student back.
"""
import logging
import sys
from pathlib import Path

import torch

from demo.run import run_demo
from errors import RunStopped, UserError
from opts import parse_opts
from training.device import describe_device
from training.distributed import init_from_environment, is_main_process, shutdown
from training.inputs import check_inputs
from training.result_folder import hold_result_folder, interruption_summary
from training.session import run as run_session

log = logging.getLogger("ccl")


def setup_logging(result_path: Path) -> None:
    level = logging.INFO if is_main_process() else logging.WARNING
    handlers = [logging.StreamHandler(sys.stderr)]
    if is_main_process():
        handlers.append(logging.FileHandler(result_path / "run.log"))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)


def select_device(opt) -> torch.device:
    use_cuda = torch.cuda.is_available() and not opt.no_cuda
    if opt.distributed:
        return init_from_environment(use_cuda)
    return torch.device("cuda" if use_cuda else "cpu")


def run(opt) -> dict:
    """Everything the options ask for, in order: train/validate, infer, retrieve, report.
    Returns the final metrics."""
    device = select_device(opt)
    setup_logging(Path(opt.result_path))
    log.info("device: %s", describe_device(device, opt.no_cuda, opt.exact))
    try:
        return run_session(opt, device)
    finally:
        shutdown()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 a mistake in the options or data (nothing was built); 1 the run
    started but could not go on; 130 interrupted (Ctrl-C)."""
    opt = parse_opts(argv)
    try:
        if opt.demo:
            return run_demo(opt)
        check_inputs(opt)
        with hold_result_folder(Path(opt.result_path)):
            run(opt)
    except KeyboardInterrupt:
        if opt.demo:
            raise
        print(interruption_summary(Path(opt.result_path), training=not opt.no_train), file=sys.stderr)
        return 130
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
