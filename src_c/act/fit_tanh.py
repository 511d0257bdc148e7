"""Fits the recurrent epilogue's tanh (src_c/act/vec.h, v_rat_lk): tanh(x) ~ x P(x^2) /
Q(x^2) on [0, C], P of degree 6 and Q of degree 3 in x^2, Q(0) = 1, minimising the largest absolute error
(Sanathanan-Koerner linearisation, then Lawson reweighting towards minimax). Prints the float32
coefficients as hex floats and their error evaluated as the kernel does (float32, one rounding
per FMA): python src_c/act/fit_tanh.py (numpy only)."""
import numpy as np

C, NP, NQ = 9.0, 7, 4   # tanh(9) = 1 - 3e-8: beyond C the clamp costs less than one float32 ulp


def fit(iters=200):
    x = np.linspace(0, C, 40001)[1:]
    t = np.tanh(x)
    u = (x / C) ** 2               # fit in a scaled variable: powers of x^2 up to x^12 are ill-conditioned
    w, Qp, best = np.ones_like(x), np.ones_like(x), None
    for it in range(iters):
        A = np.hstack([np.stack([x * u**k for k in range(NP)], 1), -np.stack([t * u**k for k in range(1, NQ)], 1)])
        s = w / Qp
        sol = np.linalg.lstsq(A * s[:, None], t * s, rcond=None)[0]
        p, q = sol[:NP], np.concatenate([[1.0], sol[NP:]])
        Qp = np.polyval(q[::-1], u)
        err = x * np.polyval(p[::-1], u) / Qp - t
        if best is None or np.abs(err).max() < best[0]:
            best = (np.abs(err).max(), p, q)
        if it >= 10:
            w = np.maximum(w * np.abs(err), 1e-30)
            w /= w.mean()
    _, p, q = best
    # back to powers of z = x^2, rounded to float32
    return ([np.float32(p[k] / C ** (2 * k)) for k in range(NP)], [np.float32(q[k] / C ** (2 * k)) for k in range(NQ)])


def tanh_f32(x, pz, qz, sigmoid=False):
    """as v_rat_lk computes it: every operation rounded to float32 (an FMA once); sigmoid: the
    epilogue's 1/2 + tanh(x/2)/2 (v_sigmoid_rat_n: the halvings exact, the last step an FMA)"""
    r = lambda v: np.asarray(v, np.float64).astype(np.float32).astype(np.float64)
    x = r(np.clip(r(x * 0.5) if sigmoid else x, -C, C))
    z = r(x * x)
    P = np.full_like(z, float(pz[-1]))
    for c in pz[-2::-1]:
        P = r(P * z + float(c))
    Q = np.full_like(z, float(qz[-1]))
    for c in qz[-2::-1]:
        Q = r(Q * z + float(c))
    if sigmoid:
        return r(0.5 * r(x * P) * r(1.0 / Q) + 0.5)
    return r(r(x * P) * r(1.0 / Q))


if __name__ == "__main__":
    pz, qz = fit()
    x = np.concatenate([np.linspace(-12, 12, 2400001), np.geomspace(1e-30, 1, 20001)]).astype(np.float32).astype(np.float64)
    y = tanh_f32(x, pz, qz)
    small = (np.abs(x) < 0.5) & (x != 0)
    print("P:", ", ".join(float(c).hex() for c in pz))
    print("Q:", ", ".join(float(c).hex() for c in qz))
    print("tanh abs error %.3g, relative for |x| < 0.5: %.3g" % (np.abs(y - np.tanh(x)).max(),
          (np.abs(y - np.tanh(x))[small] / np.abs(np.tanh(x[small]))).max()))
    s = tanh_f32(x, pz, qz, sigmoid=True)
    print("sigmoid = 0.5 tanh(x/2) + 0.5: abs error %.3g" % np.abs(s - 1 / (1 + np.exp(-x))).max())
