"""The weight-gradient products grad.T @ x (grad.T a transposed view, x row-major) on cpp against
torch @ and NumPy @ (threadpoolctl, 2 threads), each in its own block, cpp first (OpenBLAS spins
after its calls and slows what follows), 1 s apart; median of 7 rounds."""
import time, statistics, numpy as np, torch, gemmlab
from threadpoolctl import threadpool_limits
torch.set_num_threads(2)
shapes = [(50, 512, 784, torch.float32), (50, 512, 784, torch.float64), (50, 50000, 784, torch.float32)]
def t(f, reps):
    f(); f(); rs = []
    for _ in range(7):
        s = time.perf_counter()
        for _ in range(reps): f()
        rs.append((time.perf_counter() - s) / reps)
    return statistics.median(rs)
for m, k, n, dt in shapes:
    g = torch.randn(k, m, dtype=dt); x = torch.randn(k, n, dtype=dt); a = g.T
    an, xn = a.numpy(), x.numpy()
    reps = 1 if k > 10000 else 50
    row = {}
    row["cpp"] = t(lambda: gemmlab.matmul(a, x, backend="cpp"), reps); time.sleep(1)
    row["torch @"] = t(lambda: a @ x, reps); time.sleep(1)
    with threadpool_limits(2):
        row["numpy @"] = t(lambda: an @ xn, reps)
    time.sleep(1)
    best = min(row["torch @"], row["numpy @"])
    print(f"{m}x{k} @ {k}x{n} {str(dt)[6:]}: " + ", ".join(f"{kk} {v*1e6:.0f} us" for kk, v in row.items()) + f"; cpp / best peer time {row['cpp']/best:.2f}")
