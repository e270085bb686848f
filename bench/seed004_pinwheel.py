"""Which data scale / activation reproduce seed 004's printed numbers? Epoch-1 and final recon in the seed's
convention (sum of squares / (2 sigma^2), no constant) and KL, from vaekit's own per-epoch training averages."""
import math, sys, time
import numpy as np, torch, vaekit
from vaekit.train import fit, TrainConfig
torch.set_num_threads(1)
SIG2 = 0.03
LOGNORM = -0.5 * 2 * math.log(2 * math.pi * SIG2)  # +1.6687
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 800
rows = []
for act in sys.argv[2].split(",") if len(sys.argv) > 2 else ["tanh"]:
    for s in [float(v) for v in (sys.argv[3].split(",") if len(sys.argv) > 3 else ["1", "1.66"])]:
        x = vaekit.datasets.pinwheel().x * s
        torch.manual_seed(0)
        m = vaekit.build_model(vaekit.ModelSpec(data_shape=(2,), latent_dim=2, hidden=(64,), activation=act,
                                                likelihood={"name": "gaussian", "scale": math.sqrt(SIG2)}))
        t = time.time()
        r = fit(m, x, config=TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, beta=0.25, seed=0, progress=False))
        h = getattr(r, "history", r)
        first, last = h[0], h[-1]
        rec = lambda row: LOGNORM - row["train_log_px_z"]
        print(f"act={act} scale={s}: epoch1 recon {rec(first):.2f} KL {first['train_kl']:.2f} | final recon {rec(last):.3f} "
              f"KL {last['train_kl']:.3f} loss {rec(last) + 0.25 * last['train_kl']:.3f}  ({time.time() - t:.0f}s)", flush=True)
