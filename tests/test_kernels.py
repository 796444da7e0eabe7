"""The C++ extension loader (``metods_evo.kernels``): names that follow the sources and flags, the quiet fallback."""

from metods_evo import kernels


def test_the_hash_follows_source_bytes_and_flags(tmp_path):
    (tmp_path / "a.cpp").write_text("int a;\n")
    first = kernels.source_hash(tmp_path, ["-O2"])
    assert len(first) == 12 and first == kernels.source_hash(tmp_path, ["-O2"])
    assert kernels.source_hash(tmp_path, ["-O3"]) != first
    assert kernels.source_hash(tmp_path, ["-O2"], ["mujoco 3.3.1"]) != first
    (tmp_path / "notes.txt").write_text("not a source")
    assert kernels.source_hash(tmp_path, ["-O2"]) == first
    (tmp_path / "a.h").write_text("#pragma once\n")
    with_header = kernels.source_hash(tmp_path, ["-O2"])
    assert with_header != first
    (tmp_path / "a.h").write_text("#pragma once\n// edited\n")
    assert kernels.source_hash(tmp_path, ["-O2"]) != with_header


def test_a_source_that_does_not_compile_gives_none_and_a_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(kernels.KERNEL_DIR_ENV, str(tmp_path / "cache"))
    sources = tmp_path / "csrc"
    sources.mkdir()
    (sources / "broken.cpp").write_text("this is not C++\n")
    module, reason = kernels.load("broken.cpp", "test kernel", cflags=["-O0"], source_dir=sources)
    assert module is None and reason
    # built from a copy in its own folder, named by the sources' and flags' hash
    folder = tmp_path / "cache" / f"metods_evo_broken_{kernels.source_hash(sources, ['-O0'], [], [], [])}"
    assert (folder / "src" / "broken.cpp").read_text() == "this is not C++\n"


def test_the_package_ships_every_source_the_loaders_name():
    names = {p.name for p in kernels.SOURCE_DIR.iterdir()}
    assert {"plastic_step.cpp", "plastic_step.h", "harlow_rollout.cpp", "mujoco_batch.cpp"} <= names
