"""What makes a one-shot `deskbot send` quick must not change what it does.

The settings of a file validated before come from a cache, and the SIP worker
is started before anything else: an edited file is still checked, a cache file
somebody else could write is not believed, a planted one runs nothing, and a
send that sends nothing leaves no process behind.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import SippPhone, one_phone_config, run_deskbot, wait_for, write_config
from peers import die_with_parent

from deskbot.cli.main import command_of
from deskbot.settings import cache
from deskbot.settings.load import ConfigError, load, validate
from deskbot.settings.schema import Settings


def one_phone(tmp_path: Path, uri: str, extra: str = "") -> Path:
    return one_phone_config(
        tmp_path / "deskbot.toml",
        uri,
        audit=tmp_path / "audit.sqlite3",
        sip="timeout = 1.0",
        extra=extra,
    )


def cache_file(cfg: Path) -> Path:
    where = cache.folder()
    assert where is not None  # conftest gives the session its own cache
    return where / f"{cache.key(cfg.read_bytes(), cfg.absolute().parent)}.pickle"


def plant(cfg: Path, settings: Settings, mode: int = 0o600) -> Path:
    """Put `settings` in the cache under the key of `cfg` as it is now, as this user."""
    planted = cache_file(cfg)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(pickle.dumps(settings))
    planted.chmod(mode)
    return planted


def decoy(cfg: Path, wrong: SippPhone, tmp_path: Path) -> Path:
    """Cache settings that name another phone: a send that reaches `wrong` used the cache."""
    return plant(cfg, _settings_for(wrong.uri("486"), tmp_path))


def test_a_file_validated_once_is_read_from_the_cache_without_validation(sipp, tmp_path):
    """The cached settings are used as they are: the decoy, not the file, says where 486 is."""
    right, wrong = sipp(200), sipp(200)
    cfg = one_phone(tmp_path, right.uri("486"))
    assert run_deskbot("send", "-c", str(cfg), "486", "validated").returncode == 0
    assert [m.body for m in right.wait_received(1)] == [b"validated"]
    assert cache_file(cfg).exists()

    decoy(cfg, wrong, tmp_path)
    result = run_deskbot("send", "-c", str(cfg), "486", "from the cache")
    assert result.returncode == 0, result.stderr
    assert [m.body for m in wrong.wait_received(1)] == [b"from the cache"]
    assert [m.body for m in right.received()] == [b"validated"]


def test_a_cache_hit_in_process_runs_no_validation(tmp_path, monkeypatch):
    from deskbot.settings import load as loading

    monkeypatch.setenv("DESKBOT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = one_phone(tmp_path, "sip:486@127.0.0.1:9")
    runs = []
    real_parse = loading.parse
    monkeypatch.setattr(loading, "parse", lambda *a: runs.append(1) or real_parse(*a))
    first = load(cfg, {}, cached=True)
    again = load(cfg, {}, cached=True)
    assert len(runs) == 1
    assert again.settings == first.settings
    cfg.write_text(cfg.read_text() + "\n# edited\n")
    load(cfg, {}, cached=True)
    assert len(runs) == 2


def test_an_edited_file_is_not_read_from_the_cache_of_its_old_bytes(sipp, tmp_path):
    right, wrong = sipp(200), sipp(200)
    cfg = one_phone(tmp_path, right.uri("486"))
    decoy(cfg, wrong, tmp_path)
    cfg.write_text(cfg.read_text() + "\n# only a comment changed\n")
    result = run_deskbot("send", "-c", str(cfg), "486", "edited")
    assert result.returncode == 0, result.stderr
    assert [m.body for m in right.wait_received(1)] == [b"edited"]
    assert wrong.received() == []


def test_a_library_upgrade_is_not_read_from_the_cache_of_the_old_version(sipp, tmp_path):
    right, wrong = sipp(200), sipp(200)
    cfg = one_phone(tmp_path, right.uri("486"))
    decoy(cfg, wrong, tmp_path)
    shadow = tmp_path / "site"
    (shadow / "pydantic_core-99.0.0.dist-info").mkdir(parents=True)  # an "upgrade" of it
    result = run_deskbot("send", "-c", str(cfg), "486", "upgraded", env={"PYTHONPATH": str(shadow)})
    assert result.returncode == 0, result.stderr
    assert [m.body for m in right.wait_received(1)] == [b"upgraded"]
    assert wrong.received() == []


def test_a_deskbot_upgrade_is_not_read_from_the_cache_of_the_old_code(sipp, tmp_path):
    """A copy of deskbot with one validating module changed, imported before the installed one."""
    right, wrong = sipp(200), sipp(200)
    cfg = one_phone(tmp_path, right.uri("486"))
    decoy(cfg, wrong, tmp_path)
    import shutil

    upgraded = tmp_path / "upgraded"
    package = Path(cache.__file__).parent.parent
    shutil.copytree(package, upgraded / "deskbot", ignore=shutil.ignore_patterns("__pycache__"))
    fields = upgraded / "deskbot" / "settings" / "fields.py"
    fields.write_text(fields.read_text() + "\n# the next release\n")
    result = run_deskbot(
        "send", "-c", str(cfg), "486", "new code", env={"PYTHONPATH": str(upgraded)}
    )
    assert result.returncode == 0, result.stderr
    assert [m.body for m in right.wait_received(1)] == [b"new code"]
    assert wrong.received() == []


def test_a_file_edited_after_a_send_is_validated_again(sipp, tmp_path):
    phone: SippPhone = sipp(200)
    cfg = one_phone(tmp_path, phone.uri("486"))
    assert run_deskbot("send", "-c", str(cfg), "486", "first").returncode == 0
    assert cache_file(cfg).exists()  # the second send of the same file skips validation

    cfg.write_text(cfg.read_text().replace("timeout = 1.0", "timeout = 99"))
    result = run_deskbot("send", "-c", str(cfg), "486", "second")
    assert result.returncode == 2
    assert "sip.timeout: Input should be less than or equal to 32" in result.stderr

    cfg.write_text(cfg.read_text().replace("timeout = 99", "timeout = 2.0"))
    assert run_deskbot("send", "-c", str(cfg), "486", "third").returncode == 0
    assert [m.body for m in phone.wait_received(2)] == [b"first", b"third"]


def _settings_for(uri: str, tmp_path: Path) -> Settings:
    raw = {"sip": {"listen": "127.0.0.1:0"}, "phones": {"486": {"uri": uri}}}
    return validate(raw, tmp_path / "x.toml")


def test_a_cache_file_others_may_write_is_not_believed(sipp, tmp_path):
    right, wrong = sipp(200), sipp(200)
    cfg = one_phone(tmp_path, right.uri("486"))
    planted = decoy(cfg, wrong, tmp_path)
    planted.chmod(0o666)  # anyone could have written it

    result = run_deskbot("send", "-c", str(cfg), "486", "to the right phone")
    assert result.returncode == 0, result.stderr
    assert "not using the settings cache" in result.stderr
    assert [m.body for m in right.wait_received(1)] == [b"to the right phone"]
    assert wrong.received() == []

    planted.write_bytes(pickle.dumps(_settings_for(wrong.uri("486"), tmp_path)))
    planted.chmod(0o600)  # the same file as this user's own is believed: the mode decided
    assert run_deskbot("send", "-c", str(cfg), "486", "now cached").returncode == 0
    assert [m.body for m in wrong.wait_received(1)] == [b"now cached"]


def test_a_planted_pickle_runs_nothing_and_the_file_is_validated(sipp, tmp_path):
    phone = sipp(200)
    cfg = one_phone(tmp_path, phone.uri("486"))
    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    planted = cache_file(cfg)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(pickle.dumps(Payload()))
    planted.chmod(0o600)  # this user's own file: only the unpickler stands in the way

    result = run_deskbot("send", "-c", str(cfg), "486", "hello")
    assert result.returncode == 0, result.stderr
    assert "not using the settings cache" in result.stderr
    assert "UnpicklingError" in result.stderr  # read and refused, not merely missed
    assert [m.body for m in phone.wait_received(1)] == [b"hello"]
    assert not marker.exists()


def test_secrets_are_read_every_time_even_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DESKBOT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_config(
        tmp_path / "d.toml",
        """
        [sip.registrar]
        uri = "sip:pbx.example.com"
        username = "deskbot"
        password_env = "PBX_PASSWORD"
        """,
    )
    first = load(cfg, {"PBX_PASSWORD": "s3cret"}, cached=True)
    assert first.secret("PBX_PASSWORD") == "s3cret"
    assert list((tmp_path / "cache").glob("*.pickle"))
    assert b"s3cret" not in b"".join(p.read_bytes() for p in (tmp_path / "cache").iterdir())
    with pytest.raises(ConfigError) as missing:
        load(cfg, {}, cached=True)
    assert missing.value.problems == [
        f"{cfg}: sip.registrar.password_env: environment variable PBX_PASSWORD is not set"
    ]


def _processes_with(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_send_that_sends_nothing_leaves_no_worker_behind(sipp, tmp_path):
    phone = sipp(200)
    cfg = one_phone(tmp_path, phone.uri("486"))
    mark = f"DESKBOT_TEST_RUN={uuid.uuid4().hex}"
    name, value = mark.split("=")
    unknown_target = ["send", "-c", str(cfg), "999", "x"]
    no_config = ["-c", str(tmp_path / "no.toml"), "probe", "486"]
    for argv in (unknown_target, no_config):
        result = run_deskbot(*argv, env={name: value})
        assert result.returncode == 2, result.stderr
    wait_for(lambda: not _processes_with(mark), timeout=5, what="the SIP workers to exit")
    assert phone.received() == []


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["send", "486", "hi"], "send"),
        (["-c", "x.toml", "-v", "probe", "486"], "probe"),
        (["--config", "send", "run"], "run"),  # "send" is the config file's name here
        (["--config=x.toml", "send", "486", "x"], "send"),
        (["--version"], None),
    ],
)
def test_the_command_word_is_found_before_argparse_runs(argv, command):
    assert command_of(argv) == command


def test_a_send_with_stdin_and_stdout_closed_still_sends_and_exits_by_the_answer(sipp, tmp_path):
    """cron and scripts run `deskbot send ... <&- >&-`: the pipes to the worker then take
    the lowest free descriptors, and there is no stdout to print to."""
    phone = sipp(200)
    cfg = one_phone(tmp_path, phone.uri("486"))
    deskbot = str(Path(sys.executable).parent / "deskbot")
    result = subprocess.run(
        [deskbot, "send", "-c", str(cfg), "486", "no terminal"],
        preexec_fn=lambda: (die_with_parent(), os.close(0), os.close(1)),
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert [m.body for m in phone.wait_received(1)] == [b"no terminal"]


def test_the_cache_key_covers_every_module_that_validation_runs(tmp_path):
    """A module validation imports but the key does not hash would let a stale cache stand."""
    cfg = one_phone(
        tmp_path,
        "sip:486@127.0.0.1:9",
        '[schedules.daily]\ncron = "0 9 * * 1-5"\n'
        'targets = "486"\ntext = "stand-up"\n[templates.drill]\ntext = "drill"\n',
    )
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from deskbot.settings.load import load\n"
        f"load(Path({str(cfg)!r}), environ={{}})\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('deskbot'))))\n"
    )
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    package = Path(cache.__file__).parent.parent
    hashed = set()
    for name in cache._CODE:
        parts = ["deskbot", *Path(name).with_suffix("").parts]
        hashed.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        assert (package / name).is_file()
    assert set(ran.stdout.split()) - hashed == set()


def test_the_cache_key_changes_with_a_library_version(tmp_path, monkeypatch):
    cfg = one_phone(tmp_path, "sip:486@127.0.0.1:9")
    before = cache.key(cfg.read_bytes(), tmp_path)
    shadow = tmp_path / "site"
    (shadow / "pydantic-99.0.0.dist-info").mkdir(parents=True)  # found before the real one
    monkeypatch.syspath_prepend(str(shadow))
    assert b"pydantic=pydantic-99.0.0.dist-info" in cache.versions()
    assert cache.key(cfg.read_bytes(), tmp_path) != before
