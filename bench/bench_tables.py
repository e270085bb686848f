"""Imputation and synthesis on real tables that ship with scikit-learn: vaekit against the usual tools.

Tables (all offline, from scikit-learn):
- wine (178 rows): 13 numeric columns plus ``cultivar`` (3 classes), the class label used as a
  categorical column of the table;
- breast cancer (569 rows): 30 numeric columns plus ``diagnosis`` (malignant / benign), the label
  used as a categorical column;
- diabetes (442 rows, unscaled): 9 numeric columns, ``sex`` (1 / 2) as a categorical column, and
  ``progression``, the disease-progression target binned into tertiles (low / mid / high): a
  categorical column added because the table has only one.

Imputation. For every table, missing rate (10 %, 30 %) and mask seed, cells are masked completely
at random over the whole table; each contender completes the masked table (fitted on it, as
imputers are used). Scores on the masked cells: RMSE on numeric columns standardised by the
complete column's standard deviation, and accuracy on categorical columns; mean and standard
error over the masks. Contenders:
- vaekit reconstruction: a VAE trained on the ELBO, missing cells filled by decoding the posterior
  mean (vaekit's earlier ``reconstruct`` imputation);
- vaekit MIWAE: the same network trained on the MIWAE bound (K = 20 importance samples), filled by
  the importance-weighted conditional mean (K = 50) -- ``vaekit.imputation.MIWAEImputer``;
- scikit-learn's SimpleImputer (mean / most frequent), KNNImputer (5 neighbours),
  IterativeImputer with BayesianRidge, and IterativeImputer with ExtraTrees (missForest-style).
  They see numeric columns standardised on the observed cells and categorical columns dummy-coded
  (k - 1 columns of 0/1, all missing where the category is; full one-hot would pin an iterative
  imputer to the column means, as the columns sum to 1); their categorical answer is the category
  with the largest imputed score (the first category scoring 1 - the sum of the others).

Synthesis (needs ``pip install ctgan sdmetrics``; skipped with a note when absent; both pin
pandas < 3, so give them their own environment). Each table is split 70 / 30; vaekit (ELBO, z ~ p(z),
x ~ p(x|z)) and TVAE from ``ctgan`` (SDV's VAE for tables) are trained on the 70 % with the same
number of epochs, and, in a second vaekit row, for as long as TVAE took (equal time). Each draws as
many rows as it was trained on. Scores: SDMetrics' single-table quality report (column shapes,
column-pair trends, overall) against the training rows, and train-on-synthetic / test-on-real
accuracy of a random forest predicting the categorical target (cultivar, diagnosis, progression)
on the real 30 %, beside the same forest trained on the real 70 %.

    python bench/bench_tables.py --quick          # 2 masks per rate, 1500 steps, 100 synthesis epochs (the README's tables)
    python bench/bench_tables.py                  # 5 masks per rate, 3000 steps, 300 synthesis epochs
    python bench/bench_tables.py --skip-synthesis

Runtime: --quick took 27 minutes on 2 CPU cores shared with other jobs (load average 10 to 18); on an
idle machine it should take a fraction of that (not measured). Timings are wall-clock on whatever
machine runs it; under shared load compare ratios only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from vaekit.imputation import MIWAEImputer


# -- tables --------------------------------------------------------------------------------
def tables() -> dict[str, tuple[pd.DataFrame, str]]:
    """name -> (frame, target categorical column)."""
    wine = load_wine(as_frame=True)
    w = wine.data.copy()
    w["cultivar"] = np.asarray(wine.target_names)[wine.target]
    bc = load_breast_cancer(as_frame=True)
    b = bc.data.copy()
    b["diagnosis"] = np.asarray(bc.target_names)[bc.target]
    db = load_diabetes(as_frame=True, scaled=False)
    d = db.data.copy()
    d["sex"] = d["sex"].map(lambda v: f"sex{int(v)}")
    d["progression"] = pd.qcut(db.target, 3, labels=["low", "mid", "high"]).astype(str)
    return {"wine": (w, "cultivar"), "breast_cancer": (b, "diagnosis"), "diabetes": (d, "progression")}


def categorical_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]


def mcar(frame: pd.DataFrame, rate: float, seed: int) -> np.ndarray:
    mask = np.random.default_rng(seed).random(frame.shape) < rate
    mask[mask.all(1), 0] = False  # no row with nothing observed
    return mask


# -- the scikit-learn contenders on a numeric coding ---------------------------------------
class Coded:
    """Numeric columns standardised on the observed cells, categorical ones dummy-coded (one 0/1 column
    per category but the first; NaN where missing). Not full one-hot: its columns sum to 1, so an
    iterative imputer regresses each on its siblings and never leaves the column means."""

    def __init__(self, masked: pd.DataFrame):
        self.columns = list(masked.columns)
        self.cats = {c: sorted(masked[c].dropna().unique()) for c in categorical_columns(masked)}
        self.stats = {c: (masked[c].mean(), masked[c].std() or 1.0) for c in self.columns if c not in self.cats}

    def encode(self, masked: pd.DataFrame) -> np.ndarray:
        blocks = []
        for c in self.columns:
            if c in self.cats:
                v = masked[c]
                block = np.stack([(v == k).astype(float).to_numpy() for k in self.cats[c][1:]], 1)
                block[v.isna().to_numpy()] = np.nan
                blocks.append(block)
            else:
                m, s = self.stats[c]
                blocks.append(((masked[c] - m) / s).to_numpy(dtype=float)[:, None])
        return np.concatenate(blocks, 1)

    def decode(self, a: np.ndarray) -> pd.DataFrame:
        out, pos = {}, 0
        for c in self.columns:
            if c in self.cats:
                k = len(self.cats[c]) - 1  # the first category is 1 - the sum of the others
                block = a[:, pos : pos + k]
                scores = np.concatenate([1 - block.sum(1, keepdims=True), block], 1)
                out[c] = np.asarray(self.cats[c], dtype=object)[scores.argmax(1)]
                pos += k
            else:
                m, s = self.stats[c]
                out[c] = a[:, pos] * s + m
                pos += 1
        return pd.DataFrame(out)


def sklearn_imputers(quick: bool) -> dict:
    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
    from sklearn.linear_model import BayesianRidge

    trees = 20 if quick else 50
    return {
        "SimpleImputer (mean)": lambda seed: SimpleImputer(strategy="mean"),
        "KNNImputer (k=5)": lambda seed: KNNImputer(n_neighbors=5),
        "IterativeImputer (BayesianRidge)": lambda seed: IterativeImputer(
            BayesianRidge(), max_iter=10, random_state=seed
        ),
        "IterativeImputer (ExtraTrees)": lambda seed: IterativeImputer(
            ExtraTreesRegressor(n_estimators=trees, min_samples_leaf=2, n_jobs=1, random_state=seed),
            max_iter=5 if quick else 10,
            random_state=seed,
        ),
    }


def impute_sklearn(make, masked: pd.DataFrame, seed: int) -> pd.DataFrame:
    coded = Coded(masked)
    x = coded.encode(masked)
    imputer = make(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # IterativeImputer's convergence notes
        out = coded.decode(imputer.fit_transform(x))
    if type(imputer).__name__ == "SimpleImputer":  # a categorical's most frequent value, not an argmax of means
        for c in coded.cats:
            out.loc[masked[c].isna().to_numpy(), c] = masked[c].mode().iloc[0]
    return out


def impute_vaekit(masked: pd.DataFrame, seed: int, miwae: bool, steps: int) -> pd.DataFrame:
    batch = 64
    epochs = max(1, round(steps * batch / len(masked)))
    imp = MIWAEImputer(
        latent_dim=8,
        hidden=(128, 128),
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        iw_samples=20 if miwae else 0,
        method="importance" if miwae else "reconstruction",
        k=50,
        categorical=categorical_columns(masked),
        random_state=seed,
    )
    return imp.fit_transform(masked)


def scores(truth: pd.DataFrame, filled: pd.DataFrame, mask: np.ndarray) -> tuple[float, float]:
    cats = categorical_columns(truth)
    sq, hits, n_cat = [], 0, 0
    for j, c in enumerate(truth.columns):
        m = mask[:, j]
        if not m.any():
            continue
        if c in cats:
            hits += int((filled[c].to_numpy()[m] == truth[c].to_numpy()[m]).sum())
            n_cat += int(m.sum())
        else:
            err = (filled[c].to_numpy(dtype=float)[m] - truth[c].to_numpy(dtype=float)[m]) / truth[c].std()
            sq.append(err**2)
    rmse = float(np.sqrt(np.concatenate(sq).mean())) if sq else float("nan")
    return rmse, hits / n_cat if n_cat else float("nan")


def imputation(args) -> list[dict]:
    rows = []
    contenders = {"vaekit reconstruction": None, "vaekit MIWAE (K=20)": None, **sklearn_imputers(args.quick)}
    for name, (frame, _) in tables().items():
        for rate in (0.1, 0.3):
            for seed in range(args.masks):
                mask = mcar(frame, rate, seed)
                masked = frame.mask(mask)
                for contender, make in contenders.items():
                    started = time.perf_counter()
                    if make is None:
                        filled = impute_vaekit(masked, seed, "MIWAE" in contender, args.steps)
                    else:
                        filled = impute_sklearn(make, masked, seed)
                    rmse, acc = scores(frame, filled, mask)
                    rows.append(
                        {
                            "table": name,
                            "rate": rate,
                            "seed": seed,
                            "method": contender,
                            "rmse": rmse,
                            "accuracy": acc,
                            "seconds": time.perf_counter() - started,
                        }
                    )
                print(f"  {name} {int(rate * 100)}% mask {seed}: done", file=sys.stderr, flush=True)
    return rows


def markdown(df: pd.DataFrame) -> str:
    cells = [[str(v) for v in df.columns]] + [[str(v) for v in row] for row in df.itertuples(index=False)]
    return "\n".join("| " + " | ".join(r) + " |" for r in cells[:1] + [["---"] * len(df.columns)] + cells[1:])


def summarise(rows: list[dict], keys: list[str], values: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    g = df.groupby(keys, sort=False)
    out = g[values].mean()
    se = g[values].std(ddof=1) / np.sqrt(g.size().to_numpy()[:, None])
    for v in values:
        out[v] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(out[v], se[v])]
    return out.reset_index()


# -- synthesis -----------------------------------------------------------------------------
def synthesis(args) -> list[dict] | None:
    try:
        from ctgan import TVAE
        from sdmetrics.reports.single_table import QualityReport
    except ImportError as err:
        print(
            f"synthesis skipped: {err} (pip install ctgan sdmetrics torch==2.13.0; they need pandas < 3)",
            file=sys.stderr,
        )
        return None
    from sklearn.ensemble import RandomForestClassifier

    from vaekit.data.tables import Schema
    from vaekit.spec import ModelSpec, build_model
    from vaekit.synthesis import synthesize
    from vaekit.train import TrainConfig, fit

    rows = []
    for name, (frame, target) in tables().items():
        perm = np.random.default_rng(0).permutation(len(frame))
        cut = int(0.7 * len(frame))
        train, test = frame.iloc[perm[:cut]].reset_index(drop=True), frame.iloc[perm[cut:]].reset_index(drop=True)
        cats = categorical_columns(frame)
        metadata = {"columns": {c: {"sdtype": "categorical" if c in cats else "numerical"} for c in frame.columns}}

        def vaekit_fit(epochs: int, seconds: float | None = None, train=train, cats=cats):
            """Train for ``epochs``, or (``seconds``) epoch after epoch until that much time has passed."""
            started = time.perf_counter()
            schema = Schema.fit(train, categorical=cats)
            x, _ = schema.transform(train)
            lik = schema.likelihood()
            torch.manual_seed(0)
            model = build_model(
                ModelSpec(
                    data_shape=(x.shape[1],),
                    latent_dim=8,
                    hidden=(128, 128),
                    activation="relu",
                    likelihood=lik.config(),
                    network="table",
                )
            )

            def out_of_time(_, state):
                if seconds is not None and time.perf_counter() - started >= seconds:
                    state.stopped_early = True

            history = fit(
                model,
                x,
                None,
                TrainConfig(epochs=epochs if seconds is None else 10**6, batch_size=64, progress=False, seed=0),
                callbacks=[out_of_time],
            )
            sampler = lambda n: synthesize(model, schema, n, seed=0)
            sampler.epochs = len(history)
            return sampler

        def tvae_fit(epochs: int, train=train, cats=cats):
            torch.manual_seed(0)
            m = TVAE(epochs=epochs, batch_size=64, cuda=False)
            m.fit(train, discrete_columns=cats)
            return lambda n: m.sample(n)

        timings = {}
        plan = [("vaekit (equal epochs)", vaekit_fit, args.synth_epochs), ("TVAE", tvae_fit, args.synth_epochs)]
        for label, make, epochs in plan:
            started = time.perf_counter()
            sampler = make(epochs)
            timings[label] = time.perf_counter() - started
            rows.append(
                _judge(
                    name,
                    label,
                    epochs,
                    timings[label],
                    sampler(len(train)),
                    train,
                    test,
                    target,
                    metadata,
                    QualityReport,
                    RandomForestClassifier,
                )
            )
        # equal time: vaekit trains epoch after epoch for as long as TVAE took
        started = time.perf_counter()
        sampler = vaekit_fit(args.synth_epochs, seconds=timings["TVAE"])
        rows.append(
            _judge(
                name,
                "vaekit (equal time)",
                sampler.epochs,
                time.perf_counter() - started,
                sampler(len(train)),
                train,
                test,
                target,
                metadata,
                QualityReport,
                RandomForestClassifier,
            )
        )
        real = RandomForestClassifier(n_estimators=200, random_state=0).fit(_features(train, target), train[target])
        acc = float((real.predict(_features(test, target, like=train)) == test[target]).mean())
        rows.append(
            {
                "table": name,
                "method": "real rows (reference)",
                "epochs": "",
                "seconds": "",
                "column shapes": "",
                "column pair trends": "",
                "quality": "",
                "TSTR accuracy": f"{acc:.3f}",
            }
        )
        print(f"  {name}: synthesis done", file=sys.stderr, flush=True)
    return rows


def _features(frame: pd.DataFrame, target: str, like: pd.DataFrame | None = None) -> pd.DataFrame:
    x = pd.get_dummies(frame.drop(columns=target), dtype=float)
    if like is not None:
        x = x.reindex(columns=pd.get_dummies(like.drop(columns=target), dtype=float).columns, fill_value=0.0)
    return x


def _judge(name, label, epochs, seconds, synth, train, test, target, metadata, QualityReport, Forest) -> dict:
    synth = synth[train.columns]
    report = QualityReport()
    report.generate(train, synth, metadata, verbose=False)
    props = report.get_properties().set_index("Property")["Score"]
    forest = Forest(n_estimators=200, random_state=0).fit(
        _features(synth, target, like=train), synth[target].astype(str)
    )
    acc = float((forest.predict(_features(test, target, like=train)) == test[target]).mean())
    return {
        "table": name,
        "method": label,
        "epochs": epochs,
        "seconds": f"{seconds:.1f}",
        "column shapes": f"{props['Column Shapes']:.3f}",
        "column pair trends": f"{props['Column Pair Trends']:.3f}",
        "quality": f"{report.get_score():.3f}",
        "TSTR accuracy": f"{acc:.3f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 masks per rate, 1500 steps, 100 synthesis epochs")
    p.add_argument("--masks", type=int, help="mask seeds per table and rate [default: 5; quick: 2]")
    p.add_argument("--steps", type=int, help="vaekit gradient steps per imputation [default: 3000; quick: 1500]")
    p.add_argument("--synth-epochs", type=int, help="epochs for vaekit and TVAE [default: 300; quick: 100]")
    p.add_argument("--skip-synthesis", action="store_true")
    p.add_argument("--skip-imputation", action="store_true")
    args = p.parse_args()
    args.masks = args.masks or (2 if args.quick else 5)
    args.steps = args.steps or (1500 if args.quick else 3000)
    args.synth_epochs = args.synth_epochs or (100 if args.quick else 300)
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, pandas {pd.__version__}")
    started = time.perf_counter()
    if not args.skip_imputation:
        rows = imputation(args)
        table = summarise(rows, ["table", "rate", "method"], ["rmse", "accuracy", "seconds"])
        print(
            f"\nImputation, MCAR masks, mean ± standard error over {args.masks} masks "
            f"(RMSE on standardised numeric cells, lower is better; categorical accuracy, higher is better)\n"
        )
        print(markdown(table))
    if not args.skip_synthesis:
        rows = synthesis(args)
        if rows is not None:
            print(
                "\nSynthesis: SDMetrics quality against the training rows (higher is better) and "
                "train-on-synthetic / test-on-real accuracy of a random forest\n"
            )
            print(markdown(pd.DataFrame(rows)))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
