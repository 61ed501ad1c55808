"""CCL entry point: train, validate, infer, retrieve, report (see README.md).

One run, top to bottom: `parse_opts` reads the command line and `resolve` checks it and
turns it into the run's configs; `train_and_evaluate` builds the training
(`training.build`), trains it (`training.engine`), then evaluates the student
(`evaluation.pipeline`: val.json, retrieval, report.md). docs/DESIGN.md maps the modules.
"""
import logging
import os
import signal
import sys
from pathlib import Path

if __name__ == "__main__":
    # Ctrl-C while the libraries below load ends the process at once, without a traceback:
    # nothing has started yet. From `main` on, Ctrl-C is answered with what the run saved.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

import torch  # noqa: E402 - the libraries load after the Ctrl-C setting above

from demo.run import run_demo
from errors import RunStopped, Terminated, UserError
from evaluation.pipeline import evaluate
from opts import Config, parse_opts, resolve
from training.build import build
from training.checkpoint import unwrap
from training.device import describe_device, select_device
from training.distributed import is_main_process, shutdown
from training.engine import Engine
from training.result_folder import RUN_LOG, check_fresh_start, hold_result_folder, interruption_summary
from training.precision import speed_mode

log = logging.getLogger("ccl")


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 a mistake in the options or data (nothing was built); 1 the run
    started but could not go on; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM)."""
    opt = parse_opts(argv)
    try:
        if opt.demo:
            return run_demo(opt, train_and_evaluate)
        config = resolve(opt)
        with hold_result_folder(config.run.result_path):
            check_fresh_start(config.run.result_path, config.run.train, config.run.resume_path)
            run(config)
    except KeyboardInterrupt as e:
        summary = ("interrupted: the demo did not finish; rerun `python main.py --demo` to run it again"
                   if opt.demo else interruption_summary(Path(opt.result_path), training=not opt.no_train))
        print(summary, file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(e, Terminated) else 130
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:   # a result file that cannot be written (disk full, permissions)
        print(f"error: {describe_os_error(e, opt.result_path)}", file=sys.stderr)
        return 1
    return 0


def describe_os_error(error: OSError, result_path: Path) -> str:
    """One line for a file operation that failed under a started run: in the result folder
    (or a write that names no file) a full disk or a folder it cannot write, else the file."""
    reason = error.strerror or str(error)
    outside = error.filename is not None and not Path(error.filename).absolute().is_relative_to(
        Path(result_path).absolute())
    if outside:
        return f"the run stopped: {error.filename}: {reason}; the checkpoints on disk are complete"
    where = error.filename or f"a file in {result_path}"
    return (f"the run stopped: {where}: {reason} (free disk space, or check that --result_path "
            f"{result_path} is writable); the checkpoints on disk are complete")


def run(config: Config) -> dict:
    """The run on its device, logged to stderr and `<result_path>/run.log` (closed when the
    run ends: a refused run's lines are then taken back, `training.result_folder`)."""
    device = select_device(config.run)
    run_log = setup_logging(config.run.result_path)
    try:
        log.info("device: %s", describe_device(device, config.run.no_cuda, config.run.exact))
        for warning in config.warnings:
            log.warning(warning)
        return train_and_evaluate(config, device)
    finally:
        shutdown()
        if run_log is not None:
            logging.getLogger().removeHandler(run_log)
            run_log.close()


def train_and_evaluate(config: Config, device: torch.device) -> dict:
    """Train (or validate a checkpoint), then evaluate the student as the options ask.
    Returns the best validation accuracy and the evaluation's numbers."""
    training = build(config.data, config.model, config.teachers, config.optim, config.run, device)
    engine = Engine(training.state, config.data, config.optim, config.run, device)
    if training.train_loader is not None:
        engine.fit(training.train_loader, training.val_loader)
    elif training.val_loader is not None:
        engine.validate_only(training.val_loader)
    results = {"best_val_acc": training.state.best_acc}
    if config.eval.wanted:
        student = unwrap(training.state.student)
        results.update(evaluate(config.eval, config.data, student, device, speed_mode(device, config.run.exact)))
    return results


def setup_logging(result_path: Path) -> logging.Handler | None:
    """Log to stderr and, in the main process, to run.log; returns run.log's handler."""
    level = logging.INFO if is_main_process() else logging.WARNING
    handlers = [logging.StreamHandler(sys.stderr)]
    run_log = RunLogHandler(result_path / RUN_LOG) if is_main_process() else None
    if run_log is not None:
        handlers.append(run_log)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    return run_log


class RunLogHandler(logging.FileHandler):
    """run.log: a line that cannot be written (disk full) stops the run with one `error:`
    line, where logging would print a traceback and go on without its log."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise OSError(error.errno, error.strerror, self.baseFilename) from error
        super().handleError(record)


def terminate(signum: int, frame) -> None:
    """SIGTERM handler: the run ends as on Ctrl-C. Loader workers that the same signal
    reached may die before this process answers it: torch's SIGCHLD handler, which reports
    a dead worker as an error, is replaced by one that does nothing, so the interruption is
    all that is reported. A second SIGTERM while the run ends is ignored."""
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Under torchrun, torchrun answers SIGTERM: it stops every rank, a rank waiting in a
    # collective included, which a Python handler could not do.
    if "RANK" not in os.environ:
        signal.signal(signal.SIGTERM, terminate)
    sys.exit(main())
