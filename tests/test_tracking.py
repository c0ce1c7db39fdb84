"""W&B and the local logs: a real offline W&B run read back record by record, the run id a requeued SLURM
job reuses, the CSV log's iteration axis, and the compare helper's table and plot."""
import glob
import json
import socket
import struct
import time
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_only

from gan_lightning.cli import main
from gan_lightning.compare import higher_is_better, read_run, summarise
from gan_lightning.compare import main as compare_main
from gan_lightning.tracking import WandbSettings, quiet_wandb_init, repository_root, wandb_host, wandb_reachable

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--config", str(REPO / "configs/overlays/smoke.yaml")]


def wandb_records(run_dir: Path, wait: float = 60.0) -> list:
    """The protobuf records of an offline W&B run's ``run-*.wandb`` file, once its ``exit`` record is written.

    ``wandb.finish()`` can return before W&B's service process has written the run's last records (seen under
    load: the file lacked its last history rows and the exit record), so this reads again until the exit record
    is there, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        records = read_wandb_file(next(run_dir.glob("run-*.wandb")))
        if by_kind(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_wandb_file(path: Path) -> list:
    """The records of a ``run-*.wandb`` file (LevelDB log format: 32 KiB blocks of [crc32, length, type] framed
    chunks after W&B's 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def by_kind(records, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history_rows(records) -> list[dict]:
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in h.item}
            for h in by_kind(records, "history")]


def not_logged_in(monkeypatch, tmp_path: Path) -> None:
    """No WANDB_API_KEY, and a netrc without the W&B host; W&B's own WANDB_MODE unset."""
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    (tmp_path / "netrc").write_text("machine example.org login user password secret\n")


def wandb_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "W&B" in str(w.message)]


@pytest.mark.slow
def test_an_offline_wandb_run_holds_the_config_metrics_pictures_and_outputs(tmp_path, data_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")   # an array member of a requeued job: id and group are stable
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    not_logged_in(monkeypatch, tmp_path)   # the config's mode auto: offline, and one warning says how to sync
    with pytest.warns(UserWarning) as record:
        main(["fit", "--config", str(REPO / "configs/aae_semi_100.yaml"), *SMOKE, "--data.init_args.data_dir",
              str(data_dir), "--run_dir", str(tmp_path / "run"), "--wandb.tags", "[smoke]"])
    [warning] = wandb_warnings(record)
    sync = warning.split("`wandb sync ")[1].split("`")[0]
    run_dir = next((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert glob.glob(sync) == [str(run_dir)]   # the command the warning gives syncs this run
    records = wandb_records(run_dir)

    run = by_kind(records, "run")[0]
    assert (run.run_id, run.run_group, run.display_name) == ("77_3", "array-77", "aae_semi_100/run")
    assert list(run.tags) == ["smoke"]
    config = {item.key: json.loads(item.value_json) for c in by_kind(records, "config") for item in c.update}
    assert config["model"]["class_path"] == "gan_lightning.models.SemiSupervisedAAE"   # the full resolved config
    assert config["model"]["init_args"]["n_classes"] == 10 and config["data"]["init_args"]["n_labelled"] == 100
    assert config["trainer"]["max_epochs"] == 1 and "wandb" not in config

    rows = history_rows(records)
    train = [r for r in rows if "train/d_loss" in r]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]            # smoke: log_every_n_steps 1, 4 batches
    assert all({"train/reconstruction", "train/e_loss", "train/c_loss", "images_seen"} <= set(r) for r in train)
    held_out = next(r for r in rows if "val/error" in r)
    assert held_out["iteration"] == 4 and 0 <= held_out["val/error"] <= 1
    pictures = {key.split("/")[1]: row for row in rows for key in row if key.endswith("/_type")
                and row[key] == "image-file"}
    assert {"samples", "reconstructions", "interpolations"} <= set(pictures)
    for name, row in pictures.items():
        assert row["iteration"] == 4 and (run_dir / "files" / row[f"val/{name}/path"]).is_file()

    summary = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
               for s in by_kind(records, "summary") for item in s.update}
    assert summary["outputs/checkpoints"] == str(tmp_path / "run" / "checkpoints")
    assert by_kind(records, "exit"), "wandb.finish() was not called"

    # The CSV log is written beside it, with the iteration on every row the model logs.
    csv_series = read_run(tmp_path / "run")
    assert [x for x, _ in csv_series["train/d_loss"]] == [1, 2, 3, 4] and csv_series["val/error"][0][0] == 4


def test_auto_mode_is_online_only_when_logged_in_and_reachable_and_the_id_survives_a_requeue(tmp_path, monkeypatch):
    not_logged_in(monkeypatch, tmp_path)
    monkeypatch.setattr("gan_lightning.tracking.wandb_reachable", lambda timeout=3.0: True)
    with pytest.warns(UserWarning, match="not logged in"):
        assert WandbSettings().resolved_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")   # after `wandb login`
    assert wandb_host() == ("api.wandb.ai", 443)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # online: no warning
        assert WandbSettings().resolved_mode() == "online"
    monkeypatch.setattr("gan_lightning.tracking.wandb_reachable", lambda timeout=3.0: False)
    with pytest.warns(UserWarning, match="api.wandb.ai:443 is unreachable"):
        assert WandbSettings().resolved_mode() == "offline"
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    first = WandbSettings(mode="offline").logger(str(tmp_path), "gan")
    requeued = WandbSettings(mode="offline").logger(str(tmp_path), "gan")   # the same job, restarted
    assert first._wandb_init["id"] == requeued._wandb_init["id"] == "991"
    assert first._wandb_init["resume"] == "allow" and first._wandb_init["group"] is None
    assert WandbSettings(mode="offline", id="mine").logger(str(tmp_path), "gan")._wandb_init["id"] == "mine"
    with pytest.raises(ValueError, match="wandb.mode"):
        WandbSettings(mode="sometimes")


def test_without_a_login_auto_and_online_log_offline_and_rank_0_warns_once_how_to_sync(tmp_path, monkeypatch):
    not_logged_in(monkeypatch, tmp_path)
    monkeypatch.setattr("gan_lightning.tracking.wandb_reachable", lambda timeout=3.0: pytest.fail("probed, no login"))
    for mode in ("auto", "online"):
        with pytest.warns(UserWarning) as record:
            logger = WandbSettings(mode=mode).logger(str(tmp_path / "run"), "gan")
        assert logger._offline and logger._wandb_init["mode"] == "offline"
        assert [str(w.message) for w in record] == [
            "gan_lightning: W&B is not logged in (`wandb login` or WANDB_API_KEY), so this run logs to W&B offline: "
            f"`wandb sync {tmp_path}/run/wandb/offline-run-*` uploads it later; --wandb.mode off turns W&B off"]
    monkeypatch.setattr(rank_zero_only, "rank", 1)   # another DDP process: the same choice, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert WandbSettings().logger(str(tmp_path / "run"), "gan")._offline


def test_when_the_wandb_host_refuses_auto_and_online_log_offline_and_name_the_host(tmp_path, monkeypatch):
    with socket.socket() as free:   # a local port that nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert not wandb_reachable()
    for mode in ("auto", "online"):
        with pytest.warns(UserWarning) as record:
            logger = WandbSettings(mode=mode).logger(str(tmp_path), "gan")
        assert logger._offline and logger._wandb_init["mode"] == "offline"
        [warning] = wandb_warnings(record)
        assert warning.startswith(f"gan_lightning: W&B's host 127.0.0.1:{port} is unreachable, so this run logs to "
                                  f"W&B offline: `wandb sync {tmp_path}/wandb/offline-run-*` uploads it later")


def test_a_name_lookup_that_hangs_counts_as_unreachable_within_the_timeout(monkeypatch):
    """Compute nodes without internet often have a resolver that answers late or never; the probe must not wait."""
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.invalid")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(30) or [])  # late, then no address
    start = time.monotonic()
    assert not wandb_reachable(timeout=0.5)
    assert time.monotonic() - start < 5


def test_when_logged_in_and_the_wandb_host_answers_auto_and_online_log_online(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as server:   # the W&B host: it accepts connections
        port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
        (tmp_path / "netrc").write_text("machine 127.0.0.1 login user password secret\n")   # `wandb login` there
        assert wandb_host() == ("127.0.0.1", port) and wandb_reachable()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for mode in ("auto", "online"):
                logger = WandbSettings(mode=mode).logger(str(tmp_path), "gan")
                assert not logger._offline and logger._wandb_init["mode"] == "online"


def test_wandb_mode_from_the_environment_decides_auto_but_not_a_mode_the_config_names(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    monkeypatch.setattr("gan_lightning.tracking.wandb_reachable", lambda timeout=3.0: True)
    assert WandbSettings().logger(str(tmp_path), "gan") is None   # WANDB_MODE=disabled (conftest): no W&B run
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandbSettings().resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert WandbSettings().resolved_mode() == "online"
    assert WandbSettings(mode="off").logger(str(tmp_path), "gan") is None
    assert WandbSettings(mode="offline").resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    # The config's mode goes to wandb.init, where it wins over W&B's variable.
    assert WandbSettings(mode="online").logger(str(tmp_path), "gan")._wandb_init["mode"] == "online"
    assert WandbSettings(mode="offline").logger(str(tmp_path), "gan")._wandb_init["mode"] == "offline"


@pytest.mark.parametrize("kind", ["ours", "ours outside a git checkout", "Lightning's, as the CLI passes it"])
def test_a_wandb_run_starts_logs_and_finishes_without_a_warning(tmp_path, monkeypatch, kind):
    """`make train` printed W&B's "The anonymous setting has no effect and will be removed" (Lightning passes
    anonymous=None) and "git root runs/bigan does not exist" (W&B looked for the repository from the run folder,
    which it had not created yet): neither tells a user anything to do. W&B gets the code's checkout instead."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    monkeypatch.chdir(tmp_path)   # the configs' run folders are relative: runs/<name>
    monkeypatch.delenv("WANDB_MODE")
    checkout = kind != "ours outside a git checkout"
    if not checkout:
        monkeypatch.setattr("gan_lightning.tracking.repository_root", lambda start=None: None)
    said, termwarn = [], wandb.termwarn

    def record(text, *args, **kwargs):   # every W&B warning, also one it prints once per process (repeat=False)
        said.append(text)
        termwarn(text, *args, **kwargs)

    monkeypatch.setattr(wandb, "termwarn", record)
    if kind.startswith("Lightning"):
        logger = LightningWandbLogger(save_dir="runs/gan", offline=True, mode="offline")
        quiet_wandb_init(logger._wandb_init)   # what GANCLI.instantiate_trainer does to a config's WandbLogger
    else:
        logger = WandbSettings(mode="offline").logger("runs/gan", "gan")
    run = logger.experiment
    try:
        git_root = run.settings.git_root
        logger.log_metrics({"iteration": 1, "train/d_loss": 0.5})
    finally:   # a run left open would be the next test's (wandb.run)
        run.finish()
    assert said == []
    assert git_root == (str(REPO) if checkout and repository_root() else None)
    assert list((tmp_path / "runs/gan/wandb").glob("offline-run-*"))


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))
    path.write_text(",".join(keys) + "\n" + "\n".join(",".join(str(r.get(k, "")) for k in keys) for r in rows) + "\n")
    return path


def test_compare_tables_each_runs_best_and_last_and_plots_their_curves(tmp_path, capsys):
    # Run a was resumed: two versions, read in order; run b logged accuracy too.
    write_csv(tmp_path / "a/logs/version_0/metrics.csv", [
        {"epoch": 0, "step": 9, "iteration": 3, "val/error": 0.5, "train/d_loss": 1.0},
        {"epoch": 0, "step": 18, "iteration": 6, "val/error": 0.3}])
    write_csv(tmp_path / "a/logs/version_1/metrics.csv", [{"epoch": 1, "step": 27, "iteration": 9, "val/error": 0.4}])
    write_csv(tmp_path / "b/logs/version_0/metrics.csv", [
        {"epoch": 0, "iteration": 3, "val/error": 0.6, "val/cluster_accuracy": 0.2},
        {"epoch": 1, "iteration": 6, "val/error": 0.2, "val/cluster_accuracy": 0.7},
        {"epoch": 2, "iteration": 9, "val/error": 0.25, "val/cluster_accuracy": 0.6}])
    assert read_run(tmp_path / "a")["val/error"] == [(3, 0.5), (6, 0.3), (9, 0.4)]
    compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp.png")])
    out = capsys.readouterr().out
    assert "val/error  (lower is better)" in out
    assert "a  best 0.3 at iteration 6   last 0.4" in out and "b  best 0.2 at iteration 6   last 0.25" in out
    assert (tmp_path / "cmp.png").stat().st_size > 10_000
    assert summarise([(1, 0.2), (2, 0.7), (3, 0.6)], "val/cluster_accuracy")["best"] == 0.7
    assert higher_is_better("val/probe_1nn") and higher_is_better("val/modes") and higher_is_better("val/high_quality")
    assert not higher_is_better("val/fd_fashion_classifier") and not higher_is_better("val/reverse_kl")
    with pytest.raises(ValueError, match="no run logged val/fid"):
        compare_main([str(tmp_path / "a"), "--metrics", "val/fid"])
    with pytest.raises(FileNotFoundError, match="no metrics.csv"):
        compare_main([str(tmp_path / "missing")])


def write_protocol(run: Path, version: int = 0, **record) -> None:
    """The record ImageMetrics writes beside a run's metrics.csv (``eval_protocol`` in ``hparams.yaml``)."""
    import yaml

    base = {"name": "trainsplit10k", "n_samples": 10000, "dataset": "fashion_mnist", "reference": "train",
            "reference_size": 10000, "extractor": "fashion_classifier (sha256 1a2b3c)", "data_resize": "none",
            "extractor_resize": "none"}
    (run / f"logs/version_{version}/hparams.yaml").write_text(yaml.dump({"latent_dim": 64, "data_shape": (1, 28, 28),
                                                                 "eval_protocol": {**base, **record}}))


def test_compare_never_ranks_scores_of_different_protocols_together(tmp_path, capsys):
    """trainsplit10k (10,000 samples against 10,000 training images) and train50k (50,000 against the whole
    training set) measure different things: a lower FD under one is not a better model than under the other."""
    for name, fd in (("small", 30.0), ("full", 20.0), ("small_too", 25.0)):
        write_csv(tmp_path / name / "logs/version_0/metrics.csv",
                  [{"epoch": 0, "iteration": 10, "val/fd_fashion_classifier": fd, "val/error": fd / 100}])
    write_protocol(tmp_path / "small")
    write_protocol(tmp_path / "small_too")
    write_protocol(tmp_path / "full", name="train50k", n_samples=50000, reference="train_full", reference_size=60000)
    compare_main([str(tmp_path / n) for n in ("small", "full", "small_too")] + ["--out", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    error, fd = out.split("val/fd_fashion_classifier", 1)
    assert fd.startswith("  2 blocks, one per protocol, not ranked against each other (they differ in name, "
                         "n_samples, reference, reference_size)")
    small, full = fd.split("[trainsplit10k, fashion_classifier (sha256 1a2b3c)]")[1].split("[train50k")
    # within trainsplit10k the better of its two runs is marked; the train50k run (lower FD) is alone in its block
    assert "small_too  best 25" in small and "<- best" in small.split("small_too")[1]
    assert "full       best 20" in full and "<- best" not in full
    # a figure no protocol defines is ranked across all runs, as before
    assert "<- best" in error.split("full")[1].split("\n")[0]
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_runs_without_a_protocol_record_are_ranked_with_no_run(tmp_path, capsys):
    """Two runs without a record may have used any two protocols: each is a block of its own."""
    for name, fid in (("recorded", 12.0), ("unrecorded", 10.0), ("unrecorded_too", 11.0)):
        write_csv(tmp_path / name / "logs/version_0/metrics.csv",
                  [{"epoch": 0, "iteration": 10, "val/fid_inception": fid}])
    write_protocol(tmp_path / "recorded", name="train50k")
    compare_main([str(tmp_path / n) for n in ("recorded", "unrecorded", "unrecorded_too")]
                 + ["--out", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert "3 blocks, one per protocol, not ranked against each other (a run did not record its protocol)" in out
    assert out.count("val/fid_inception [protocol not recorded]") == 2 and "<- best" not in out


def test_a_run_resumed_under_another_protocol_is_ranked_with_no_run(tmp_path, capsys):
    """Its best may come from one protocol and its last from another: shown on its own, never ranked."""
    for name in ("resumed", "steady"):
        for version in (0, 1):
            write_csv(tmp_path / name / f"logs/version_{version}/metrics.csv", [
                {"epoch": version, "iteration": 10 * (version + 1), "val/fd_fashion_classifier": 30.0 - version}])
    write_protocol(tmp_path / "resumed")
    for name, version, protocol in (("resumed", 1, "train50k"), ("steady", 0, "trainsplit10k"),
                                    ("steady", 1, "trainsplit10k")):
        write_protocol(tmp_path / name, version, name=protocol)
    compare_main([str(tmp_path / "resumed"), str(tmp_path / "steady"), "--out", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert "(a run changed its protocol while it ran)" in out
    assert "[changed during the run: trainsplit10k, fashion_classifier (sha256 1a2b3c), then train50k, " in out
    assert "<- best" not in out
