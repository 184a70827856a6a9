"""Command-line safety: --version, bad key files are exit 2 in one line, one `prover serve` per data directory,
`publish` leaves nothing behind when it fails."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.prover import main as prover_main
from cli.shardproof import main as shardproof_main
from cli.verify import main as verify_main
from ledger import Identity, Ledger
from prover.keys import NodeKeys

REPO = Path(__file__).resolve().parents[2]
MAINS = {"shardproof": shardproof_main, "prover": prover_main, "verify": verify_main}


@pytest.mark.parametrize("prog", sorted(MAINS))
def test_version(prog, capsys):
    from cli.common import package_version

    with pytest.raises(SystemExit) as exc:
        MAINS[prog](["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"{prog} {package_version()}" and package_version() not in ("", "unknown")


@pytest.fixture(scope="module")
def ledger_url(tmp_path_factory):
    d = tmp_path_factory.mktemp("safety")
    url = f"sqlite:///{d / 'l.db'}"
    Ledger.open(url, origin="test/safety", log_identity=Identity("log", b"L" * 32)).close()
    return url


def _bad_key(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.key"
    if kind == "corrupt":
        path.write_bytes(b"not a key file")
        path.chmod(0o600)
    elif kind == "mode":
        NodeKeys.generate("someone").save(path)
        path.chmod(0o644)
    return path  # "missing": never created


COMMANDS = {
    "verify audit": lambda k, url, d: verify_main(["audit", "job-x", "--ledger", url, "--key", k, "--wait", "0.1"]),
    "shardproof infer": lambda k, url, d: shardproof_main([
        "infer", "--ledger", url, "--nodes", "a,b", "--key", k, "--model-id", "M", "--prompt", "And",
        "--max-new-tokens", "1"]),
    "prover register": lambda k, url, d: prover_main(["register", "--ledger", url, "--key", k,
                                                      "--endpoint", "127.0.0.1:1"]),
    "prover serve": lambda k, url, d: prover_main(["serve", "--ledger", url, "--key", k, "--data", str(d / "n")]),
    "dealer serve": lambda k, url, d: shardproof_main(["dealer", "serve", "--ledger", url, "--key", k,
                                                       "--data", str(d / "dd")]),
    "owner serve": lambda k, url, d: shardproof_main(["owner", "serve", "--ledger", url, "--key", k,
                                                      "--published", str(d / "pub")]),
    "publish": lambda k, url, d: shardproof_main(["publish", "--ledger", url, "--key", k, "--nodes", "a,b",
                                                  "--out", str(d / "out")]),
    "ledger serve": lambda k, url, d: shardproof_main(["ledger", "serve", "--ledger", url, "--key", k]),
}
NEEDLES = {"missing": "no key file", "corrupt": "not canonical CBOR", "mode": "chmod 600"}


@pytest.mark.parametrize("kind", sorted(NEEDLES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_key_file_is_exit_2_in_one_line(command, kind, tmp_path, capsys, ledger_url):
    rc = COMMANDS[command](str(_bad_key(tmp_path, kind)), ledger_url, tmp_path)
    cap = capsys.readouterr()
    lines = [ln for ln in (cap.err + cap.out).splitlines() if ln.strip()]
    assert rc == 2
    assert len(lines) == 1 and NEEDLES[kind] in lines[0] and "Traceback" not in lines[0], cap.err + cap.out
    assert not (tmp_path / "out").exists()


def _hold_lock(data: Path) -> subprocess.Popen:
    """Another process that holds DATA/serve.lock, as a running `prover serve` does."""
    code = ("import sys, time; from prover.local_files import DataDirLock; "
            "l = DataDirLock(sys.argv[1]); print('locked', flush=True); time.sleep(120)")
    p = subprocess.Popen([sys.executable, "-c", code, str(data)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_one_prover_serve_per_data_directory(tmp_path, capsys, ledger_url):
    key = tmp_path / "node.key"
    NodeKeys.generate("node-x").save(key)
    data = tmp_path / "data"
    holder = _hold_lock(data)
    try:
        rc = prover_main(["serve", "--ledger", ledger_url, "--key", str(key), "--data", str(data)])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "one serve per" in lines[0], err
    finally:
        holder.kill()
        holder.wait()
    from prover.local_files import DataDirLock

    with DataDirLock(data) as lock:  # the holder died: the kernel dropped its lock, no stale lock file matters
        assert (data / "serve.lock").read_text().strip() == str(os.getpid())
        assert lock.path == data / "serve.lock"


def test_publish_failure_leaves_nothing_behind(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    Ledger.open(url, origin="test", log_identity=Identity("log", b"L" * 32)).close()
    owner = NodeKeys.generate("owner")
    owner.save(tmp_path / "owner.key")
    (tmp_path / "pubs").mkdir()
    # the nodes are not registered: the shares are written, then delivery fails
    rc = shardproof_main(["publish", "--ledger", url, "--key", str(tmp_path / "owner.key"),
                          "--nodes", "ghost-1,ghost-2", "--out", str(tmp_path / "pubs" / "pub")])
    err = capsys.readouterr().err
    assert rc == 2 and "ghost-1" in err
    assert os.listdir(tmp_path / "pubs") == []  # neither pub/ nor a temporary sibling


def test_publish_refuses_an_existing_publication(tmp_path, capsys):
    (tmp_path / "pub").mkdir()
    (tmp_path / "pub" / "manifest.json").write_text("{}")
    rc = shardproof_main(["publish", "--ledger", f"sqlite:///{tmp_path / 'none.db'}", "--key", "k",
                          "--nodes", "a,b", "--out", str(tmp_path / "pub")])
    assert rc == 2 and "never overwritten" in capsys.readouterr().err
    assert os.listdir(tmp_path / "pub") == ["manifest.json"]
