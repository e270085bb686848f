"""``vaekit reconstruct RUN --data ...``: examples beside their reconstructions."""
from __future__ import annotations

import argparse

import numpy as np
import torch

from .. import generate, plots, runs
from .options import positive_int
from . import outputs


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reconstruct",
        help="encode and decode examples: originals beside reconstructions",
        description="Encode each example, take z ~ q(z|x) (or its mean with --mean-z) and decode it. "
        "Writes an .npz holding 'original' and 'reconstruction' (or only the reconstructions to an .npy) "
        "and, for image data, originals and reconstructions as paired grids (2-D data: both over the data).",
    )
    outputs.add_run_argument(p)
    outputs.add_data_arguments(p, "reconstruct")
    p.add_argument("-n", "--n", type=positive_int, help="only the first N examples [default: all]")
    p.add_argument("--mean-z", action="store_true", help="decode the posterior mean instead of a draw z ~ q(z|x)")
    outputs.add_decode_arguments(p)
    p.add_argument("-o", "--out", help="output file: .npz (original and reconstruction) or .npy (reconstructions) "
                   "[default: RUN/reconstructions.npz]")
    outputs.add_png_arguments(p, "reconstructions.png")
    return p


def run(args: argparse.Namespace) -> int:
    run_ = outputs.open_run(args)
    shape = outputs.image_shape(run_)
    out = outputs.array_path(run_, args.out, "reconstructions.npz", allowed=(".npz", ".npy"))
    png = outputs.png_path(run_, args, "reconstructions.png", shape is not None or outputs.is_2d(run_))
    data = outputs.input_data(run_, args)
    x = data.x[: args.n] if args.n else data.x
    how = outputs.decode_how(args)
    outputs.seed_everything(args.seed)
    rec = generate.reconstruct(run_.model, torch.as_tensor(x, dtype=torch.float32), how=how, sample_z=not args.mean_z).numpy()
    if out.suffix.lower() == ".npz":
        outputs.write_npz(out, original=runs.format_output(run_, x), reconstruction=runs.format_output(run_, rec))
    else:
        outputs.write_npy(out, runs.format_output(run_, rec))
    if run_.schema is not None:  # a table: also fill its missing values by reconstruction
        _write_imputed(run_, x, out)
    diff = rec.reshape(len(x), -1) - x.reshape(len(x), -1)
    z_how = "the posterior mean" if args.mean_z else "z ~ q(z|x)"
    print(f"reconstructed {len(x)} examples ({outputs.DESCRIBE_HOW[how]} of {z_how}) to {out}; "
          f"mean squared difference {float(np.mean(diff ** 2)):.4g}, mean absolute {float(np.mean(np.abs(diff))):.4g} "
          "(in the model's data space)")
    if png is not None:
        if shape is not None:
            shown = min(len(x), outputs.MAX_TILES // 2)
            lo, hi = float(min(x.min(), rec.min())), float(max(x.max(), rec.max()))
            fig = plots.reconstruction_grid(x[:shown], rec[:shown], shape, value_range=(lo, hi))
        else:
            fig = plots.points_over_data(rec, x, title=f"{len(x)} reconstructions over their originals (grey)",
                                         label="reconstructions")
        plots.save(fig, png)
        print(f"picture: {png}")
    return 0


def _write_imputed(run_, x, out) -> None:
    """The table with every missing value replaced by its reconstruction (observed values kept),
    in the original columns and categories, as OUT_imputed.csv."""
    from ..checkpoint import atomic_write_text
    from ..tabular import impute

    filled = impute(run_.model, torch.as_tensor(x, dtype=torch.float32)).cpu().numpy()
    path = out.with_name(out.stem + "_imputed.csv")
    atomic_write_text(path, runs.format_output(run_, filled).to_csv(index=False))
    print(f"{int(np.isnan(np.asarray(x, dtype=np.float64)).sum())} missing values filled by reconstruction: {path}")
