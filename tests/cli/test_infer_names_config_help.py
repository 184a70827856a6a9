"""`shardproof infer` names its job; --ledger/--key defaults from env and config file; every --help describes."""
import argparse
import importlib
import json
import re

import pytest

from cli import common
from cli.shardproof import main
from models import TINY_MODEL_DIR

needs_model = pytest.mark.skipif(not (TINY_MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")


@needs_model
def test_infer_in_process_prints_the_job_id(capsys):
    assert main(["infer", "--prompt", "And", "--max-new-tokens", "1", "--json", "--job-id", "my-job.1"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["job_id"] == "my-job.1"
    assert "job: my-job.1" in cap.err
    assert main(["infer", "--prompt", "And", "--max-new-tokens", "1", "--json"]) == 0
    cap = capsys.readouterr()
    job = json.loads(cap.out)["job_id"]
    assert re.fullmatch(r"job-[0-9a-f]{12}", job) and f"job: {job}" in cap.err


@needs_model
def test_plaintext_has_no_job_and_a_bad_job_id_is_refused(capsys):
    assert main(["infer", "--plaintext", "--prompt", "And", "--max-new-tokens", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] is None
    with pytest.raises(SystemExit) as e:
        main(["infer", "--prompt", "x", "--job-id", "../etc"])
    assert e.value.code == 2


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("SHARDPROOF_LEDGER", raising=False)
    monkeypatch.delenv("SHARDPROOF_KEY", raising=False)
    (tmp_path / "cfg" / "shardproof").mkdir(parents=True)
    return tmp_path / "cfg" / "shardproof" / "config.toml"


def test_configured_precedence_flag_env_file(config_home, tmp_path, monkeypatch, capsys):
    assert common.configured("ledger") is None
    config_home.write_text('ledger = "sqlite:///from-file.db"\nkey = "~/from-file.key"\n')
    assert common.configured("ledger") == "sqlite:///from-file.db"
    assert common.configured("key").endswith("/from-file.key") and "~" not in common.configured("key")
    # the file's ledger is the default of `ledger info`
    assert main(["ledger", "info"]) == 2
    assert "from-file.db" in capsys.readouterr().err
    monkeypatch.setenv("SHARDPROOF_LEDGER", f"sqlite:///{tmp_path / 'from-env.db'}")
    assert main(["ledger", "info"]) == 2
    assert "from-env.db" in capsys.readouterr().err
    assert main(["ledger", "info", "--ledger", f"sqlite:///{tmp_path / 'from-flag.db'}"]) == 2
    assert "from-flag.db" in capsys.readouterr().err
    # a required --key is satisfied by the configuration (prover register parses; it fails on the ledger)
    monkeypatch.setenv("SHARDPROOF_KEY", str(tmp_path / "none.key"))
    assert main(["infer", "--nodes", "a,b", "--model-id", "m", "--prompt", "x"]) == 2
    assert "none.key" in capsys.readouterr().err


def test_a_bad_config_file_is_one_line_exit_2(config_home, capsys):
    config_home.write_text("ledger = [1, 2\n")
    assert main(["ledger", "info"]) == 2
    err = capsys.readouterr().err
    assert "config.toml" in err and len(err.strip().splitlines()) == 1


def _walk(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


@pytest.mark.parametrize("prog,module", [("shardproof", "cli.shardproof"), ("prover", "cli.prover"),
                                         ("verify", "cli.verify")])
def test_every_command_has_a_description_and_lists_accepted_values(prog, module, config_home):
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers()
    for name, mod in importlib.import_module(module).COMMANDS.items():
        importlib.import_module(mod).register(sub, name)
    problems = []
    for path, p in _walk(parser, prog):
        if path == prog:
            continue
        if not (p.description or "").strip():
            problems.append(f"`{path} --help` has no description")
        text = p.format_help()
        for action in p._actions:
            if action.choices and not isinstance(action, argparse._SubParsersAction):
                if not all(str(c) in text for c in action.choices):
                    problems.append(f"`{path} --help` hides the accepted values of {action.dest}")
    assert not problems, problems


def test_help_lists_roles_and_cheat_kinds(capsys):
    from cli.prover import main as prover_main
    from cli.prover_register import REGISTRABLE_ROLES
    from sim.cheat_spec import KINDS

    with pytest.raises(SystemExit):
        prover_main(["register", "--help"])
    out = capsys.readouterr().out
    assert all(r in out for r in REGISTRABLE_ROLES)
    with pytest.raises(SystemExit):
        prover_main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(k in out for k in KINDS) and "--heartbeat" in out
