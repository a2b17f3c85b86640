"""Command line: ``esmm-np demo``, ``esmm-np experiment``, ``esmm-np gradcheck``."""

import argparse
import sys


def _gradcheck(args):
    from . import gradcheck as G

    model, (X, click, conversion, dense) = G.everything_on_example(n=args.n, seed=args.seed)
    print("Gradient check of a float64 ESMM with every option on: PReLU, dropout "
          "(fixed masks), batch norm, L2 on embeddings and towers, 2 dense features, "
          "towers (6, 4) and (5,), loss weights (1, 0.7).")
    print(f"Centred differences, h = {args.h:g}; ok when relative error <= {args.tol:g}.\n")
    rows = G.check_model(model, X, click, conversion, dense=dense, h=args.h, tol=args.tol,
                         seed=args.seed)
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

    cfg = E.demo_config()
    print("esmm-np demo: simulate a world where the true CVR of every impression is known,")
    print("train ESMM and the paper's baselines on it, and compare them on held-out impressions.")
    print("AUC in percent; bias = mean pCVR - mean true CVR, in percentage points.\n")
    if args.workers is not None:
        cfg.workers = args.workers
    result = E.run_experiment(cfg)
    world = result["world"]
    print(f"\nIn this world clicked impressions have mean true CVR "
          f"{100 * world['true_cvr_clicked']:.2f}% and unclicked ones "
          f"{100 * world['true_cvr_unclicked']:.2f}%: a model trained on clicks learns the first.")
    _report(result, None, args.out)
    return 0


def _experiment(args):
    from . import experiments as E

    cfg = E.CONFIGS["quick" if args.quick else args.preset]()
    if args.quick:
        cfg.preset = args.preset
    if args.seeds is not None:
        cfg.seeds = tuple(args.seeds)
    if args.n is not None:
        if args.n < cfg.n_impressions and cfg.label == "full":
            cfg.label = "small"
        cfg.n_impressions = args.n
    if args.workers is not None:
        cfg.workers = args.workers
    result, sweep = E.run_all(cfg, sweep=not args.no_sweep)
    _report(result, sweep, args.out)
    if args.docs:
        E.write_docs(result, sweep, args.docs, "esmm-np experiment " + " ".join(args.argv))
        print(f"updated {args.docs}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="esmm-np", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gradcheck", help="print the gradient-check table of the whole model")
    g.add_argument("--n", type=int, default=16, help="batch size (default 16)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--h", type=float, default=1e-5, help="finite-difference step")
    g.add_argument("--tol", type=float, default=1e-6, help="relative-error threshold")
    g.set_defaults(run=_gradcheck)
    d = sub.add_parser("demo", help="simulate, train ESMM and the baselines, print and plot")
    d.add_argument("--out", default="esmm_demo", help="folder for table, JSON and figure")
    d.add_argument("--workers", type=int, help="worker processes (default 2)")
    d.set_defaults(run=_demo)
    e = sub.add_parser("experiment", help="the paper's Table 2 and sparsity sweep, several seeds")
    e.add_argument("--out", default="results", help="folder for table, JSON and figure")
    e.add_argument("--preset", default="default", choices=("default", "paper"),
                   help="the simulated world (esmm_np.simulate's preset; default: default)")
    e.add_argument("--quick", action="store_true",
                   help="a small configuration (under a minute); its numbers are not the table's")
    e.add_argument("--workers", type=int, help="worker processes, one BLAS thread each (default 2)")
    e.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    e.add_argument("--n", type=int, help="number of simulated impressions")
    e.add_argument("--no-sweep", action="store_true", help="skip the sparsity sweep")
    e.add_argument("--docs", help="also fill the generated section of this Markdown file "
                                  "(docs/experiments.md; FILE:NAME picks a named section)")
    e.set_defaults(run=_experiment)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
