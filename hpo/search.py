"""``python -m hpo.search``: the book's ch. 6 experiment as a pruned, parallel, persisted study.

Examples::

    python -m hpo.search --trials 100
    python -m hpo.search --trials 100 --jobs 2 --sampler random --pruner none
    python -m hpo.search --study wide --space space.toml --trials 200
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence

from hpo import cli, stages
from hpo.arguments import add_search_arguments
from hpo.progress import n_workers, resume_hint, too_many_jobs
from hpo.runner import StorageFailure, workers_started
from hpo.steps import (
    LateInputError,
    execute_search,
    execute_stages,
    prepare_search,
    prepare_stages,
)

PROG = "hpo.search"


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m hpo.search",
        description="Tune the book's MultiLayerNet with an Optuna study persisted in a database.",
    )
    add_search_arguments(p)
    return p


@cli.guarded(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    jobs = n_workers(args.jobs)
    # With --cluster, the workers are the cluster's tasks, however many cores this host has.
    warning = None if args.cluster else too_many_jobs(jobs)
    if warning:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    # The other workers start while this process checks the input and prepares the study.
    with workers_started(1 if args.cluster else jobs):
        try:
            plan = prepare_search(args) if args.stages is None else prepare_stages(args)
        except ValueError as e:
            return cli.fail(PROG, e)
        try:
            if args.stages is None:
                execute_search(args, plan)
                return 0
            done = execute_stages(args, plan)
        except LateInputError as e:
            return cli.fail(PROG, e)
        except stages.CannotNarrow as e:
            return cli.fail(PROG, e, code=1)
        except KeyboardInterrupt:
            return 130  # the message is printed
        except StorageFailure as e:
            return cli.fail(PROG, _storage_failed(args, e), code=1)
    if done.best is not None:
        trial, name = done.best
        print(
            f"Best of {len(plan.names)} stages: {name!r} trial {trial.number}, "
            f"{cli.trial_line(trial)}"
        )
    return 0


_AGAIN = "Run the same command again once the cause is gone."


def _storage_failed(args, failure: StorageFailure) -> str:
    """The one line for a storage that failed mid-run, with what continues the run."""
    if failure.finished is None:
        return f"the storage failed ({failure}); the finished trials are kept. {_AGAIN}"
    kept = f"{failure.finished} of {args.trials} finished and are kept"
    if args.stages is not None:
        return f"the storage failed ({failure}); {kept}. {_AGAIN}"
    hint = resume_hint(args, args.study, args.trials - failure.finished)
    return f"the storage failed ({failure}); {kept}. Once the cause is gone, " + hint.replace(
        "To add", "add", 1
    )


if __name__ == "__main__":
    code = main()
    # Skip the collection at interpreter exit: it walks every object the run made (a third of a
    # second here) to free memory the process is about to give back. Nothing waits on it to be
    # closed: main() closes the storages it opens, the workers theirs.
    gc.freeze()
    sys.exit(code)
