"""Layers written by hand in NumPy: each forward beside its backward, with the equation it
implements. Shapes follow PyTorch (images N×C×H×W, Dense weights out×in, conv weights
F×C×kh×kw), so weights move between the two engines unchanged.

Notation: x the layer input, y its output, g = ∂L/∂y the gradient arriving from above; every
``backward(g)`` stores ∂L/∂θ in ``self.grads`` and returns ∂L/∂x.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


class Layer:
    """A layer: ``params``/``grads`` by name (PyTorch's names), ``buffers`` (running statistics)."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, g: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        return type(self).__name__


class Dense(Layer):
    """y = x Wᵀ + b  (W: out×in).  ∂L/∂W = gᵀx,  ∂L/∂b = Σₙ g,  ∂L/∂x = g W."""

    def __init__(self, n_in: int, n_out: int, dtype: type = np.float32):
        super().__init__()
        self.params = {"weight": np.zeros((n_out, n_in), dtype), "bias": np.zeros(n_out, dtype)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        return x @ self.params["weight"].T + self.params["bias"]

    def backward(self, g: np.ndarray) -> np.ndarray:
        self.grads = {"weight": g.T @ self.x, "bias": g.sum(0)}
        return g @ self.params["weight"]


def _windows(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """A read-only N×C×Ho×Wo×kh×kw view of every kh×kw window of x (no copy: stride tricks)."""
    n, c, h, w = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sc, sh, sw = x.strides
    return as_strided(x, (n, c, ho, wo, kh, kw), (sn, sc, sh * stride, sw * stride, sh, sw), writeable=False)


def _scatter_windows(d: np.ndarray, shape: tuple[int, ...], stride: int) -> np.ndarray:
    """The adjoint of :func:`_windows`: sum the N×C×Ho×Wo×kh×kw window gradients back into an
    N×C×H×W array, one slice per kernel offset (kh·kw vectorised adds, no loop over pixels, no
    np.add.at): ∂L/∂x[i·s+p, j·s+q] += d[i, j, p, q]."""
    n, c, ho, wo, kh, kw = d.shape
    out = np.zeros(shape, d.dtype)
    for p in range(kh):
        for q in range(kw):
            out[:, :, p : p + stride * ho : stride, q : q + stride * wo : stride] += d[:, :, :, :, p, q]
    return out


class Conv2D(Layer):
    """2-D cross-correlation, zero padding, any kernel and stride, as one matrix multiply over
    im2col columns:  y[n,f,i,j] = b[f] + Σ_{c,p,q} W[f,c,p,q] · x_pad[n,c,i·s+p,j·s+q].

    With X the (C·kh·kw)×(N·Ho·Wo) column matrix (built from a stride-tricks view of every
    window, one copy) and G the gradient as F×(N·Ho·Wo):
    y = W X + b,  ∂L/∂W = G Xᵀ,  ∂L/∂b = Σ G,  ∂L/∂X = Wᵀ G  (then col2im: each column entry
    goes back to the pixel it was read from, see :func:`_scatter_windows`).

    Internally the batch is channel-major (C×N×H×W): the columns and the output then need no
    transposing copies, and the NCHW arrays handed on are views of channel-major memory, which
    NumPy's element-wise operations keep, so the next convolution finds them channel-major again.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0, dtype: type = np.float32):
        super().__init__()
        self.k, self.stride, self.padding = kernel, stride, padding
        self.params = {"weight": np.zeros((c_out, c_in, kernel, kernel), dtype), "bias": np.zeros(c_out, dtype)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        p, k, s = self.padding, self.k, self.stride
        xt = x.transpose(1, 0, 2, 3)  # C N H W (a view; contiguous when x came from a convolution)
        xp = np.pad(xt, ((0, 0), (0, 0), (p, p), (p, p))) if p else xt
        win = _windows(xp, k, k, s)  # C N Ho Wo kh kw, a view
        c, n, ho, wo = win.shape[:4]
        self.cols = win.transpose(0, 4, 5, 1, 2, 3).reshape(c * k * k, n * ho * wo)  # the one copy
        self.xp_shape = xp.shape
        f = len(self.params["bias"])
        y = self.params["weight"].reshape(f, -1) @ self.cols + self.params["bias"][:, None]  # F × (N·Ho·Wo)
        return y.reshape(f, n, ho, wo).transpose(1, 0, 2, 3)

    def backward(self, g: np.ndarray) -> np.ndarray:
        n, f, ho, wo = g.shape
        k, p = self.k, self.padding
        g2 = g.transpose(1, 0, 2, 3).reshape(f, -1)  # free when g is channel-major underneath
        w = self.params["weight"]
        self.grads = {"weight": (g2 @ self.cols.T).reshape(w.shape), "bias": g2.sum(1)}
        dcols = (w.reshape(f, -1).T @ g2).reshape(-1, k, k, n, ho, wo).transpose(0, 3, 4, 5, 1, 2)
        dxp = _scatter_windows(dcols, self.xp_shape, self.stride)  # C N H W
        dx = dxp[:, :, p : dxp.shape[2] - p, p : dxp.shape[3] - p] if p else dxp
        return dx.transpose(1, 0, 2, 3)


class MaxPool2D(Layer):
    """y[n,c,i,j] = max_{p,q} x[n,c,i·s+p,j·s+q];  ∂L/∂x is g routed to the first maximum of
    each window in scan order (PyTorch's choice), zero elsewhere.

    Non-overlapping windows (stride = kernel, the usual 2×2) take k² element-wise maxima of
    strided views; overlapping ones gather every window with stride tricks."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.k, self.stride = kernel, stride or kernel

    def _offsets(self, x: np.ndarray, ho: int, wo: int) -> list[np.ndarray]:
        k = self.k
        return [x[:, :, p : p + ho * k : k, q : q + wo * k : k] for p in range(k) for q in range(k)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        k, s = self.k, self.stride
        ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
        if s == k:
            views = self._offsets(x, ho, wo)
            y = views[0].copy()
            for v in views[1:]:
                np.maximum(y, v, out=y)
            self.y = y
            return y
        flat = _windows(x, k, k, s).reshape(*x.shape[:2], ho, wo, -1)
        self.arg = flat.argmax(-1)
        return np.take_along_axis(flat, self.arg[..., None], -1)[..., 0]

    def backward(self, g: np.ndarray) -> np.ndarray:
        k, s = self.k, self.stride
        n, c, ho, wo = g.shape
        if s == k:
            dx = np.zeros_like(self.x)  # keeps x's memory layout
            taken = np.zeros(g.shape, bool)
            for i, v in enumerate(self._offsets(self.x, ho, wo)):
                first = (v == self.y) & ~taken  # the first maximum of each window gets the gradient
                taken |= first
                p, q = divmod(i, k)
                np.multiply(g, first, out=dx[:, :, p : p + ho * k : k, q : q + wo * k : k])
            return dx
        onehot = (np.arange(k * k) == self.arg[..., None]) * g[..., None]
        return _scatter_windows(onehot.reshape(*g.shape, k, k).astype(g.dtype), self.x.shape, self.stride)


class AvgPool2D(Layer):
    """y[n,c,i,j] = (1/k²) Σ_{p,q} x[n,c,i·s+p,j·s+q];  ∂L/∂x[…] += g/k² for every window it is in."""

    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.k, self.stride = kernel, stride or kernel

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x_shape = x.shape
        return _windows(x, self.k, self.k, self.stride).mean(axis=(4, 5))

    def backward(self, g: np.ndarray) -> np.ndarray:
        k = self.k
        d = np.broadcast_to((g / (k * k))[..., None, None], (*g.shape, k, k))
        return _scatter_windows(d, self.x_shape, self.stride)


class Flatten(Layer):
    """y = x reshaped to N × (C·H·W);  ∂L/∂x = g reshaped back."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g.reshape(self.shape)


class Dropout(Layer):
    """Training: y = x·m/(1−p) with m ~ Bernoulli(1−p) (inverted dropout); evaluation: y = x.
    ∂L/∂x = g·m/(1−p)."""

    def __init__(self, p: float, rng: np.random.Generator | None = None):
        super().__init__()
        self.p, self.rng = p, rng or np.random.default_rng(0)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self.mask = None
            return x
        self.mask = (self.rng.random(x.shape) >= self.p).astype(x.dtype) / (1 - self.p)
        return x * self.mask

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g if self.mask is None else g * self.mask


class BatchNorm(Layer):
    """Batch normalisation over every axis but the channel axis 1 (BatchNorm1d on N×C, 2d on
    N×C×H×W).  Training: x̂ = (x − μ_B)/√(σ²_B + ε), y = γx̂ + β, running statistics
    r ← (1−m)r + m·stat (the running variance unbiased, as PyTorch); evaluation uses them.
    Backward (training), with M values per channel:
    ∂L/∂γ = Σ g·x̂,  ∂L/∂β = Σ g,  ∂L/∂x = γ/(M√(σ²+ε)) · (M·g − Σg − x̂·Σ(g·x̂))."""

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1, dtype: type = np.float32):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.params = {"weight": np.ones(channels, dtype), "bias": np.zeros(channels, dtype)}
        self.buffers = {
            "running_mean": np.zeros(channels, dtype),
            "running_var": np.ones(channels, dtype),
            "num_batches_tracked": np.zeros((), np.int64),
        }

    def _shape(self, x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        axes = (0,) + tuple(range(2, x.ndim))
        return axes, (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        axes, shape = self._shape(x)
        if self.training:
            mean, var = x.mean(axes), x.var(axes)
            m = x.size // x.shape[1]
            mom = self.momentum
            self.buffers["running_mean"] = ((1 - mom) * self.buffers["running_mean"] + mom * mean).astype(x.dtype)
            self.buffers["running_var"] = (
                (1 - mom) * self.buffers["running_var"] + mom * var * m / max(m - 1, 1)
            ).astype(x.dtype)
            self.buffers["num_batches_tracked"] = self.buffers["num_batches_tracked"] + 1
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv = 1.0 / np.sqrt(var + self.eps)
        self.xhat = (x - mean.reshape(shape)) * self.inv.reshape(shape)
        self.axes, self.bshape = axes, shape
        return self.params["weight"].reshape(shape) * self.xhat + self.params["bias"].reshape(shape)

    def backward(self, g: np.ndarray) -> np.ndarray:
        axes, shape = self.axes, self.bshape
        gsum, gx = g.sum(axes), (g * self.xhat).sum(axes)
        self.grads = {"weight": gx, "bias": gsum}
        scale = (self.params["weight"] * self.inv).reshape(shape)
        if not self.training:  # statistics are constants: ∂L/∂x = γ g / √(σ²+ε)
            return g * scale
        m = g.size // g.shape[1]
        return scale / m * (m * g - gsum.reshape(shape) - self.xhat * gx.reshape(shape))


class ReLU(Layer):
    """y = max(x, 0);  ∂L/∂x = g·[x > 0]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g * self.mask


class ELU(Layer):
    """y = x for x > 0, α(eˣ − 1) otherwise;  ∂L/∂x = g for x > 0, g·(y + α) otherwise."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.pos = x > 0
        self.y = np.where(self.pos, x, self.alpha * np.expm1(np.minimum(x, 0)))
        return self.y

    def backward(self, g: np.ndarray) -> np.ndarray:
        return np.where(self.pos, g, g * (self.y + self.alpha))


class Tanh(Layer):
    """y = tanh x;  ∂L/∂x = g·(1 − y²)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = np.tanh(x)
        return self.y

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g * (1 - self.y * self.y)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 1/(1 + e⁻ˣ), computed without overflow for large |x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


class Sigmoid(Layer):
    """y = σ(x);  ∂L/∂x = g·y(1 − y)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = _sigmoid(x)
        return self.y

    def backward(self, g: np.ndarray) -> np.ndarray:
        return g * self.y * (1 - self.y)


def log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over axis 1, shifted by the row maximum for stability."""
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


class Softmax(Layer):
    """y_k = e^{x_k}/Σ_j e^{x_j} (over axis 1);  ∂L/∂x = y ⊙ (g − Σ_k g_k y_k)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.y = np.exp(log_softmax(x))
        return self.y

    def backward(self, g: np.ndarray) -> np.ndarray:
        return self.y * (g - (g * self.y).sum(1, keepdims=True))


class SoftmaxCrossEntropy:
    """L = (1/Σₙ w_{yₙ}) Σₙ −w_{yₙ} log softmax(zₙ)_{yₙ}  (w = 1: the plain mean);
    ∂L/∂zₙ = w_{yₙ}(softmax(zₙ) − onehot(yₙ))/Σₙ w_{yₙ}.  Soft targets t (mixup) use
    L = −(1/N) Σₙ Σ_k t_{nk} log softmax(zₙ)_k and ∂L/∂z = (softmax(z) − t)/N."""

    def __init__(self, class_weights: np.ndarray | None = None):
        self.w = class_weights

    def __call__(self, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_softmax(z.astype(np.float64) if z.dtype == np.float64 else z)
        p = np.exp(logp)
        n = len(z)
        if y.ndim == 2:  # soft targets
            return float(-(y * logp).sum() / n), ((p - y) / n).astype(z.dtype)
        w = np.ones(n, z.dtype) if self.w is None else self.w[y].astype(z.dtype)
        total = w.sum()
        loss = float(-(w * logp[np.arange(n), y]).sum() / total)
        grad = p.copy()
        grad[np.arange(n), y] -= 1
        return loss, (grad * (w / total)[:, None]).astype(z.dtype)


class BinaryCrossEntropy:
    """Multi-label: L = −(1/NK) Σ [t log σ(z) + (1−t) log(1−σ(z))], computed as
    max(z,0) − z·t + log(1 + e^{−|z|});  ∂L/∂z = (σ(z) − t)/(NK)."""

    def __call__(self, z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
        t = t.astype(z.dtype)
        loss = float((np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean())
        return loss, ((_sigmoid(z) - t) / z.size).astype(z.dtype)
