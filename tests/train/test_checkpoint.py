"""Tests of cnnblas.checkpoint: atomic .npz writes, pickle-free loads, corrupt files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from cnnblas import checkpoint as ckpt


def sample_sections():
    return {
        "model": {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "0.bias": np.array([0.5, -1.0], np.float64)},
        "optim": {"optimizer": np.array("SGD"), "num_params": 2, "lr": 0.1,
                  "nesterov": False},
    }


def write_checkpoint(path, epoch=3, history=None, metadata=None):
    return ckpt.save_checkpoint(path, sample_sections(), epoch=epoch,
                                metadata=metadata or {"model": {"name": "lenet5"}},
                                history=history or [{"epoch": 1, "loss": 0.5}])


def test_round_trip_is_exact(tmp_path):
    path = write_checkpoint(tmp_path / "run.npz", history=[{"epoch": 1, "loss": 1 / 3}])
    saved = ckpt.load_checkpoint(path)
    assert saved.epoch == 3 and saved.version == ckpt.VERSION
    assert saved.metadata == {"model": {"name": "lenet5"}}
    assert saved.history == [{"epoch": 1, "loss": 1 / 3}]  # floats survive JSON exactly
    for section, state in sample_sections().items():
        assert set(saved.sections[section]) == set(state)
        for key, value in state.items():
            loaded, value = saved.sections[section][key], np.asarray(value)
            assert loaded.dtype == value.dtype and loaded.shape == value.shape
            assert loaded.tobytes() == value.tobytes()
    assert saved.sections["sched"] == {} and saved.sections["rng"] == {}


def test_file_is_a_plain_npz_loadable_without_pickle(tmp_path):
    path = write_checkpoint(tmp_path / "run.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert str(archive["format"]) == ckpt.FORMAT
        assert archive["history"].dtype == np.uint8
        assert "model.0.weight" in archive.files


def test_json_arrays_round_trip_and_reject_garbage():
    value = {"a": [1, 2.5, None, "é"], "big": 2**100}
    array = ckpt.json_to_array(value)
    assert array.dtype == np.uint8 and array.ndim == 1
    assert ckpt.array_to_json(array) == value
    with pytest.raises(ValueError, match="UTF-8 JSON"):
        ckpt.array_to_json(np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(ValueError, match="1-D uint8"):
        ckpt.array_to_json(np.zeros((2, 2), np.float32))


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="'bad'.*pickle"):
        ckpt.save_npz_atomic(path, {"good": np.zeros(2), "bad": np.array([{}], dtype=object)})
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "run.npz")
    before = path.read_bytes()

    def exploding_write_array(handle, array, **options):
        handle.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", exploding_write_array)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(path, epoch=4)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]  # no temporary file left


def test_any_key_is_stored_even_savez_keyword_names(tmp_path):
    arrays = {"file": np.arange(3), "allow_pickle": np.ones(2, np.float32), "a/b.c": np.int64(7)}
    loaded = ckpt.load_npz(ckpt.save_npz_atomic(tmp_path / "keys.npz", arrays))
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        assert loaded[key].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(loaded[key], value)


def test_overwrite_replaces_content(tmp_path):
    path = write_checkpoint(tmp_path / "run.npz", epoch=1)
    write_checkpoint(path, epoch=2)
    assert ckpt.load_checkpoint(path).epoch == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_missing_directory_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_checkpoint(tmp_path / "nowhere" / "run.npz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ckpt.load_checkpoint(tmp_path / "missing.npz")


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file_gives_value_error(tmp_path, keep):
    path = write_checkpoint(tmp_path / "run.npz")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(ValueError, match="run.npz"):
        ckpt.load_checkpoint(path)


def test_corrupted_payload_gives_value_error(tmp_path):
    path = write_checkpoint(tmp_path / "run.npz")
    data = bytearray(path.read_bytes())
    # Flip bytes inside the stored weight array: the zip CRC check catches it.
    offset = bytes(data).index(np.arange(6, dtype=np.float32).tobytes())
    data[offset:offset + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"run\.npz.*(CRC|not a readable)"):
        ckpt.load_checkpoint(path)


def assert_invalid_checkpoint(path):
    """load_checkpoint refuses ``path`` naming it, and never suggests loading pickles."""
    with pytest.raises(ValueError, match="is not a valid cnnblas checkpoint") as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "unsafely" not in message and "pickle.load" not in message
    assert "allow_pickle" not in message


@pytest.mark.parametrize("text", ["hello, not a checkpoint\n", "", "x" * 5000])
def test_text_file_is_not_a_valid_checkpoint(tmp_path, text):
    path = tmp_path / "notes.npz"
    path.write_text(text)
    assert_invalid_checkpoint(path)


def test_flipped_bytes_are_not_a_valid_checkpoint(tmp_path):
    data = write_checkpoint(tmp_path / "run.npz").read_bytes()
    path = tmp_path / "flipped.npz"
    refused = 0
    for offset in range(len(data)):  # every byte, inverted
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            ckpt.load_checkpoint(path)  # a flip in an unchecked zip field can load intact data
        except ValueError:
            assert_invalid_checkpoint(path)
            refused += 1
    assert refused > len(data) // 2


def test_garbage_and_non_npz_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="garbage.npz"):
        ckpt.load_checkpoint(garbage)
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(ValueError, match=r"single.npz is not a valid .*single \.npy"):
        ckpt.load_checkpoint(single)


def test_pickled_entries_are_never_loaded(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, format=np.array(ckpt.FORMAT), payload=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled.npz.*pickle"):
        ckpt.load_checkpoint(path)


def rewrite_without(path, drop=(), replace=None):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key not in drop}
    arrays.update(replace or {})
    np.savez(path, **arrays)


@pytest.mark.parametrize("key", ["format", "version", "epoch", "metadata", "history"])
def test_missing_header_entry(tmp_path, key):
    path = write_checkpoint(tmp_path / "run.npz")
    rewrite_without(path, drop=[key])
    with pytest.raises(ValueError, match=rf"run\.npz.*missing entries \['{key}'\]"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize("replace, message", [
    ({"format": np.array("something else")}, "format is 'something else'"),
    ({"version": np.int64(99)}, "version 99 is not supported"),
    ({"version": np.array([1, 2])}, "'version'.*expected a scalar"),
    ({"epoch": np.int64(-1)}, "'epoch' is negative"),
    ({"metadata": np.frombuffer(b"[1, 2", np.uint8)}, "'metadata' is not valid"),
    ({"history": ckpt.json_to_array({"not": "a list"})}, "'history' a JSON list"),
    ({"stray": np.zeros(1)}, "unexpected checkpoint entry 'stray'"),
    ({"weights.x": np.zeros(1)}, "unexpected checkpoint entry 'weights.x'"),
])
def test_bad_header_values(tmp_path, replace, message):
    path = write_checkpoint(tmp_path / "run.npz")
    rewrite_without(path, replace=replace)
    with pytest.raises(ValueError, match=rf"run\.npz.*{message}"):
        ckpt.load_checkpoint(path)


def test_unknown_section_is_refused_on_save(tmp_path):
    with pytest.raises(ValueError, match="unknown checkpoint section 'weights'"):
        ckpt.save_checkpoint(tmp_path / "x.npz", {"weights": {}}, epoch=0)


def test_written_archive_is_uncompressed_zip(tmp_path):
    path = write_checkpoint(tmp_path / "run.npz")
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        assert archive.testzip() is None
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through a private temporary file, but the result is as readable
    as any other new file (0666 less the umask), not owner-only."""
    import os

    from cnnblas.checkpoint import write_atomic

    mask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "w.bin", lambda handle: handle.write(b"x"))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
