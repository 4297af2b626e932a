"""Image benchmarks: offline data sets (stacked digits, MNIST and stacked MNIST, CIFAR-10 from a
user's path) and metrics.

Importing this package is cheap: scikit-learn (digits) is imported only when digits are loaded.
The classifier score and Frechet distance in :mod:`gameopt.images.metrics` use gameopt's own
small classifiers and are NOT comparable to published IS/FID; :mod:`gameopt.images.inception`
gives real FID through an optional, maintained backend.
"""

from .cifar10 import (
    CIFAR10_ENV,
    CIFAR10FormatError,
    CIFAR10NotFoundError,
    load_cifar10,
    require_cifar10,
    to_signed_unit,
    write_cifar10_like,
)
from .classifier import (
    LeNet5,
    SmallCNN,
    cifar10_classifier,
    digit_classifier,
    mnist_classifier,
    mnist_second_classifier,
    train_classifier,
)
from .metrics import (
    CIFAR10Evaluator,
    MNISTEvaluator,
    NonFiniteImagesError,
    StackedDigitsEvaluator,
    StackedMNISTEvaluator,
    classifier_score,
    feature_statistics,
    frechet_distance,
    frechet_distance_features,
    mode_histogram,
    mode_kl,
    modes_covered,
    precision_recall,
    shift_images,
    strict_digits,
)
from .mnist import (
    MNIST_ENV,
    MNISTFormatError,
    MNISTNotFoundError,
    StackedMNIST,
    load_mnist,
    mnist_signed,
    write_idx,
)
from .grid import save_grid, tile
from .inception import InceptionUnavailableError, inception_features, inception_fid, inception_score
from .stacked_digits import StackedDigits, digit_images

__all__ = [
    "CIFAR10_ENV",
    "CIFAR10Evaluator",
    "CIFAR10FormatError",
    "CIFAR10NotFoundError",
    "InceptionUnavailableError",
    "LeNet5",
    "MNISTEvaluator",
    "MNIST_ENV",
    "MNISTFormatError",
    "MNISTNotFoundError",
    "NonFiniteImagesError",
    "SmallCNN",
    "StackedDigits",
    "StackedDigitsEvaluator",
    "StackedMNIST",
    "StackedMNISTEvaluator",
    "cifar10_classifier",
    "classifier_score",
    "digit_classifier",
    "digit_images",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_features",
    "inception_features",
    "inception_fid",
    "inception_score",
    "load_cifar10",
    "load_mnist",
    "mode_histogram",
    "mode_kl",
    "mnist_classifier",
    "mnist_second_classifier",
    "mnist_signed",
    "modes_covered",
    "precision_recall",
    "require_cifar10",
    "save_grid",
    "shift_images",
    "strict_digits",
    "tile",
    "to_signed_unit",
    "train_classifier",
    "write_cifar10_like",
    "write_idx",
]
