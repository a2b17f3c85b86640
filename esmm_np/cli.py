"""Command line: ``esmm-np demo``, ``experiment``, ``regime-map``, ``gradcheck``,
``aliccp convert``."""

import argparse
import math
import os
import sys

#: The fewest simulated impressions ``demo`` and ``experiment`` accept; below it a
#: default world leaves the validation rows without the clicks the click-space
#: methods validate on. A world above it can still be refused before training
#: (esmm_np.experiments.checks) when its draw leaves a split too small.
MIN_IMPRESSIONS = 5000

#: The parser's description (plain text: argparse prints it as is).
DESCRIPTION = ("ESMM in NumPy, for learning: check the gradients, run a one-minute demo, "
               "or reproduce the paper's experiments on simulated worlds.")


def _gradcheck(args):
    from . import gradcheck as G

    if args.model in ("sb", "mmoe", "ple", "aitm"):
        from . import familycheck
        return familycheck.run(args.model, n=args.n, seed=args.seed, h=args.h, tol=args.tol)
    if args.model != "esmm":
        return _gradcheck_escm2(args)
    model, (X, click, conversion, dense) = G.everything_on_example(n=args.n, seed=args.seed)
    print("Gradient check of a float64 ESMM with every option on: PReLU, dropout "
          "(fixed masks), batch norm, L2 on embeddings and towers, 2 dense features, "
          "towers (6, 4) and (5,), loss weights (1, 0.7).")
    print(f"Centred differences, h = {args.h:g}; ok when relative error <= {args.tol:g}.\n")
    rows = G.check_model(model, X, click, conversion, dense=dense, h=args.h, tol=args.tol,
                         seed=args.seed)
    print(G.format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def _gradcheck_escm2(args):
    from . import escm2, gradcheck as G

    variant = args.model.split("-")[1]
    model, (X, click, conversion, dense) = escm2.everything_on_example(
        variant, n=args.n, seed=args.seed, propensity_grad=args.propensity_grad)
    print(f"Gradient check of a float64 ESCM2-{variant.upper()} with every option on: as for "
          "ESMM (PReLU, dropout, batch norm, L2, 2 dense features, towers (6, 4) and (5,), "
          "loss weights (1, 0.7)), counterfactual weight 0.8"
          + (", imputation tower (3,)" if variant == "dr" else "")
          + f", propensity floor {model.propensity_floor:.3f} (the batch's median pCTR).")
    print("Propensity " + ("live: gradient flows into the CTR tower through 1 / pCTR."
                           if args.propensity_grad else
                           "detached (the default): held at its current values while "
                           "differencing, as the gradient treats it."))
    print(f"Centred differences, h = {args.h:g}; ok when relative error <= {args.tol:g}.\n")
    rows = escm2.check_gradients(model, X, click, conversion, dense=dense, h=args.h,
                                 tol=args.tol, seed=args.seed)
    print(G.format_table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def _report(result, sweep, out):
    from . import experiments as E

    print()
    print(E.report_text(result, sweep))
    figure = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        figure = False
        print("\n(matplotlib is not installed: no figure; pip install matplotlib)")
    paths = E.save(result, sweep, out, figure=figure)
    print("\nwrote " + ", ".join(paths))


def _demo(args):
    from . import experiments as E
    from .experiments import runner
    from .experiments.checks import TooSmall

    cfg = E.demo_config()
    cfg.seeds = (args.seed,)
    cfg.n_impressions = args.n
    if args.world_seeds is not None:
        cfg.world_seeds = tuple(args.world_seeds)
    elif args.worlds is not None:
        cfg.world_seeds = tuple(range(args.worlds))
    n_worlds = len(cfg.world_seeds)
    these = "these worlds" if n_worlds > 1 else "this world"
    print(f"esmm-np demo: simulate {n_worlds} world(s) where the true CVR of every impression "
          "is known,")
    print(f"train ESMM and the paper's baselines in each, and compare them on held-out "
          "impressions.")
    print("AUC in percent; bias = mean pCVR - mean true CVR, in percentage points.\n")
    if args.workers is not None:
        cfg.workers = args.workers
    try:
        result = runner.run_experiment(cfg, progress=print)
    except TooSmall as e:
        print(f"esmm-np demo: {e}", file=sys.stderr)
        return 2
    infos = [w["world"] for w in result["per_world"].values()]
    clicked = [100 * w["true_cvr_clicked"] for w in infos]
    unclicked = [100 * w["true_cvr_unclicked"] for w in infos]

    def span(values):
        if len(values) == 1:
            return f"{values[0]:.2f}%"
        return f"{min(values):.2f}-{max(values):.2f}%"

    print("\nThe methods (what each trains on, and how its pCVR is made):\n")
    print(E.glossary_table(cfg.methods, cfg))
    print(f"\nIn {these} clicked test impressions have mean true CVR {span(clicked)} and "
          f"unclicked ones {span(unclicked)}: a model trained on clicks learns the first.")
    _report(result, None, args.out)
    return 0


def _method_names():
    from .experiments.methods import TRAINERS
    return tuple(TRAINERS)


def _experiment(args):
    from . import experiments as E
    from .experiments import runner
    from .experiments.report import doc_section
    from .experiments.checks import TooSmall

    cfg = E.CONFIGS["quick" if args.quick else args.preset]()
    if args.quick:
        cfg.preset = args.preset
    if args.seeds is not None:
        cfg.seeds = tuple(args.seeds)
    if args.world_seeds is not None:
        cfg.world_seeds = tuple(args.world_seeds)
    elif args.worlds is not None:
        cfg.world_seeds = tuple(range(args.worlds))
    if args.n is not None:
        if args.n < cfg.n_impressions and cfg.label == "full":
            cfg.label = "small"
        cfg.n_impressions = args.n
    if args.workers is not None:
        cfg.workers = args.workers
    if args.methods is not None:
        cfg.methods = tuple(args.methods)
    if args.confounder is not None:
        cfg.world = dict(cfg.world, confounder=args.confounder)
        if cfg.label == "full":
            cfg.label = f"confounder {args.confounder:g}"
    data = None
    if args.data is not None:
        if args.worlds is not None or args.world_seeds is not None:
            raise SystemExit("esmm-np experiment: --data is one world of real impressions; "
                             "--worlds and --world-seeds are for simulated worlds")
        data = _converted(args.data)
        if args.workers is None:
            cfg.workers = 1       # spawned workers would each receive a copy of the data
        cfg.label = f"data {args.data}"
        if data[0].bags is not None:
            cfg.arch = dict(cfg.arch, bag_pooling="mean")
    try:
        result, sweep = runner.run_all(cfg, sweep=not args.no_sweep, data=data)
    except TooSmall as e:
        print(f"esmm-np experiment: {e}", file=sys.stderr)
        return 2
    _report(result, sweep, args.out)
    if args.docs:
        E.write_docs(result, sweep, args.docs, "esmm-np experiment " + " ".join(args.argv),
                     section=doc_section(cfg.preset, cfg.methods))
        print(f"updated {args.docs}")
    return 0


def _converted(path):
    """(train, test) of a cache written by ``esmm-np aliccp convert``, memory-mapped."""
    from . import aliccp

    try:
        return aliccp.load(path, "train"), aliccp.load(path, "test")
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"esmm-np experiment --data: {e}") from None


def _aliccp(args):
    from . import aliccp

    if args.action == "simulate":
        try:
            aliccp.write_raw(args.src, args.train, args.test, seed=args.seed, replace=args.replace)
        except (FileExistsError, NotADirectoryError, ValueError, TypeError) as e:
            print(f"esmm-np aliccp simulate: {e}", file=sys.stderr)
            return 2
        print(f"wrote raw Ali-CCP files for {args.train:,} training and {args.test:,} test "
              f"impressions of a simulated world to {args.src}")
        return 0
    try:
        report = aliccp.convert(args.src, args.out, min_count=args.min_count,
                                skip_malformed=args.skip_malformed, progress=not args.quiet,
                                overwrite=args.overwrite)
    except (aliccp.MalformedLine, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"esmm-np aliccp convert: {e}", file=sys.stderr)
        return 2
    for split, s in report["splits"].items():
        print(f"{split}: {s['skeleton_lines_read']:,} lines read, {s['rows_kept']:,} rows kept, "
              f"{s['invalid_rows']:,} invalid (click = 0, buy = 1), "
              f"{s['missing_common_index_rows']:,} with a missing common_feature_index, "
              f"{s['malformed_lines']:,} malformed lines skipped")
    print(f"single-valued fields: {' '.join(report['single_fields'])}")
    print(f"multi-valued fields (bags): {' '.join(report['bag_fields'])}")
    print(f"done in {report['seconds']:.1f} s ({report['skeleton_lines_per_second']:,} skeleton "
          f"lines/s); wrote {args.out} (report.json has the details)")
    return 0


def _regime(args):
    from . import experiments as E

    cfg = E.regime_config()
    rhos, cvrs = (0.3, 0.6, 0.9), (0.01, 0.03, 0.1)
    if args.quick:
        cfg.n_impressions, cfg.world_seeds, cfg.label = 60_000, (0, 1), "quick"
        rhos, cvrs = (0.3, 0.9), (0.03, 0.1)
        print("QUICK regime map: two small worlds per cell; its numbers are not the documented "
              "map's.")
    cfg.workers = args.workers
    rmap = E.regime_map(cfg, rhos, cvrs)
    print()
    print(E.regime_noise_line(rmap))
    print(E.regime_table(rmap))
    figure = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        figure = False
    paths = E.save_regime_map(rmap, args.out, figure=figure)
    print("\nwrote " + ", ".join(paths))
    if args.docs:
        E.write_regime_docs(rmap, args.docs, "esmm-np regime-map " + " ".join(args.argv),
                            figure=args.figure)
        print(f"updated {args.docs}")
    return 0


def _count(minimum):
    """argparse type: an integer >= ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _number(positive):
    """argparse type: a finite float, > 0 when ``positive`` else >= 0."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'> 0' if positive else '>= 0'}, got {text}")
        return value
    return parse


def _check_outputs(parser, args):
    """Everything a command will write is checked before any training starts."""
    from . import experiments as E
    from .data.files import check_output_dir, check_writable_file, read_text
    from .experiments.report import doc_section

    try:
        if getattr(args, "out", None) is not None:
            check_output_dir(args.out)
        if getattr(args, "docs", None):
            check_writable_file(args.docs)
            text = read_text(args.docs)
            section = {"regime-map": "regime", "criteria": "criteria"}.get(args.command) or \
                doc_section(getattr(args, "preset", "default"), getattr(args, "methods", None))
            start, end = E.doc_markers(section)
            if start not in text or end not in text:
                raise ValueError(f"{args.docs} has no {start} ... {end} section to fill")
    except (OSError, ValueError) as err:
        parser.error(str(err))


def main(argv=None):
    from . import __version__
    from .threads import hint, limit_blas_threads

    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="esmm-np", description=DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gradcheck", help="print the gradient-check table of the whole model",
                       formatter_class=fmt)
    g.add_argument("--n", type=_count(2), default=16, help="batch size (at least 2)")
    g.add_argument("--seed", type=_count(0), default=0, help="seed of the example and its masks")
    g.add_argument("--h", type=_number(positive=True), default=1e-5,
                   help="finite-difference step")
    g.add_argument("--tol", type=_number(positive=False), default=1e-6,
                   help="relative-error threshold")
    g.add_argument("--model", default="esmm",
                   choices=("esmm", "escm2-ips", "escm2-dr", "sb", "mmoe", "ple", "aitm"))
    g.add_argument("--propensity-grad", action="store_true",
                   help="ESCM2: let the gradient flow through the propensity into the CTR tower")
    g.set_defaults(run=_gradcheck)
    d = sub.add_parser("demo", help="simulate, train ESMM and the baselines, print and plot",
                       formatter_class=fmt)
    d.add_argument("--out", default="esmm_demo", help="folder for table, JSON and figure")
    d.add_argument("--seed", type=_count(0), default=0, help="training seed")
    d.add_argument("--n", type=_count(MIN_IMPRESSIONS), default=300_000,
                   help="number of simulated impressions in each world")
    d.add_argument("--worlds", type=_count(1), default=4, metavar="K",
                   help="simulated worlds (world seeds 0 .. K-1); with several, the "
                        "intervals are across worlds")
    d.add_argument("--world-seeds", type=_count(0), nargs="+", metavar="SEED",
                   help="the world seeds themselves (instead of --worlds)")
    d.add_argument("--workers", type=_count(1), default=2,
                   help="worker processes, one BLAS thread each")
    d.set_defaults(run=_demo)
    e = sub.add_parser("experiment", help="the paper's Table 2 and sparsity sweep, several seeds",
                       formatter_class=fmt)
    e.add_argument("--out", default="results", help="folder for table, JSON and figure")
    e.add_argument("--preset", default="default", choices=("default", "paper"),
                   help="the simulated world (esmm_np.simulate's preset)")
    e.add_argument("--quick", action="store_true",
                   help="a small configuration (under a minute); its numbers are not the table's")
    e.add_argument("--workers", type=_count(1), default=None,
                   help="worker processes, one BLAS thread each (default 2; 1 with --data)")
    e.add_argument("--data", metavar="DIR",
                   help="run on a cache written by `esmm-np aliccp convert` instead of a "
                        "simulated world (metrics that need the true CVR are n/a)")
    e.add_argument("--seeds", type=_count(0), nargs="+",
                   help="training seeds inside every world (default: the preset's: "
                        "0 1 for default, 0 for paper and --quick)")
    e.add_argument("--worlds", type=_count(1), metavar="K",
                   help="train in K simulated worlds (world seeds 0 .. K-1); intervals are "
                        "then across worlds (default: the preset's, see docs/experiments.md)")
    e.add_argument("--world-seeds", type=_count(0), nargs="+", metavar="SEED",
                   help="the world seeds themselves (instead of --worlds)")
    e.add_argument("--n", type=_count(MIN_IMPRESSIONS), help="number of simulated impressions")
    e.add_argument("--no-sweep", action="store_true", help="skip the sparsity sweep")
    e.add_argument("--methods", nargs="+", metavar="NAME", choices=_method_names(),
                   help="train only these methods (default: all)")
    e.add_argument("--confounder", type=_number(positive=False),
                   help="weight of the simulator's hidden confounder (default 0)")
    e.add_argument("--docs", help="also fill the generated section of this Markdown file "
                                  "(docs/experiments.md; one section per preset; --methods "
                                  "ESMM plus family methods fill the preset's family section)")
    e.set_defaults(run=_experiment)
    a = sub.add_parser("aliccp", help="convert raw Ali-CCP files into a cache esmm_np loads")
    asub = a.add_subparsers(dest="action", required=True)
    c = asub.add_parser("convert", help="read SRC's sample_skeleton_*.csv and "
                                        "common_features_*.csv, write the cache OUT")
    c.add_argument("src", help="folder with the raw files")
    c.add_argument("out", help="folder to create for the cache")
    c.add_argument("--min-count", type=int, default=10,
                   help="ids seen fewer times in training share one out-of-vocabulary id (default 10)")
    c.add_argument("--skip-malformed", action="store_true",
                   help="count and skip malformed lines instead of stopping at the first")
    c.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(run=_aliccp)
    w = asub.add_parser("simulate", help="write raw Ali-CCP files from a simulated world "
                                         "(to try the commands without the real data)")
    w.add_argument("src", help="folder to write the raw files into")
    w.add_argument("--train", type=int, default=20000, help="training impressions (default 20000)")
    w.add_argument("--test", type=int, default=5000, help="test impressions (default 5000)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--replace", action="store_true",
                   help="replace the raw files an earlier simulate wrote in SRC (all of them)")
    w.set_defaults(run=_aliccp)
    r = sub.add_parser("regime-map", help="ESMM - BASE across worlds (rho x CVR level), "
                       "with intervals", formatter_class=fmt)
    r.add_argument("--out", default="results", help="folder for regime.md/.json/.png")
    r.add_argument("--quick", action="store_true",
                   help="four cells of two small worlds each; not the documented map")
    r.add_argument("--workers", type=_count(1), default=2,
                   help="worker processes, one BLAS thread each")
    r.add_argument("--docs", help="also fill the regime section of this Markdown file")
    r.add_argument("--figure", help="with --docs: the figure's path as the doc links it")
    r.set_defaults(run=_regime)
    from .experiments import relatedness                   # esmm-np relatedness
    relatedness.add_parser(sub, fmt, _count(1))
    from .experiments import criteria                      # esmm-np criteria
    criteria.add_parser(sub, fmt, _count(1))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    _check_outputs(parser, args)
    note = hint()
    if note and args.command != "gradcheck":
        print(note, file=sys.stderr)
    with limit_blas_threads():
        try:
            code = args.run(args)
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_stdout()
            return 1
    return code


def _quiet_stdout():
    """After the reader closed the pipe (``esmm-np gradcheck | head``): send the rest nowhere.

    Python's own advice: point stdout at devnull so the flush at exit does not
    raise again; exit status 1, as Python's own EPIPE exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass    # stdout is not a real file (a test's capture): nothing left to flush


if __name__ == "__main__":
    sys.exit(main())
