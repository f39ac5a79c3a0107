"""The layer contract: what Layer declares for the model, and batch norm's eval-mode backward."""

import inspect

import numpy as np
import pytest

import barenet as bn
from barenet import reference as ref
from barenet.gradcheck import check_layer, numerical_gradient, relative_error
from barenet.layers import Layer
from barenet.registry import LAYERS
from barenet.saliency import input_gradient


def _eval_norm(cls, features, rng, dtype=np.float64):
    """A batch norm in eval mode with running statistics and affine parameters away from 1/0."""
    layer = cls(features, dtype=dtype)
    layer.gamma.data[:] = rng.uniform(0.5, 2.0, features)
    layer.beta.data[:] = rng.standard_normal(features)
    layer.running_mean[:] = rng.standard_normal(features)
    layer.running_var[:] = rng.uniform(0.5, 2.0, features)
    layer.training = False
    return layer


NORMS = [(bn.BatchNorm1d, (5, 3), lambda a: a),
         (bn.BatchNorm2d, (2, 3, 4, 5), ref.channels_as_rows)]


@pytest.mark.parametrize("cls,shape,as_rows", NORMS)
def test_batchnorm_eval_gradcheck(cls, shape, as_rows):
    rng = np.random.default_rng(0)
    layer = _eval_norm(cls, shape[1], rng)
    errors = check_layer(layer, rng.standard_normal(shape), rng=1)
    assert set(errors) == {"input", "gamma", "beta"}
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("cls,shape,as_rows", NORMS)
def test_batchnorm_eval_backward_equals_reference_after_a_train_batch(cls, shape, as_rows):
    """A train step first: backward must use the running statistics, not that batch's."""
    rng = np.random.default_rng(2)
    layer = _eval_norm(cls, shape[1], rng)
    layer.training = True
    layer.forward(rng.standard_normal(shape) * 3.0 + 1.0)
    layer.training = False
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    layer.forward(x)
    dx = layer.backward(g)
    args = (layer.gamma.data, layer.running_mean, layer.running_var, layer.eps)
    dx_ref, dgamma, dbeta = ref.batchnorm_eval_backward(as_rows(g), as_rows(x), *args)
    np.testing.assert_allclose(as_rows(dx), dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.gamma.grad, dgamma, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.beta.grad, dbeta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls,shape,as_rows", NORMS)
def test_batchnorm_eval_backward_float32_and_first_layer(cls, shape, as_rows):
    rng = np.random.default_rng(3)
    layer = _eval_norm(cls, shape[1], rng, dtype=np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    gamma_grad = layer.gamma.grad
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(g).dtype == np.float32
    assert layer.backward(g, input_grad=False) is None
    assert layer.gamma.grad is gamma_grad and layer.gamma.grad.dtype == np.float32


def test_saliency_through_eval_batchnorm2d_is_the_numerical_gradient():
    """input_gradient runs the layers' own backward; BatchNorm2d in eval needs no workaround."""
    rng = np.random.default_rng(4)
    f64 = np.float64
    model = bn.Sequential([bn.Conv2D(1, 2, 3, padding=1, rng=0, dtype=f64),
                           _eval_norm(bn.BatchNorm2d, 2, rng), bn.Tanh(), bn.Flatten(),
                           bn.Dense(2 * 6 * 6, 3, rng=0, dtype=f64)])
    model.train()
    x = rng.uniform(0.0, 1.0, (2, 6, 6))
    grad, chosen = input_gradient(model, x, target=1)
    assert model.training and all(layer.training for layer in model.layers)
    model.eval()
    numeric = numerical_gradient(lambda: float(model.forward(x[:, None])[:, 1].sum()), x)
    assert relative_error(grad, numeric) < 1e-6
    assert list(chosen) == [1, 1]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_declares_what_the_model_reads(name):
    cls = LAYERS[name]
    assert issubclass(cls, Layer) and cls.__name__ == name      # the file's type name
    assert cls.input_ndim in (2, 4)
    assert isinstance(cls.row_parallel, bool)
    assert isinstance(cls.training, bool)
    assert isinstance(cls.uses_batch_sums, bool) and cls.batch_sums is None
    flag = inspect.signature(cls.backward).parameters["input_grad"]
    assert flag.default is True                                 # one name for the flag


def test_layer_defaults():
    assert Layer.input_ndim == 2 and Layer.row_parallel is False and Layer.training is True
    assert Layer.uses_batch_sums is False and Layer.batch_sums is None
    assert bn.Conv2D.input_ndim == 4 and bn.BatchNorm2d.input_ndim == 4
    assert bn.BatchNorm1d.row_parallel and not bn.BatchNorm2d.row_parallel
    assert {name for name, cls in LAYERS.items() if cls.uses_batch_sums} == {
        "BatchNorm1d", "BatchNorm2d"}
    assert "input_grad" in inspect.signature(bn.Sequential.backward).parameters


def _mixed_model():
    model = bn.Sequential(bn.Dense(4, 3, rng=0), bn.Dropout(0.5, rng=0), bn.BatchNorm1d(3))
    model.layers[2].training = False                # e.g. a frozen batch norm
    return model


def test_evaluating_sets_eval_mode_and_restores_each_layers_flag():
    model = _mixed_model()
    with model.evaluating() as same:
        assert same is model
        assert not model.training and not any(layer.training for layer in model.layers)
    assert model.training and [layer.training for layer in model.layers] == [True, True, False]


def test_evaluating_restores_after_an_exception_and_nests():
    model = _mixed_model()
    with pytest.raises(RuntimeError, match="inside"):
        with model.evaluating():
            with model.evaluating():
                assert not any(layer.training for layer in model.layers)
            assert not model.training and not any(layer.training for layer in model.layers)
            raise RuntimeError("inside")
    assert model.training and [layer.training for layer in model.layers] == [True, True, False]
    model.eval()
    with model.evaluating():
        pass
    assert not model.training and not any(layer.training for layer in model.layers)


def test_logits_and_evaluate_leave_the_mode_as_it_was():
    model = _mixed_model()
    x, labels = np.ones((6, 4), np.float32), np.zeros(6, np.int64)
    model.logits(x)
    bn.evaluate(model, x, labels)
    assert model.training and [layer.training for layer in model.layers] == [True, True, False]
    input_gradient(model, x.reshape(6, 2, 2))                   # (N, H, W) images
    assert model.training and [layer.training for layer in model.layers] == [True, True, False]
