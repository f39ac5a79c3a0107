"""Adversarial digits: a change a person cannot see that flips the network's answer. NumPy only.

The gradient of the loss with respect to the pixels comes from the network's own backward
pass (the same one training uses, asked for one more gradient, in eval mode):

    FGSM (Goodfellow et al. 2015):  x' = clip(x + eps * sign(d loss / d x), 0, 1)
    PGD  (Madry et al. 2018):       repeat  x' = clip(x' + step * sign(d loss / d x')),
                                    then pull x' back into the box |x' - x| <= eps

Pixels are in [0, 1], so eps = 0.1 changes each pixel by at most a tenth of its range.
"""

from __future__ import annotations

import numpy as np

from .losses import softmax_cross_entropy
from .model import as_input

CHUNK = 128


class NoGradient(ValueError):
    """The model has no single backward pass to the input (an ensemble)."""


def loss_gradient(model, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean cross-entropy, d mean loss / d pixels) over all N images.

    images: (N, H, W) uint8 or float in [0, 1]; labels: (N,) int. The gradient has the shape
    of images and the model's dtype, per unit of the scaled [0, 1] pixel. Eval mode (no
    dropout, batch norm on running statistics); overwrites the parameters' grads.
    """
    check_gradient(model)
    labels = np.asarray(labels, np.int64)
    n = len(images)
    params = model.parameters()
    dtype = params[0].data.dtype if params else np.float32        # float64 for gradient checks
    total, grads = 0.0, []
    with model.evaluating():
        for i in range(0, n, CHUNK):
            x = as_input(images[i:i + CHUNK], dtype)                # (B, H, W) in [0, 1]
            logits = model.forward(x)                               # (B, K)
            loss, grad_logits = softmax_cross_entropy(logits, labels[i:i + CHUNK])
            share = len(x) / n                                      # chunk means -> whole mean
            grad_logits *= share
            total += loss * share
            grads.append(model.backward(grad_logits, input_grad=True).reshape(x.shape))
    model.release()                                     # the activations kept for backward
    return total, np.concatenate(grads)


def fgsm(model, images: np.ndarray, labels: np.ndarray, eps: float) -> np.ndarray:
    """One signed-gradient step of size eps: float images in [0, 1], same shape as images."""
    return next(fgsm_sweep(model, images, labels, [eps]))


def fgsm_sweep(model, images: np.ndarray, labels: np.ndarray, eps_values):
    """FGSM at each eps in turn (a generator), from one gradient: the step's direction,
    sign(d loss / d x) at the clean images, does not depend on eps. eps 0 is the images."""
    x = as_input(images)
    step = None
    for eps in eps_values:
        if eps == 0:
            yield x
            continue
        if step is None:
            step = np.sign(loss_gradient(model, x, labels)[1], dtype=np.float32)
        yield np.clip(x + np.float32(eps) * step, 0.0, 1.0)


def pgd(model, images: np.ndarray, labels: np.ndarray, eps: float, steps: int = 10,
        step_size: float | None = None) -> np.ndarray:
    """`steps` FGSM steps of step_size (default eps / 4), each projected back into the
    L-infinity ball of radius eps around the images and into [0, 1]. Deterministic (no
    random start), so the same call gives the same digits."""
    x = as_input(images)
    if eps == 0:
        return x
    step = np.float32(eps / 4 if step_size is None else step_size)
    adv = x.copy()
    for _ in range(steps):
        _, grad = loss_gradient(model, adv, labels)
        adv += step * np.sign(grad, dtype=np.float32)
        np.clip(adv, x - np.float32(eps), x + np.float32(eps), out=adv)
        np.clip(adv, 0.0, 1.0, out=adv)
    return adv


def smallest_flip(model, image: np.ndarray, label: int | None = None, *,
                  eps_max: float = 0.5, resolution: float = 0.005):
    """The smallest FGSM eps (to `resolution`) that changes the prediction for one image.

    image: (H, W); label: the class to move away from (default: the model's own answer).
    Returns (eps, adversarial image, new class), or None when even eps_max keeps the answer.
    All candidate eps go through the network in one batch.
    """
    x = as_input(image[None])                                       # (1, H, W)
    if label is None:
        label = int(model.predict(x)[0])
    _, grad = loss_gradient(model, x, np.array([label]))
    eps = np.arange(1, int(round(eps_max / resolution)) + 1) * resolution     # (E,)
    candidates = np.clip(x + eps[:, None, None].astype(np.float32)
                         * np.sign(grad, dtype=np.float32), 0.0, 1.0)
    predicted = model.predict(candidates)
    flipped = np.flatnonzero(predicted != label)
    if len(flipped) == 0:
        return None
    first = flipped[0]
    return float(eps[first]), candidates[first], int(predicted[first])


def has_gradient(model) -> bool:
    """False for an ensemble: no single backward pass to the input."""
    return hasattr(model, "backward")


def check_gradient(model) -> None:
    """Raise NoGradient (one line for the user) when the model has no gradient to attack."""
    if not has_gradient(model):
        raise NoGradient("an ensemble has no single gradient to attack (its members are "
                         "averaged after the softmax); attack one of its member runs instead")
