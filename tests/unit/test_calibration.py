from edgeft.calibration import batches, fingerprint, load_calibration


def test_default_calibration_loads_and_streams_in_batches():
    spec = load_calibration("default")
    texts = [f"text {i}" for i in range(100)]
    got = list(batches(texts, spec.model_copy(update={"num_samples": 70, "batch_size": 32})))
    assert [len(b) for b in got] == [32, 32, 6]
    assert len({t for b in got for t in b}) == 70


def test_calibration_fingerprint_changes_with_samples_and_seed():
    spec = load_calibration("default")
    texts = [f"text {i}" for i in range(500)]
    a = fingerprint(texts, spec)
    assert a == fingerprint(texts, spec)
    assert a != fingerprint(texts, spec.model_copy(update={"seed": 1}))
    full = spec.model_copy(update={"num_samples": 500})
    assert fingerprint(texts, full) != fingerprint(texts[:-1] + ["changed"], full)


def test_shipped_calibration_is_auto_on_train():
    from edgeft.calibration import CalibrationSpec
    from edgeft.targets import REPO_ROOT
    from edgeft.yamlio import load_yaml

    spec = CalibrationSpec.model_validate(load_yaml(REPO_ROOT / "calibration/default.yaml"))
    assert spec.method == "auto" and spec.split == "train"
