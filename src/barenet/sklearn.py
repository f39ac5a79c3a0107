"""NetClassifier: a scikit-learn classifier trained by barenet's own fit (NumPy only).

scikit-learn is an optional extra (`pip install 'barenet[sklearn]'`); `import barenet` never
imports this module. Parameters follow barenet's config names; fitted attributes follow
scikit-learn's MLPClassifier (classes_, n_features_in_, loss_curve_, n_iter_).
"""

from __future__ import annotations

import json
import os

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .losses import softmax_cross_entropy
from .model import Sequential, mlp
from .training import Callback, EarlyStopping, History, TrainState, fit, split_validation

# scikit-learn spells activations in lower case (MLPClassifier: 'relu', 'tanh', 'logistic').
ACTIVATIONS = {"relu": "ReLU", "leakyrelu": "LeakyReLU", "tanh": "Tanh", "logistic": "Sigmoid",
               "sigmoid": "Sigmoid", "gelu": "GELU", "silu": "SiLU"}
SCHEDULES = ("cosine", "constant", "onecycle")
SKLEARN_KEY = "sklearn"          # model-file metadata: the estimator's params and classes


class _Printer(Callback):
    def on_epoch_end(self, epoch, logs):
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items()
                          if k not in ("epoch", "time") and isinstance(v, float))
        print(f"epoch {logs['epoch']}: {shown}", flush=True)


class NetClassifier(ClassifierMixin, BaseEstimator):
    """A barenet network as a scikit-learn classifier.

    X: any numeric array (N, n_features), or images (N, 28, 28) / (N, 1, 28, 28), which are
    flattened to rows (a conv `layers` list sees them as images again). uint8 input is scaled
    by 1/255 as everywhere in barenet; other dtypes are used as they are. y: any labels.

    hidden_layer_sizes, activation, dropout, batch_norm: the MLP built when `layers` is None.
    layers: a barenet architecture (list of dicts, as in a config's [model] layers); the
        first Dense may omit n_in and the last Dense n_out, filled in from the data.
    optimizer: 'sgd' (Nesterov momentum 0.9), 'adam', 'adamw' or 'rmsprop'; lr its rate;
        weight_decay its L2 penalty. schedule: 'cosine' (over `epochs`), 'onecycle' or
        'constant'; partial_fit always uses the constant rate.
    augment: None or a dict of barenet.config.AugmentConfig fields (shift, rotate, ...),
        for square images only.
    early_stopping: hold out validation_fraction of the training set (as MLPClassifier does)
        and stop when its accuracy has not improved for n_iter_no_change epochs, keeping the
        best weights. random_state fixes initialization, shuffling, dropout and augmentation.
    """

    def __init__(self, hidden_layer_sizes=(256, 128), *, layers=None, activation="relu",
                 dropout=0.0, batch_norm=False, optimizer="sgd", lr=0.1, weight_decay=0.0,
                 batch_size=128, epochs=20, schedule="cosine", augment=None,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=5,
                 random_state=None, verbose=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.layers = layers
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.schedule = schedule
        self.augment = augment
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.verbose = verbose

    # scikit-learn protocol

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        return tags

    def fit(self, X, y) -> NetClassifier:
        """Train a new network for `epochs` epochs on (X, y); returns self."""
        x, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        self._start(x.shape[1])
        validation, callbacks = None, []
        if self.early_stopping:
            n_val = max(1, round(len(x) * float(self.validation_fraction)))
            if n_val >= len(x):
                raise ValueError(f"early_stopping holds out {n_val} of n_samples = {len(x)}: "
                                 f"too few samples to train on")
            (x, labels), validation = split_validation(x, labels, n_val, rng=self._seed + 1)
            callbacks.append(EarlyStopping(self.model_, patience=self.n_iter_no_change))
        self._train(x, labels, self.epochs, self._schedule(), validation, callbacks)
        return self

    def partial_fit(self, X, y, classes=None) -> NetClassifier:
        """One epoch over (X, y), continuing the network, optimizer and random state.

        The first call needs `classes` (every label that will ever appear), as in
        scikit-learn's MLPClassifier.partial_fit.
        """
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        x, y = self._validate(X, y, reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(np.asarray(classes))
            self._start(x.shape[1])
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differ from the first call's {self.classes_}")
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"labels {unknown[:5]!r} are not in classes {self.classes_!r}")
        labels = np.searchsorted(self.classes_, y)
        self._train(x, labels, self._state.epoch + 1, None, None, [])
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(N, n_classes) probabilities, columns in the order of classes_."""
        check_is_fitted(self, "model_")
        x, _ = self._validate(X, None, reset=False)
        if len(self.classes_) == 1:
            return np.ones((len(x), 1), dtype=np.float32)
        return self.model_.predict_proba(x)

    def predict_log_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    # Model files (safetensors + JSON, never pickle)

    def save(self, path: str | os.PathLike) -> None:
        """A barenet model file: `barenet evaluate/export` read it; load() restores self."""
        from .serialize import save_model
        check_is_fitted(self, "model_")
        save_model(path, self.model_, **{SKLEARN_KEY: self._description()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> NetClassifier:
        """A fitted NetClassifier from a file written by save() (or `barenet train`)."""
        from .serialize import load_model
        model, meta = load_model(path)
        if not isinstance(model, Sequential):
            raise ValueError(f"{path}: an ensemble, not a single network")
        return cls._restore(model, meta.get(SKLEARN_KEY))

    # Pickling (scikit-learn's persistence convention): the network travels as the bytes of
    # a barenet model file, not as pickled layer objects.

    def __getstate__(self):
        state = dict(self.__dict__)
        if "model_" in state:
            from .modelfile import model_metadata, to_bytes
            model, trainer = state.pop("model_"), state.pop("_state")
            arrays, scalars = trainer.optimizer.state_dict()
            tensors = {**model.state_arrays(), **{f"optimizer.{k}": v for k, v in arrays.items()}}
            meta = model_metadata(model, optimizer=scalars, epoch=trainer.epoch,
                                  rng=trainer.rng.bit_generator.state,
                                  dropout_rngs=[layer.rng.bit_generator.state
                                                for layer in _random_layers(model)])
            state["_model_file"] = to_bytes(tensors, meta)     # with its checksum, as a file
        return state

    def __setstate__(self, state):
        blob = state.pop("_model_file", None)
        self.__dict__.update(state)
        if blob is None:
            return
        from safetensors.numpy import load
        arrays = load(blob)
        meta = json.loads(_metadata(blob)["barenet"])
        self.model_ = Sequential.from_architecture(meta["architecture"])
        self.model_.load_state_arrays({k: v for k, v in arrays.items()
                                       if not k.startswith("optimizer.")})
        self.model_.eval()
        for layer, rng_state in zip(_random_layers(self.model_), meta["dropout_rngs"]):
            layer.rng.bit_generator.state = rng_state
        optimizer = self._build_optimizer()
        optimizer.load_state_dict({k[len("optimizer."):]: v for k, v in arrays.items()
                                   if k.startswith("optimizer.")}, meta["optimizer"])
        rng = np.random.default_rng()
        rng.bit_generator.state = meta["rng"]
        self._state = TrainState(self.model_, optimizer, rng, self._state_history(),
                                 epoch=meta["epoch"])

    # Internals

    def _validate(self, X, y, *, reset: bool):
        # Images (N, 28, 28) become rows (N, 784) before scikit-learn's checks see them.
        if isinstance(X, np.ndarray) and X.ndim >= 3:
            X = X.reshape(len(X), -1)
        dtype = None if getattr(X, "dtype", None) == np.uint8 else np.float32
        if reset:
            self._input_dtype = "uint8" if dtype is None else "float32"
        if y is None:
            return validate_data(self, X, reset=reset, dtype=dtype), None
        return validate_data(self, X, y, reset=reset, dtype=dtype)

    def _start(self, n_features: int) -> None:
        """A new network, optimizer and random stream for n_features -> len(classes_)."""
        self._seed = int(check_random_state(self.random_state).randint(2 ** 31 - 1))
        rng = np.random.default_rng(self._seed)
        self.model_ = self._build_model(n_features, len(self.classes_), rng)
        # Each dropout layer draws from its own stream (mlp() hands them the init rng), so a
        # pickled estimator restores every stream and continues exactly.
        for i, layer in enumerate(_random_layers(self.model_)):
            layer.rng = np.random.default_rng([self._seed, i + 1])
        self._state = TrainState(self.model_, self._build_optimizer(), rng, History())
        self.loss_curve_, self.history_, self.n_iter_ = [], {}, 0

    def _build_model(self, n_in: int, n_out: int, rng) -> Sequential:
        if self.layers is not None:
            spec = [dict(entry) for entry in self.layers]
            dense = [e for e in spec if e.get("type") == "Dense"]
            if dense:
                dense[0].setdefault("n_in", n_in)
                dense[-1].setdefault("n_out", n_out)
            model = Sequential.from_architecture(spec, rng=rng)
        else:
            activation = ACTIVATIONS.get(str(self.activation).lower(), self.activation)
            model = mlp(n_in, [int(h) for h in np.atleast_1d(self.hidden_layer_sizes)], n_out,
                        activation=activation, dropout=float(self.dropout),
                        batch_norm=bool(self.batch_norm), rng=rng)
        probe = model.eval().logits(np.zeros((1, n_in), dtype=np.float32))
        if probe.shape != (1, n_out):
            raise ValueError(f"layers output {probe.shape[1]} values per row; there are "
                             f"{n_out} classes")
        return model.train()

    def _build_optimizer(self):
        from . import optim
        params, lr = self.model_.parameters(), float(self.lr)
        name = str(self.optimizer).lower()
        if name == "sgd":
            return optim.SGD(params, lr, momentum=0.9, nesterov=True,
                             weight_decay=self.weight_decay)
        kinds = {"adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop}
        if name not in kinds:
            raise ValueError(f"optimizer must be one of sgd, {', '.join(kinds)}; "
                             f"got {self.optimizer!r}")
        return kinds[name](params, lr, weight_decay=self.weight_decay)

    def _schedule(self):
        from .optim import CosineWarmup, OneCycle
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}; "
                             f"got {self.schedule!r}")
        if self.schedule == "cosine":
            return CosineWarmup(self.epochs)
        return OneCycle(self.epochs) if self.schedule == "onecycle" else None

    def _augmenter(self):
        if not self.augment:
            return None
        from .config import AugmentConfig
        from .data.augment import Augmenter
        return Augmenter(AugmentConfig(**self.augment))

    def _train(self, x, labels, epochs, schedule, validation, callbacks) -> None:
        if self.verbose:
            callbacks = [*callbacks, _Printer()]
        state = self._state
        state.base_lr = state.optimizer.lr = float(self.lr)    # partial_fit: constant rate
        fit(self.model_, softmax_cross_entropy, state.optimizer, x, labels, epochs=epochs,
            batch_size=int(self.batch_size), validation=validation, callbacks=callbacks,
            schedule=schedule, state=state, augment=self._augmenter())
        self.history_ = state.history.history
        self.loss_curve_ = list(self.history_.get("loss", []))
        self.n_iter_ = state.epoch

    def _description(self) -> dict:
        classes = self.classes_
        kind = "str" if classes.dtype.kind in "USO" else classes.dtype.str
        return {"params": _jsonable(self.get_params()), "classes": classes.tolist(),
                "input": getattr(self, "_input_dtype", "float32"),
                "classes_dtype": kind, "n_features_in": int(self.n_features_in_),
                "feature_names_in": list(getattr(self, "feature_names_in_", [])) or None}

    def _state_history(self):
        return History([dict(zip(self.history_, row)) for row in zip(*self.history_.values())])

    @classmethod
    def _restore(cls, model: Sequential, description: dict | None) -> NetClassifier:
        n_in = _input_size(model)
        if description is None:          # a model file from `barenet train`: digits 0..9
            est = cls()
            n_out = model.eval().logits(np.zeros((1, n_in), np.uint8)).shape[1]
            est.classes_, est.n_features_in_ = np.arange(n_out), n_in
        else:
            params = dict(description["params"])
            if isinstance(params.get("hidden_layer_sizes"), list):
                params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
            est = cls(**params)
            kind = description["classes_dtype"]
            est.classes_ = np.asarray(description["classes"],
                                      dtype=None if kind == "str" else np.dtype(kind))
            est.n_features_in_ = description["n_features_in"]
            est._input_dtype = description.get("input", "float32")
            if description.get("feature_names_in"):
                est.feature_names_in_ = np.asarray(description["feature_names_in"], dtype=object)
        est.model_ = model.eval()
        est._seed = 0
        est._state = TrainState(model, est._build_optimizer(), np.random.default_rng(0),
                                History())
        est.loss_curve_, est.history_, est.n_iter_ = [], {}, 0
        return est


def _random_layers(model: Sequential) -> list:
    return [layer for layer in model.layers if hasattr(layer, "rng")]


def _metadata(blob: bytes) -> dict:
    import struct
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n])["__metadata__"]


def _input_size(model: Sequential) -> int:
    first = model.layers[0]
    if hasattr(first, "n_in"):
        return int(first.n_in)
    return 784                           # a conv network on 28x28 images


def _jsonable(params: dict) -> dict:
    out = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, np.generic):
            value = value.item()
        elif key == "random_state" and not (value is None or isinstance(value, int)):
            value = None                 # a RandomState instance: its draws are not saved
        out[key] = value
    return out
