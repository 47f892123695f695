"""``python -m hpo.narrow``: the next stage of a search, in the ranges where the best trials live.

The book's procedure after a random search (ch. 6.5.3): look at the best trials, narrow the ranges
to where they live, and search again. The new stage is a NEW study linked to its parent and seeded
with the parent's trials inside its ranges (:mod:`hpo.stages`); by default it searches with TPE.

How the ranges are derived (:mod:`hpo.narrowing`), for every numeric parameter (categorical ones
keep their choices):

1. the top complete trials of the parent: ``--top K``, or ``--top-fraction F`` of its finished
   (complete + pruned) trials; pruned, diverged and failed trials never define a range;
2. their smallest and largest value, on the parameter's scale (log for log parameters);
3. widened on each side by ``--margin`` times the width of the parent's range on that scale;
4. clipped to the parent's range, and rounded outward to 3 significant digits (int and stepped
   parameters to their grid).

Examples::

    python -m hpo.narrow --study default                       # show the narrowed ranges, create
    python -m hpo.narrow --study default --trials 100          # ... and run the stage with TPE
    python -m hpo.narrow --study default --top 5 --margin 0.05 --trials 100 --jobs 2
    python -m hpo.search --study book --stages 3 --trials 100  # the whole pipeline: book-s1..s3
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hpo import cli, stages
from hpo.arguments import add_search_arguments
from hpo.runner import StorageFailure
from hpo.steps import execute_narrow, prepare_narrow
from hpo.storage import display_url

PROG = "hpo.narrow"


def build_parser() -> cli.Parser:
    """``hpo.search``'s flags, read as: narrow from ``--study``, then search the child."""
    p = cli.Parser(
        prog="python -m hpo.narrow",
        description=(
            "Create the next stage of a search: a new study in the ranges where the best trials "
            "of --study live, seeded with its trials there; run it when --trials is given."
        ),
    )
    add_search_arguments(p, narrowing=True)
    p.add_argument(
        "--child",
        default=None,
        metavar="NAME",
        help="the new stage's study name; default: the parent's with -s<stage> (book-s2)",
    )
    return p


@cli.guarded(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    try:
        plan = prepare_narrow(args, args.child)
    except ValueError as e:
        return cli.fail(PROG, e)
    try:
        execute_narrow(args, plan)
    except stages.CannotNarrow as e:
        return cli.fail(PROG, e, code=1)
    except KeyboardInterrupt:
        return 130  # the message is printed
    except StorageFailure as e:
        return cli.fail(PROG, f"the storage failed ({e}); the finished trials are kept.", 1)
    if args.trials is None:
        print(
            f"Created {plan.first.name!r}; run it: python -m hpo.search --storage "
            f"{display_url(args.storage)} --study {plan.first.name} --trials N"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
