"""gemmlab.data: the digits split, the course's pickle, MNIST IDX files, normalisation and errors."""

import numpy as np
import pytest
import torch
from conftest import idx_bytes, write_idx, write_pickle

from gemmlab.data import DataError, Dataset, load_dataset, load_digits, load_mnist_idx, load_mnist_pickle, normalize

# ---------------------------------------------------------------------------------------------
# Helpers that write small files in the formats the loaders read


def mnist_arrays(rng, sizes=(50, 20, 10), features=784):
    """((x, y), (x, y), (x, y)) shaped like the course's pickle: float32 in [0, 1], int64 labels."""
    return tuple(
        (rng.random((n, features), dtype=np.float32), rng.integers(0, 10, size=n).astype(np.int64)) for n in sizes
    )


def write_idx_dir(directory, rng, n_train=6, n_valid=4, gz=False, dotted=False):
    """A directory of the four MNIST IDX files with random 28x28 images; returns the arrays written."""
    directory.mkdir(exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_valid, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_valid, dtype=np.uint8),
    }
    for name, array in arrays.items():
        if dotted:
            name = name.replace("-idx", ".idx")
        write_idx(directory / (name + (".gz" if gz else "")), idx_bytes(array))
    return arrays


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# Digits


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_digits_shapes_and_dtypes(digits):
    assert isinstance(digits, Dataset)
    assert len(digits.x_train) + len(digits.x_valid) == 1797
    assert len(digits.x_valid) == round(1797 * 0.2)
    assert digits.x_train.shape[1] == digits.x_valid.shape[1] == digits.n_features == 64
    assert digits.n_classes == 10
    assert digits.x_train.dtype == digits.x_valid.dtype == torch.float32
    assert digits.y_train.dtype == digits.y_valid.dtype == torch.int64
    assert digits.y_train.shape == (len(digits.x_train),) and digits.y_valid.shape == (len(digits.x_valid),)
    for y in (digits.y_train, digits.y_valid):
        assert int(y.min()) >= 0 and int(y.max()) <= 9
    assert set(digits.y_train.tolist()) == set(range(10))
    assert float(digits.x_train.min()) >= 0.0 and float(digits.x_train.max()) <= 1.0


def test_digits_split_is_reproducible_per_seed(digits):
    again = load_digits(seed=0)
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_valid, digits.y_valid)
    other = load_digits(seed=1)
    assert not torch.equal(other.x_train, digits.x_train)


def test_digits_split_is_a_partition(digits):
    """Train and valid together are exactly the full dataset, each image once (so none is in both)."""
    from sklearn.datasets import load_digits as sklearn_digits

    full = sklearn_digits()
    expected = np.column_stack([full.data / 16.0, full.target]).astype(np.float32)
    got = torch.cat([
        torch.column_stack([digits.x_train, digits.y_train.float()]),
        torch.column_stack([digits.x_valid, digits.y_valid.float()]),
    ]).numpy()
    sort = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731 - rows in lexicographic order
    np.testing.assert_array_equal(sort(got), sort(expected))


def test_digits_valid_fraction():
    ds = load_digits(valid_fraction=0.5, seed=3)
    assert len(ds.x_valid) == round(1797 * 0.5)
    with pytest.raises(ValueError):
        load_digits(valid_fraction=1.0)


# ---------------------------------------------------------------------------------------------
# The course's pickle


@pytest.mark.parametrize("name, compress", [("mnist.pkl.gz", True), ("mnist.pkl", False)])
def test_pickle_round_trip(tmp_path, rng, name, compress):
    (train, valid, _test) = arrays = mnist_arrays(rng)
    ds = load_mnist_pickle(write_pickle(tmp_path / name, arrays, compress=compress))
    assert ds.n_features == 784 and ds.name == "mnist"
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train.numpy(), train[0])
    np.testing.assert_array_equal(ds.y_train.numpy(), train[1])
    np.testing.assert_array_equal(ds.x_valid.numpy(), valid[0])
    np.testing.assert_array_equal(ds.y_valid.numpy(), valid[1])


# ---------------------------------------------------------------------------------------------
# IDX files


@pytest.mark.parametrize("gz, dotted", [(False, False), (True, False), (False, True), (True, True)])
def test_idx_round_trip(tmp_path, rng, gz, dotted):
    arrays = write_idx_dir(tmp_path / "mnist", rng, gz=gz, dotted=dotted)
    ds = load_mnist_idx(tmp_path / "mnist")
    assert ds.n_features == 784
    assert ds.x_train.dtype == torch.float32 and ds.y_valid.dtype == torch.int64
    images = arrays["train-images-idx3-ubyte"]
    expected = torch.from_numpy(images.reshape(len(images), -1)).float() / 255
    assert torch.equal(ds.x_train, expected)
    assert ds.x_valid.shape == (4, 784)
    np.testing.assert_allclose(ds.x_valid.numpy() * 255, arrays["t10k-images-idx3-ubyte"].reshape(4, -1), atol=1e-4)
    assert ds.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert ds.y_valid.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


# ---------------------------------------------------------------------------------------------
# Malformed inputs: DataError naming the file


def test_missing_pickle(tmp_path):
    with pytest.raises(DataError, match="nope.pkl.gz"):
        load_mnist_pickle(tmp_path / "nope.pkl.gz")


def test_missing_idx_file_in_directory(tmp_path, rng):
    write_idx_dir(tmp_path, rng)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path)


def test_missing_idx_directory(tmp_path):
    with pytest.raises(DataError, match="absent"):
        load_mnist_idx(tmp_path / "absent")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"\x01\x02" + b[2:], "magic"),  # not an IDX file
        (lambda b: b[:2] + b"\x0d" + b[3:], "type 0x0d"),  # floats, not unsigned bytes
        (lambda b: b[:3] + b"\x02" + b[4:], "dimensions"),  # wrong number of dimensions
        (lambda b: b[:-5], "expected 4704 data bytes"),  # truncated data
        (lambda b: b[:10], "truncated IDX header"),  # truncated header
        (lambda b: b"", "empty"),
    ],
)
def test_malformed_idx_images(tmp_path, rng, damage, message):
    arrays = write_idx_dir(tmp_path, rng)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(damage(idx_bytes(arrays["train-images-idx3-ubyte"])))
    with pytest.raises(DataError, match=message) as info:
        load_mnist_idx(tmp_path)
    assert str(target) in str(info.value)


def test_idx_count_mismatch(tmp_path, rng):
    write_idx_dir(tmp_path, rng, n_train=6)
    write_idx(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(DataError, match="6 images and 5 labels") as info:
        load_mnist_idx(tmp_path)
    assert "train-labels-idx1-ubyte" in str(info.value)


def test_idx_labels_out_of_range(tmp_path, rng):
    write_idx_dir(tmp_path, rng, n_valid=4)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 10, 2], dtype=np.uint8)))
    with pytest.raises(DataError, match=r"labels in 0\.\.9") as info:
        load_mnist_idx(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_not_gzip_data_in_gz_file(tmp_path, rng):
    write_idx_dir(tmp_path, rng, gz=True)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz"):
        load_mnist_idx(tmp_path)
    with pytest.raises(DataError, match="mnist.pkl.gz"):
        load_mnist_pickle(write_idx(tmp_path / "mnist.pkl", b"junk").rename(tmp_path / "mnist.pkl.gz"))


def test_truncated_gzip_pickle(tmp_path, rng):
    path = write_pickle(tmp_path / "mnist.pkl.gz", mnist_arrays(rng))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="mnist.pkl.gz"):
        load_mnist_pickle(path)


@pytest.mark.parametrize(
    "make_obj, message",
    [
        (lambda a: {"train": a[0]}, "expected a tuple"),
        (lambda a: (a[0],), "expected a tuple"),
        (lambda a: (a[0], (a[1][0],), a[2]), "valid entry"),
        (lambda a: ((a[0][0].tolist(), a[0][1]), a[1], a[2]), "train entry"),
        (lambda a: ((a[0][0], a[0][1][:-1]), a[1], a[2]), "50 images and 49 labels"),
        (lambda a: ((a[0][0], a[0][1] + 10), a[1], a[2]), r"labels in 0\.\.9"),
        (lambda a: ((a[0][0][:, :100], a[0][1]), a[1], a[2]), "same size"),
        (lambda a: ((a[0][0].reshape(50, 28, 28), a[0][1]), a[1], a[2]), "2-D"),
    ],
)
def test_pickle_wrong_structure(tmp_path, rng, make_obj, message):
    path = write_pickle(tmp_path / "bad.pkl.gz", make_obj(mnist_arrays(rng)))
    with pytest.raises(DataError, match=message) as info:
        load_mnist_pickle(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# normalize


def test_normalize_uses_training_statistics(tmp_path, rng):
    arrays = mnist_arrays(rng)
    # Give valid a clearly different distribution, so its own statistics would give a different result.
    arrays = (arrays[0], (arrays[1][0] * 0.5 + 0.3, arrays[1][1]), arrays[2])
    ds = load_mnist_pickle(write_pickle(tmp_path / "mnist.pkl.gz", arrays))
    out = normalize(ds)
    assert out is not ds and out.name == ds.name
    assert abs(float(out.x_train.mean())) < 1e-5
    assert abs(float(out.x_train.std()) - 1.0) < 1e-5
    mean, std = ds.x_train.mean(), ds.x_train.std()
    torch.testing.assert_close(out.x_valid, (ds.x_valid - mean) / std)
    own = (ds.x_valid - ds.x_valid.mean()) / ds.x_valid.std()
    assert not torch.allclose(out.x_valid, own, atol=1e-2)
    # labels untouched, the input untouched
    assert torch.equal(out.y_train, ds.y_train) and torch.equal(out.y_valid, ds.y_valid)
    np.testing.assert_array_equal(ds.x_train.numpy(), arrays[0][0])


def test_normalize_rejects_constant_training_images():
    x = torch.ones(4, 3)
    ds = Dataset(x, torch.zeros(4, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64), "flat")
    with pytest.raises(DataError, match="flat"):
        normalize(ds)


# ---------------------------------------------------------------------------------------------
# load_dataset


def test_load_dataset_dispatch(tmp_path, rng, digits):
    assert load_dataset().name == "digits"
    assert torch.equal(load_dataset().x_train, digits.x_train)
    arrays = mnist_arrays(rng)
    for name, compress in [("m.pkl.gz", True), ("m.pkl", False)]:
        ds = load_dataset(str(write_pickle(tmp_path / name, arrays, compress=compress)))
        np.testing.assert_array_equal(ds.x_valid.numpy(), arrays[1][0])
    idx = write_idx_dir(tmp_path / "idx", rng)
    ds = load_dataset(tmp_path / "idx")
    assert ds.y_train.tolist() == idx["train-labels-idx1-ubyte"].tolist()


def test_load_dataset_unknown_kind(tmp_path):
    other = tmp_path / "mnist.csv"
    other.write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"mnist\.csv.*unknown dataset kind"):
        load_dataset(other)
    with pytest.raises(DataError, match="missing.npz"):
        load_dataset(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="missing.pkl.gz"):
        load_dataset(tmp_path / "missing.pkl.gz")
