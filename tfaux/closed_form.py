"""A bi-level problem whose inner solution is closed-form, for checking hypergradients.

Inner: weighted ridge regression
    L_t(theta, phi) = (1/n) sum_i softplus(phi_i) (x_i.theta - y_i)^2 + lam |theta|^2
    theta*(phi) = (X^T W X + n lam I)^{-1} X^T W y,   W = diag(softplus(phi))
Outer: L_dev(theta) = (1/m) sum_j (x_j.theta - y_j)^2.
dL_dev(theta*(phi))/dphi is checked by central finite differences in float64.
"""

import dataclasses

import numpy as np
import tensorflow as tf


def softplus(z):
    return np.log1p(np.exp(z))


@dataclasses.dataclass
class WeightedRidge:
    n: int = 24
    d: int = 5
    m: int = 12
    lam: float = 0.1
    seed: int = 0

    def __post_init__(self):
        rng = np.random.default_rng(self.seed)
        self.x = rng.normal(size=(self.n, self.d))
        self.y = self.x @ rng.normal(size=self.d) + 0.5 * rng.normal(size=self.n)
        self.x_dev = rng.normal(size=(self.m, self.d))
        self.y_dev = self.x_dev @ rng.normal(size=self.d) * 0.5 + 0.1 * rng.normal(size=self.m)
        self.phi = rng.normal(scale=0.5, size=self.n)

    def theta_star(self, phi=None):
        w = softplus(self.phi if phi is None else phi)
        a = self.x.T @ (w[:, None] * self.x) + self.n * self.lam * np.eye(self.d)
        return np.linalg.solve(a, self.x.T @ (w * self.y))

    def outer(self, phi):
        return np.mean((self.x_dev @ self.theta_star(phi) - self.y_dev) ** 2)

    def finite_difference(self, eps=1e-6):
        grad = np.zeros(self.n)
        for i in range(self.n):
            e = np.zeros(self.n)
            e[i] = eps
            grad[i] = (self.outer(self.phi + e) - self.outer(self.phi - e)) / (2 * eps)
        return grad

    def hessian(self):
        """grad^2_theta L_t (constant in theta)."""
        w = softplus(self.phi)
        return 2 * self.x.T @ (w[:, None] * self.x) / self.n + 2 * self.lam * np.eye(self.d)

    def tf_losses(self, theta, phi):
        """(train_loss_fn, dev_loss_fn) reading tf.Variables theta [d] and phi [n] (float64)."""
        x, y, xd, yd = map(tf.constant, (self.x, self.y, self.x_dev, self.y_dev))

        def train_loss():
            r = tf.linalg.matvec(x, theta) - y
            return tf.reduce_mean(tf.nn.softplus(phi) * tf.square(r)) + self.lam * tf.reduce_sum(tf.square(theta))

        def dev_loss():
            return tf.reduce_mean(tf.square(tf.linalg.matvec(xd, theta) - yd))

        return train_loss, dev_loss


def relative_error(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))
