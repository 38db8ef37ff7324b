"""Independent NumPy (float64) implementations of the papers' algorithms, written with explicit
loops from the equations, to pin the Keras layers against."""

import numpy as np


def squash(s):
    n2 = np.sum(s * s, axis=-1, keepdims=True)
    norm = np.sqrt(n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = n2 / (1.0 + n2) * s / norm
    return np.where(norm > 0, out, 0.0)


def predictions(u, W):
    """u: (B, M, d_in); W: (M, d_in, N, d_out) -> u_hat (B, M, N, d_out), u_hat[b,i,j] = W_ij^T u_i."""
    B, M, _ = u.shape
    _, _, N, d_out = W.shape
    u_hat = np.zeros((B, M, N, d_out))
    for i in range(M):
        for j in range(N):
            u_hat[:, i, j] = u[:, i] @ W[i, :, j, :]
    return u_hat


def softmax_over_outputs(b):
    e = np.exp(b - b.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def dynamic_routing(u, W, iterations):
    """Sabour Procedure 1. Returns v and the coupling matrix used by each iteration."""
    u_hat = predictions(u, W)
    b = np.zeros(u_hat.shape[:3])
    couplings = []
    for t in range(iterations):
        c = softmax_over_outputs(b)
        couplings.append(c)
        s = np.einsum("bij,bijd->bjd", c, u_hat)
        v = squash(s)
        if t < iterations - 1:
            b = b + np.einsum("bijd,bjd->bij", u_hat, v)
    return v, couplings


def adaptive_routing(u, W, iterations):
    """ARA Algorithm 1 with the explicit prediction update u_hat <- u_hat + v."""
    u_hat = predictions(u, W)
    for _ in range(iterations):
        v = squash(u_hat.sum(axis=1))
        u_hat = u_hat + v[:, None, :, :]
    return v


def adaptive_lambda_routing(u, W, lam):
    """ARA Algorithm 2 via the explicit sum over predictions."""
    return squash(lam * predictions(u, W).sum(axis=1))


def uniform_routing(u, W):
    u_hat = predictions(u, W)
    return squash(u_hat.sum(axis=1) / W.shape[2])


def psi(z):
    return z - np.arctan(z)


def energy(c, u_hat):
    """Psi(C) = -sum_j psi(|sum_i c_ij u_hat_j|i|), per batch element."""
    s = np.einsum("bij,bijd->bjd", c, u_hat)
    return -psi(np.sqrt((s * s).sum(-1))).sum(-1)


def margin_loss(labels, lengths, m_plus=0.9, m_minus=0.1, down=0.5):
    T = np.eye(lengths.shape[1])[labels]
    return (T * np.maximum(0, m_plus - lengths) ** 2 + down * (1 - T) * np.maximum(0, lengths - m_minus) ** 2).sum(-1)
