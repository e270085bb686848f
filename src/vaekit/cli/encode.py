"""``vaekit encode RUN --data ... -o z.npy``: posterior means (and scales) as a representation."""

from __future__ import annotations

import argparse

from . import outputs


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "encode",
        help="write the posterior means of q(z|x) (representation learning)",
        description="Encode examples: the mean of q(z|x) for each, an (N, latent_dim) array. With --scales "
        "also its standard deviations: in the same .npz (keys 'mean' and 'scale') or, for an .npy output, "
        "in a second file NAME_scale.npy.",
    )
    outputs.add_run_argument(p)
    outputs.add_data_arguments(p, "encode")
    p.add_argument("-o", "--out", help="output file, .npy or .npz [default: RUN/z.npy]")
    p.add_argument("--scales", action="store_true", help="also write the posterior standard deviations")
    outputs.add_condition_file_argument(p)
    return p


def run(args: argparse.Namespace) -> int:
    from .. import generate, runs

    run_ = outputs.open_run(args)
    out = outputs.array_path(run_, args.out, "z.npy", allowed=(".npy", ".npz"))
    data = outputs.input_data(run_, args)
    c = runs.conditions(run_, data, "the input data")  # a conditional run: q(z|x, c), c its labels or covariates
    mean, scale = generate.encode(run_.model, data.x, c=c)  # batch by batch, also from disk
    written = [out]
    if out.suffix.lower() == ".npz":
        arrays = {"mean": mean.numpy()}
        if args.scales:
            arrays["scale"] = scale.numpy()
        outputs.write_npz(out, **arrays)
    else:
        outputs.write_npy(out, mean.numpy())
        if args.scales:
            scale_path = out.with_name(f"{out.stem}_scale.npy")
            outputs.write_npy(scale_path, scale.numpy())
            written.append(scale_path)
    what = "posterior means and standard deviations" if args.scales else "posterior means"
    given = f" of q(z|x, c), {outputs.condition_words(run_, args)}" if c is not None else ""
    print(
        f"encoded {len(data)} examples: {what}{given}, {mean.shape[1]} latent units, to {', '.join(map(str, written))}"
    )
    return 0
