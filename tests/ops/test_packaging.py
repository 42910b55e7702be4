"""The package outside a checkout, and the locks it is deployed from.

The wheel is built from a copy of the sources pyproject.toml names (no stale `build/` of the
checkout can leak into it), installed into a new virtual environment, and its `rlm-loop` is run
from an empty directory. To stay offline and fast, that environment sees the dependencies already installed
in the project's `.venv` through a `.pth` path entry, which adds the directory to sys.path but
not the editable install's finder: the package itself comes from the wheel alone, and pip
installs it with `--no-index`, so the wheel's declared dependencies must all be satisfied.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from packaging.requirements import Requirement

from integration.infra.embedded_redis import free_port
from integration.store.schema import MIGRATIONS, alembic_config

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def copy_sources(to: Path) -> None:
    """What the build reads, as pyproject.toml names it: packages, modules, readme."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    to.mkdir()
    for name in ("pyproject.toml", PYPROJECT["project"]["readme"],
                 *(f"{module}.py" for module in setuptools["py-modules"])):
        shutil.copy2(ROOT / name, to / name)
    for pattern in setuptools["packages"]["find"]["include"]:
        for package in ROOT.glob(pattern.rstrip("*")):
            shutil.copytree(package, to / package.name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A new virtual environment with the built wheel installed; its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    copy_sources(source)
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                "--wheel-dir", base / "dist", source)
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("rlm_loop_returns-*.whl"))

    venv = base / "venv"
    made = run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "project-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", wheel)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


@pytest.fixture
def empty_dir(tmp_path) -> Path:
    here = tmp_path / "empty"
    here.mkdir()
    return here


def rlm_loop(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATABASE_", "REDIS_", "MERCHANTS_", "LOOP_", "RLM_", "PYTHON"))
           and k not in ("DATA_DIR", "APP_ENV", "ADMIN_TOKEN")}
    env["DATABASE_URL"] = f"sqlite:///{cwd / 'service.db'}"
    nobody = f"http://127.0.0.1:{free_port()}"  # Loop and RLM: nothing listens (whatever `make up` runs)
    env.update(LOOP_BASE_URL=nobody, RLM_BASE_URL=nobody)
    return run(bin_dir / "rlm-loop", *args, cwd=cwd, env=env)


def test_the_wheel_carries_the_migrations_and_runs_from_an_empty_directory(installed, empty_dir):
    where = run(installed / "python", "-c", "import integration, integration.store.schema as s; "
                "print(integration.__file__); print(s.MIGRATIONS)", cwd=empty_dir)
    package, migrations = where.stdout.split()
    assert package.startswith(str(installed.parent)), "the package must come from the wheel"
    assert sorted(p.name for p in Path(migrations, "versions").glob("*.py")) == sorted(
        p.name for p in (MIGRATIONS / "versions").glob("*.py"))

    before = rlm_loop(installed, empty_dir, "status", "52393555")
    assert before.returncode == 1
    assert "no database at" in before.stderr and "run `rlm-loop init-db`" in before.stderr
    assert not (empty_dir / "service.db").exists()  # asking created nothing

    init = rlm_loop(installed, empty_dir, "init-db")
    assert init.returncode == 0, init.stderr
    assert "database schema is up to date" in init.stdout

    doctor = rlm_loop(installed, empty_dir, "doctor")
    assert "Traceback" not in doctor.stdout + doctor.stderr
    lines = {line.split()[1]: line for line in doctor.stdout.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")}
    assert lines["database"].startswith("ok") and lines["schema"].startswith("ok"), doctor.stdout
    # No Loop or RLM sandbox answers here: those two checks, and only those, fail.
    failed = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1:3] for line in failed] == [["demo:", "Loop"], ["demo:", "RLM"]], doctor.stdout
    assert doctor.returncode == 1

    after = rlm_loop(installed, empty_dir, "status", "52393555")
    assert (after.returncode, after.stderr.strip()) == (1, "Error: no return 52393555 in the database")

    up = rlm_loop(installed, empty_dir, "up")
    assert up.returncode == 1 and "`up` is for development" in up.stderr
    assert "Traceback" not in up.stderr


def test_the_cli_names_the_fix_for_a_database_with_no_tables(cli, tmp_path):
    (tmp_path / "empty.db").touch()
    for command in (["status", "1"], ["retry", "1"], ["redecide", "1"], ["replay", "1"]):
        result = cli(*command, env={"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
        assert result.exit_code == 1, command
        assert "the database has no tables yet" in result.output
        assert "run `rlm-loop init-db`" in result.output


def test_the_root_alembic_ini_and_init_db_run_the_same_migrations():
    release = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    packaged = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert Path(release.dir).resolve() == Path(packaged.dir).resolve() == MIGRATIONS
    assert release.get_current_head() == packaged.get_current_head()


def test_the_release_command_migrates_from_the_repository_root(tmp_path):
    release = (ROOT / "Procfile").read_text().split("release: ", 1)[1].splitlines()[0]
    assert release == "alembic upgrade head"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'release.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(release, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"-> {ScriptDirectory.from_config(alembic_config('sqlite://')).get_current_head()}," in done.stderr


# --- the locks ----------------------------------------------------------------------------------
def pins(lock: str) -> dict[str, str]:
    """name -> version of every package in a lock, checking that each carries its hashes."""
    found = {}
    for entry in re.split(r"\n(?=\S)", (ROOT / lock).read_text()):  # a package and its lines
        if not entry.strip() or entry.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", entry)
        assert match, f"{lock}: not an exact pin: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{lock}: {match.group(1)} has no hash"
        found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def declared(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        found += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return found


@pytest.mark.parametrize("lock, extras", [("requirements.txt", ("postgres",)),
                                          ("requirements-dev.txt", ("postgres", "dev"))])
def test_each_lock_pins_with_hashes_what_pyproject_declares(lock, extras):
    locked = pins(lock)
    for requirement in declared(*extras):
        name = requirement.name.lower().replace("_", "-")
        assert name in locked, f"{lock} lacks {name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {name}=={locked[name]}, pyproject.toml wants {requirement.specifier}: run `make lock`")


def test_the_dev_lock_agrees_with_what_heroku_installs():
    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
