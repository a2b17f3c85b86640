"""Command line: ``esmm-np gradcheck`` (and the commands other modules add)."""

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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="esmm-np", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gradcheck", help="print the gradient-check table of the whole model")
    g.add_argument("--n", type=int, default=16, help="batch size (default 16)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--h", type=float, default=1e-5, help="finite-difference step")
    g.add_argument("--tol", type=float, default=1e-6, help="relative-error threshold")
    g.set_defaults(run=_gradcheck)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
