"""What the theory predicts, so every measurement can be printed next to its expected value.

Movement. When `removed` of `total` nodes leave, the keys they held must move and no other key
needs to: the ideal moved fraction is removed/total. When `added` nodes join `total`, the new
nodes should end up with their fair share and nothing else should move: added/(total+added).
Consistent hashing achieves this in expectation; modulo hashing moves almost everything.

Balance. Model the hash as random (the standard analysis). With n nodes of v virtual nodes each,
the ring has N = n*v uniform points, and a node owns the sum of v of the N spacings between them:
a Beta(v, N-v) share, which is dominated (in the convex order, so for every Chernoff bound) by
Gamma(v)/N. With m keys (mu = m/n per node on average), a node's key count is Binomial(m, share),
dominated by Poisson(m * share). So each node's count X is bounded by the Gamma-Poisson mixture

    log E[exp(tX)] <= -v * log(1 - (mu/v) * (e^t - 1))        for (mu/v)(e^t - 1) < 1,

and the Chernoff bound P(X >= a) <= exp(-(t*a - K(t))) plus a union bound over the n nodes gives
a max/mean load that is exceeded with probability at most `failure_probability`.
The relative standard deviation of a node's load is sqrt(1/v + 1/mu): 1/sqrt(v) from the arc
lengths, 1/sqrt(mu) from the randomness of which keys exist. More vnodes fix the first part only.
"""

from __future__ import annotations

import math


def ideal_moved_on_remove(total: int, removed: int) -> float:
    """Fraction of keys that must move when `removed` of `total` nodes leave."""
    return removed / total


def ideal_moved_on_add(total: int, added: int) -> float:
    """Fraction of keys that must move when `added` nodes join `total`."""
    return added / (total + added)


def load_relative_std(vnodes: int, keys_per_node: float) -> float:
    """Expected std-dev/mean of per-node key counts on a ring (random-hash model)."""
    return math.sqrt(1 / vnodes + 1 / keys_per_node)


def _log_tail_bound(a: float, mu: float, vnodes: int) -> float:
    """log of min_t exp(-(t*a - K(t))) for the Gamma-Poisson mixture above (0 if useless)."""
    r = mu / vnodes
    upper = math.log1p(1 / r)  # K(t) is finite only for t below this

    def exponent(t: float) -> float:
        return -t * a - vnodes * math.log(1 - r * math.expm1(t))

    lo, hi = 0.0, upper * (1 - 1e-12)
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(200):  # the exponent is convex in t: golden-section search finds the minimum
        x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if exponent(x1) < exponent(x2):
            hi = x2
        else:
            lo = x1
    return min(0.0, exponent((lo + hi) / 2))


def max_load_bound(nodes: int, vnodes: int, keys_per_node: float | None = None,
                   failure_probability: float = 1e-6) -> float:
    """A max/mean load that a random hash exceeds with probability <= failure_probability.

    keys_per_node=None bounds the share of the circle (infinitely many keys): the
    Gamma(v) bound P(G/v >= 1+d) <= exp(-v(d - ln(1+d))).
    """
    target = math.log(failure_probability) - math.log(nodes)
    if keys_per_node is None:
        def log_tail(ratio: float) -> float:
            d = ratio - 1
            return -vnodes * (d - math.log1p(d))
    else:
        mu = keys_per_node

        def log_tail(ratio: float) -> float:
            return _log_tail_bound(ratio * mu, mu, vnodes)
    lo, hi = 1.0, 2.0
    while log_tail(hi) > target:  # grow until the bound holds, then bisect
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if log_tail(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def typical_max_load(nodes: int, vnodes: int, keys_per_node: float, trials: int = 20,
                     seed: int = 0) -> float:
    """Mean max/mean load under the random-hash model, by sampling it (not by hashing anything):
    each node's share is Gamma(v)/(n v), its key count Poisson(m * share). The Chernoff bound
    above is what a test may assert; this is what to expect in a typical run."""
    import numpy as np

    rng = np.random.default_rng(seed)
    maxima = []
    for _ in range(trials):
        shares = rng.gamma(vnodes, size=nodes)
        shares /= shares.sum()
        counts = rng.poisson(keys_per_node * nodes * shares)
        maxima.append(counts.max() / counts.mean())
    return float(np.mean(maxima))
