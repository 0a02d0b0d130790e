"""Files in and out (issue 25, items 6-12, 14, 16): damaged or lying .npz files are one error
or the right data, never a partial read, another exception or a huge allocation; writes
replace only regular files, keep the umask and name the file when the disk fails; every
file a suite names is read capped, FIFOs and devices refused."""

import errno
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import error_lines

from repro.cli import main as cli
from repro.config.suite import load
from repro.infra import atomic
from repro.infra.files import InputFileError, check_npz, read_capped, read_npz
from repro.results import per_seed
from repro.run import runner
from repro.sampling.samples import SampleSet, SamplesFileError, parse_seeds

SMALL = """
name: files
version: 1
steps: 4
search: {methods: [], budgets: []}
baselines: [{technique: fewer-steps, keep: [2]}]
evaluation: {seeds: "0:16", metrics: ["rfid:digits-cnn"], batch_size: 16, latency: false,
             grid: 0}
tracking: {enabled: false}
experiments:
  - {name: a, model: digits-ddpm}
"""


def one_line_error(capsys, argv: list[str], code: int = 2) -> str:
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err, err
    return err


def _per_seed_file(path: Path) -> tuple[per_seed.PerSeed, dict]:
    data = per_seed.PerSeed(
        np.arange(16),
        {"digits-cnn": np.random.default_rng(0).random((16, 8), dtype=np.float32)},
        {"acc:digits-cnn": (np.arange(16) % 3 == 0) * 1.0},
    )
    key = {"run": "F N", "seeds": list(range(16))}
    per_seed.save(path, data, key)
    return data, key


def _same(a: per_seed.PerSeed, b: per_seed.PerSeed) -> bool:
    return (
        np.array_equal(a.seeds, b.seeds)
        and a.features.keys() == b.features.keys()
        and a.values.keys() == b.values.keys()
        and all(np.array_equal(a.features[k], b.features[k]) for k in a.features)
        and all(np.array_equal(a.values[k], b.values[k]) for k in a.values)
    )


def _damage(path: Path, member: str, offset: int = 0, value: int = 0xFF) -> None:
    """Overwrite one byte of ``member``'s stored data (0xFF at the start of a deflate stream
    is an invalid block type: zlib.error, where the old readers stopped)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    name, extra = (
        int.from_bytes(data[info.header_offset + k : info.header_offset + k + 2], "little")
        for k in (26, 28)
    )
    data[info.header_offset + 30 + name + extra + offset] = value
    path.write_bytes(bytes(data))


# -- 6. damaged npz: the right data or one error; a key reads only when the file does ---------
def test_random_byte_corruptions_give_the_data_or_one_error(tmp_path):
    path = tmp_path / "row.npz"
    data, key = _per_seed_file(path)
    whole = path.read_bytes()
    rng = random.Random(25)
    outcomes = {"data": 0, "error": 0}
    for _ in range(200):
        damaged = bytearray(whole)
        for _ in range(rng.choice((1, 1, 2, 5))):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        stored = SampleSet.stored_key(path)
        try:
            loaded = per_seed.load(path)
        except per_seed.PerSeedError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            assert stored is None  # a row whose file does not read is not finished
            outcomes["error"] += 1
        else:
            assert _same(loaded, data) and stored == key
            outcomes["data"] += 1
    assert outcomes["error"] > 100 and outcomes["data"] > 0, outcomes


def test_random_corruptions_of_a_compressed_samples_file_are_one_error(tmp_path):
    path = tmp_path / "s.npz"
    images = np.random.default_rng(1).integers(0, 8, (8, 8, 8, 1), dtype=np.uint8)
    fields = {
        "images": images,
        "seeds": np.arange(8),
        "model": np.array("digits-ddpm"),
        "schedule": np.array("F F"),
        "steps": np.array(2),
        "guidance": np.array(np.nan),
    }
    np.savez_compressed(path, **fields)
    whole = path.read_bytes()
    rng = random.Random(16)
    for _ in range(100):
        damaged = bytearray(whole)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        try:
            loaded = SampleSet.load(path)
        except SamplesFileError as error:
            assert str(path) in str(error) and "\n" not in str(error)
        else:
            assert np.array_equal(loaded.images, images) and loaded.steps == 2


def test_deflate_damage_to_a_per_seed_file_is_one_error(tmp_path):
    path = tmp_path / "row.npz"
    _, key = _per_seed_file(path)
    _damage(path, "features:digits-cnn.npy")
    assert SampleSet.stored_key(path) is None
    with pytest.raises(per_seed.PerSeedError, match="unreadable per-seed file"):
        per_seed.load(path)


def test_a_damaged_central_directory_cannot_hide_members(tmp_path):
    """A central directory entry whose comment length swallows the entries after it: zipfile
    lists fewer members without complaint; the reader refuses instead of losing arrays."""
    path = tmp_path / "row.npz"
    _per_seed_file(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        start = archive.start_dir

    def entry_size(at: int) -> int:
        return 46 + sum(int.from_bytes(data[at + k : at + k + 2], "little") for k in (28, 30, 32))

    swallowed = entry_size(start + entry_size(start))  # the second entry becomes a comment
    data[start + 32 : start + 34] = swallowed.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.namelist()) < 5  # what zipfile (and np.load) would read
    with pytest.raises(per_seed.PerSeedError, match="damaged .npz"):
        per_seed.load(path)


@pytest.mark.timeout(300)
def test_a_damaged_per_seed_file_is_made_again_on_resume(tmp_path, capsys):
    """Its key reads but its features do not: `repro gate` on it is one line; the row is
    unfinished, made again on resume, and the verdicts read it."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(SMALL)
    run_dir = runner.run_suite(load(suite), results_root=tmp_path / "r", run_id="x")
    row = run_dir / "per_seed" / "a" / "fewer-steps-2.npz"
    before = per_seed.load(row)
    _damage(row, "features:digits-cnn.npy")
    worse = tmp_path / "worse"  # a copy whose row got worse: the gate reads its per-seed data
    shutil.copytree(run_dir, worse)
    results = json.loads((worse / "results.json").read_text())
    for entry in results["rows"]:
        entry["metrics"] = {k: v + 1000 for k, v in entry["metrics"].items()}
    (worse / "results.json").write_text(json.dumps(results))
    err = one_line_error(capsys, ["gate", str(worse), str(run_dir)])
    assert f"{worse / row.relative_to(run_dir)}" in err
    runner.run_suite(load(suite), results_root=tmp_path / "r", run_id="x")
    assert _same(per_seed.load(row), before)
    assert json.loads((run_dir / "results.json").read_text())["verdicts"] is not None


# -- 11. header shapes checked before allocation -------------------------------------------
def _lying_npz(
    path: Path,
    declared: tuple,
    data: bytes,
    compress: int = zipfile.ZIP_STORED,
    **others: np.ndarray,
) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": declared}
    )
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr("images.npy", header.getvalue() + data)
        for name, array in others.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_file_declaring_more_images_than_it_holds_is_refused_unallocated(tmp_path, compress):
    path = _lying_npz(
        tmp_path / "s.npz",
        (20_000_000, 16, 16, 1),
        bytes(5 << 20),
        compress,
        seeds=np.arange(4),
        model=np.array("digits-ddpm"),
    )
    tracemalloc.start()
    try:
        with pytest.raises(SamplesFileError, match=r"declares|holds"):
            SampleSet.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{peak / 2**30:.2f} GiB allocated"


def test_a_deflated_member_cannot_declare_more_than_deflate_can_hold(tmp_path):
    path = tmp_path / "x.npz"
    np.savez_compressed(path, features=np.zeros(1 << 16))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("features.npy")
    assert info.compress_size < 4000
    data[archive.start_dir + 24 : archive.start_dir + 28] = (0xF << 28).to_bytes(4, "little")
    path.write_bytes(bytes(data))  # the central directory's uncompressed size: 3.75 GiB
    with pytest.raises(InputFileError, match=f"declares {0xF << 28} bytes in"):
        check_npz(path)


# -- 7, 8, 14. writes ----------------------------------------------------------------------------
def _targets(tmp_path: Path) -> dict[str, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link, fifo, folder = tmp_path / "link", tmp_path / "fifo", tmp_path / "folder"
    link.symlink_to(victim)
    os.mkfifo(fifo)
    folder.mkdir()
    return {"symlink": link, "FIFO": fifo, "directory": folder}


def test_writes_refuse_to_replace_anything_but_a_regular_file(tmp_path):
    targets = _targets(tmp_path)
    for kind, path in targets.items():
        with (
            pytest.raises(atomic.TargetError, match=f"is a {kind}; refusing"),
            atomic.atomic_path(path) as tmp,
        ):
            tmp.write_text("new")
    assert targets["symlink"].is_symlink() and (tmp_path / "victim.txt").read_text() == "keep me"
    assert stat.S_ISFIFO(os.lstat(targets["FIFO"]).st_mode) and targets["directory"].is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link", "victim.txt"]


@pytest.mark.parametrize("kind", ["symlink", "FIFO"])
def test_report_out_on_a_symlink_or_fifo_is_one_line_and_leaves_it(tmp_path, capsys, kind):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(
        json.dumps({"schema": "flexiffusion-repro/results@1", "run_id": "x", "rows": []})
    )
    target = _targets(tmp_path)[kind]
    for form in ([], ["--format", "html"]):
        err = one_line_error(capsys, ["report", str(run), *form, "--out", str(target)])
        assert f"--out: {target} is a {kind}" in err
    assert stat.S_ISLNK(os.lstat(target).st_mode) or stat.S_ISFIFO(os.lstat(target).st_mode)
    assert (tmp_path / "victim.txt").read_text() == "keep me"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_keep_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.atomic_save_npz(tmp_path / "a.npz", x=np.arange(3))
        with atomic.atomic_path(tmp_path / "b.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    for name in ("a.npz", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


def test_a_failing_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(atomic.WriteFailed) as caught, atomic.atomic_path(path) as tmp:
        tmp.write_text("new")
    assert str(caught.value) == f"cannot write {path}: No space left on device"
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_disk_full_during_a_run_is_one_line_and_the_rerun_resumes(tmp_path):
    """A real full disk: a 1 MiB tmpfs as --results in a private mount namespace; the run
    stops with one line naming the file, and after the tmpfs grows the same command
    finishes."""
    results = tmp_path / "results"
    results.mkdir()
    if subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k t {results}"],
        capture_output=True,
    ).returncode:
        pytest.skip("no private mount namespace here (unshare -rm) for a small tmpfs")
    suite = tmp_path / "suite.yaml"
    suite.write_text(SMALL)
    repro = f"{sys.executable} -m repro run {suite} --results {results} --run-id x -q"
    script = (
        f"mount -t tmpfs -o size=64k t {results} && {{ {repro} 2>{tmp_path / 'err'}; "
        f"echo $? > {tmp_path / 'code'}; }}; mount -o remount,size=64m {results} && "
        f"{repro} && cp {results}/files/x/results.json {tmp_path}"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "REPRO_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "err").read_text()
    assert (tmp_path / "code").read_text().strip() == "1" and len(err.splitlines()) == 1, err
    assert (
        err.startswith(f"repro: failed: cannot write {results}/")
        and "No space left on device" in err
    )
    assert len(json.loads((tmp_path / "results.json").read_text())["rows"]) == 2


# -- 12. capped reads, no FIFOs or devices -------------------------------------------------------
def test_capped_reads_refuse_fifos_devices_and_large_files(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: opening it for a plain read would block for ever
    with pytest.raises(InputFileError, match="is a FIFO, not a regular file"):
        read_capped(fifo, 100)
    with pytest.raises(InputFileError, match="is a character device"):
        read_capped("/dev/zero", 100)
    (tmp_path / "big").write_bytes(bytes(101))
    with pytest.raises(InputFileError, match="larger than 100 bytes"):
        read_capped(tmp_path / "big", 100)
    with pytest.raises(InputFileError, match="is a FIFO"):
        read_npz(fifo)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["suite", "cost_table", "cost_table /dev/zero", "prompts"])
def test_suite_files_that_are_fifos_or_devices_are_one_line(tmp_path, capsys, where):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    target = "/dev/zero" if "/dev/zero" in where else str(fifo)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SMALL.replace("steps: 4\n", f"steps: 4\ncost_table: {target}\n"))
    argv = ["validate", str(fifo if where == "suite" else suite)]
    if where == "prompts":  # validate does not read prompts; sampling does
        argv = [
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--prompts",
            target,
            "--out",
            str(tmp_path / "s.npz"),
        ]
    err = one_line_error(capsys, argv)
    assert ("character device" if "/dev/zero" in where else "is a FIFO") in err


# -- 16. command-line values that used to be tracebacks -----------------------------------------
def test_sample_out_on_a_directory_is_refused_before_sampling(tmp_path, capsys):
    err = one_line_error(
        capsys,
        [
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--seeds",
            "0:2",
            "--out",
            str(tmp_path),
        ],
    )
    assert f"--out: {tmp_path} is a directory" in err


def test_search_log_on_a_directory_is_one_line(tmp_path, capsys):
    err = one_line_error(
        capsys,
        [
            "search",
            "--model",
            "digits-ddpm",
            "--steps",
            "4",
            "--budget",
            "2",
            "--log",
            str(tmp_path),
        ],
    )
    assert f"--log: {tmp_path} is a directory" in err


def test_negative_threads_are_one_line(tmp_path, capsys):
    err = one_line_error(
        capsys,
        [
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--threads",
            "-5",
            "--out",
            str(tmp_path / "s.npz"),
        ],
    )
    assert "--threads must be 0" in err


@pytest.mark.parametrize(
    "seeds", ["18446744073709551615", "0:18446744073709551616", "-9223372036854775809,1"]
)
def test_seeds_outside_int64_are_one_line(tmp_path, capsys, seeds):
    with pytest.raises(ValueError, match="outside"):
        parse_seeds(seeds)
    err = one_line_error(
        capsys,
        [
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            f"--seeds={seeds}",
            "--out",
            str(tmp_path / "s.npz"),
        ],
    )
    assert "outside" in err and not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_results_on_a_broken_symlink_is_one_line(tmp_path, capsys, kind):
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "nowhere" if kind == "dangling" else link)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SMALL)
    err = one_line_error(capsys, ["run", str(suite), "--results", str(link)])
    assert f"--results: {link} is a symlink that leads nowhere" in err


@pytest.mark.parametrize("content", ["list", "tensor"])
def test_convert_of_a_checkpoint_that_is_not_a_dict_is_one_line(tmp_path, capsys, content):
    import torch

    checkpoint = tmp_path / "model.ckpt"
    torch.save([1, 2] if content == "list" else torch.zeros(3), checkpoint)
    err = one_line_error(capsys, ["convert", "adm", str(checkpoint), str(tmp_path / "out")])
    assert f"{checkpoint} holds a" in err and not (tmp_path / "out").exists()


def test_eval_of_a_corrupted_compressed_samples_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.npz"
    np.savez_compressed(
        path,
        images=np.zeros((4, 16, 16, 1), np.uint8),
        seeds=np.arange(4),
        model=np.array("digits-ddpm"),
        schedule=np.array("F F"),
        steps=np.array(2),
        guidance=np.array(np.nan),
    )
    _damage(path, "images.npy")
    err = one_line_error(
        capsys, ["eval", str(path), "--metric", "rfid:digits-cnn", "--teacher", str(path)]
    )
    assert f"cannot read samples file {path}" in err
