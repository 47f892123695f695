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
from hpo.arguments import add_search_arguments, resolve_config, stage_options, validate
from hpo.results import open_readonly
from hpo.search import run_with_progress  # the one command-to-command import; see tests
from hpo.storage import display_url, ensure_parent, opened_storage
from hpo.study import make_sampler, stored_config

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


def _refuse_space_flags(args) -> None:
    for flag, value in (
        ("--lr", args.lr),
        ("--weight-decay", args.weight_decay),
        ("--space", args.space),
    ):
        if value is not None:
            shown = value if isinstance(value, str) else " ".join(map(str, value))
            raise ValueError(
                f"{flag}: narrowing derives the ranges from the parent's best trials, so it takes "
                f"no ranges, but got {flag} {shown}."
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.configure_logging(-1 if args.quiet else (1 if args.verbose else 0))
    url = args.storage
    count = args.stages or 1
    options = stage_options(args)
    try:
        _refuse_space_flags(args)
        if count > 1 and args.trials is None:
            raise ValueError(
                f"--stages {count}: a stage is narrowed from the trials of the one before, so "
                "more than one stage needs --trials."
            )
        if count > 1 and args.child is not None:
            raise ValueError(
                f"--child names one stage, but --stages {count} creates {count}; the names "
                "follow the parent's (book-s2, book-s3, ...)."
            )
        with open_readonly(url) as storage:
            parent = stages.load_search_study(storage, args.study, url)
            existing = {s.study_name for s in storage.get_all_studies()}
            config = resolve_config(args, stored_config(parent))
            names = (
                [args.child]
                if args.child
                else stages.stage_names(args.study, stages.stage_number(parent), count)
            )
            taken = [n for n in names if n in existing]
            if taken:
                raise ValueError(
                    f"Study {taken[0]!r} exists already; add trials to it with python -m "
                    f"hpo.search --study {taken[0]} --trials N, or name the stage with --child."
                )
            plan = stages.plan_stage(parent, names[0], config, options)
        make_sampler(plan.config.sampler, 0)
        if args.trials is not None:
            validate(plan.config, args)
    except ValueError as e:
        return cli.fail(PROG, e)

    ensure_parent(url)
    with opened_storage(url) as storage:
        try:
            done = stages.run_stages(
                storage,
                names,
                plan.config,
                options,
                run=lambda study, config, n: run_with_progress(study, config, url, n, args),
                echo=print,
                first=plan,
            )
        except stages.CannotNarrow as e:
            return cli.fail(PROG, e, code=1)
    if args.trials is None:
        print(
            f"Created {plan.name!r}; run it: python -m hpo.search --storage "
            f"{display_url(url)} --study {plan.name} --trials N"
        )
    return 0 if done.completed else 130


if __name__ == "__main__":
    sys.exit(main())
