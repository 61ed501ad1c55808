"""Without PyAV: training and evaluation work; what encodes or decodes videos says how to
install it, in one line. Each test runs a fresh interpreter in which `import av` fails."""
import json
import subprocess
import sys

from tests.conftest import REPO, tiny_run_options

# Runs `python <script> <args>` with PyAV made unimportable.
WITHOUT_AV = ("import runpy, sys; sys.modules['av'] = None; sys.argv = sys.argv[1:]; "
              "sys.path.insert(0, '.'); runpy.run_path(sys.argv[0], run_name='__main__')")
PACKAGES = ("datasets", "models", "losses", "training", "evaluation", "demo", "util_scripts")


def run_without_av(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_AV, *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)


def assert_one_line_install_error(done: subprocess.CompletedProcess) -> None:
    err = done.stderr.strip()
    assert done.returncode == 2, done.stderr
    assert err.startswith("error:") and "\n" not in err, err
    assert "PyAV" in err and "pip install av" in err


def test_every_module_but_the_video_coder_imports_without_pyav(tmp_path):
    script = tmp_path / "import_all.py"
    script.write_text(
        "import importlib, pkgutil\n"
        "import main\n"
        f"for package in {PACKAGES!r}:\n"
        "    for module in pkgutil.iter_modules([package]):\n"
        "        name = f'{package}.{module.name}'\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except ImportError as e:\n"
        "            print(name, type(e).__name__)\n")
    done = run_without_av(str(script))
    assert done.returncode == 0, done.stderr
    # Only the module that drives PyAV's encoder and filters needs it to be imported.
    assert done.stdout.split("\n")[:-1] == ["util_scripts.jpeg_frames MissingPyAV"]


def test_training_and_evaluation_run_on_existing_hdf5_without_pyav(tiny_dataset, tmp_path):
    argv = tiny_run_options(tiny_dataset, tmp_path / "run", "--sample_size", "16",
                            "--sample_duration", "4", "--n_epochs", "1", "--inference")
    done = run_without_av("main.py", *argv)
    assert done.returncode == 0, done.stderr
    database = json.loads(tiny_dataset["annotation_path"].read_text())["database"]
    validation = sorted(k for k, v in database.items() if v["subset"] == "validation")
    assert sorted(json.loads((tmp_path / "run" / "val.json").read_text())["results"]) == validation


def test_converter_names_pyav_and_its_install_command(tmp_path):
    (tmp_path / "videos" / "Class").mkdir(parents=True)
    (tmp_path / "videos" / "Class" / "v.avi").write_bytes(b"not decoded")
    done = run_without_av("util_scripts/generate_video_hdf5.py", "--dir_path", str(tmp_path / "videos"),
                          "--dst_path", str(tmp_path / "hdf5"), "--dataset", "ucf101")
    assert_one_line_install_error(done)
    assert not (tmp_path / "hdf5").exists()


def test_demo_names_pyav_and_its_install_command(tmp_path):
    done = run_without_av("main.py", "--demo", "--result_path", str(tmp_path))
    assert_one_line_install_error(done)
