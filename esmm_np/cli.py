"""Command line: ``esmm-np demo``, ``esmm-np experiment``, ``esmm-np gradcheck``."""

import argparse
import sys


def _gradcheck(args):
    from . import gradcheck as G

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
    print(E.format_table(result))
    note = E.division_note(result)
    if note:
        print("\n" + note)
    if sweep:
        print("\nSparsity sweep (entire-space CVR AUC, percent):\n" + E.sweep_table(sweep))
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
    result = E.run_experiment(cfg)
    world = result["world"]
    print(f"\nIn this world clicked impressions have mean true CVR "
          f"{100 * world['true_cvr_clicked']:.2f}% and unclicked ones "
          f"{100 * world['true_cvr_unclicked']:.2f}%: a model trained on clicks learns the first.")
    _report(result, None, args.out)
    return 0


def _experiment(args):
    from . import experiments as E

    cfg = E.quick_config() if args.quick else E.ExperimentConfig()
    if args.seeds is not None:
        cfg.seeds = tuple(args.seeds)
    if args.n is not None:
        cfg.n_impressions = args.n
    data = E.make_world(cfg)
    result = E.run_experiment(cfg, data=data)
    sweep = None if args.no_sweep else E.sparsity_sweep(cfg, data=data)
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
    g.add_argument("--model", choices=("esmm", "escm2-ips", "escm2-dr"), default="esmm")
    g.add_argument("--propensity-grad", action="store_true",
                   help="ESCM2: let the gradient flow through the propensity into the CTR tower")
    g.set_defaults(run=_gradcheck)
    d = sub.add_parser("demo", help="simulate, train ESMM and the baselines, print and plot")
    d.add_argument("--out", default="esmm_demo", help="folder for table, JSON and figure")
    d.set_defaults(run=_demo)
    e = sub.add_parser("experiment", help="the paper's Table 2 and sparsity sweep, several seeds")
    e.add_argument("--out", default="results", help="folder for table, JSON and figure")
    e.add_argument("--quick", action="store_true", help="a small configuration (seconds)")
    e.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2)")
    e.add_argument("--n", type=int, help="number of simulated impressions")
    e.add_argument("--no-sweep", action="store_true", help="skip the sparsity sweep")
    e.add_argument("--docs", help="also fill the generated section of this Markdown file "
                                  "(docs/experiments.md)")
    e.set_defaults(run=_experiment)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
