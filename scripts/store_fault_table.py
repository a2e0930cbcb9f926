"""The store's behaviour on bad input and faults, case by case (the table of the store hardening
work): each numbered defect and each file x fault, run on whichever editscope is first on
sys.path; prints JSON {case: outcome}. The CLI runs in-process (typer CliRunner) with the store
tests' fake backend (no model files).

    python scripts/store_fault_table.py > after.json
"""
import hashlib, io, json, os, sqlite3, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
import numpy as np
from PIL import Image
from typer.testing import CliRunner

import editscope
import editscope.store.store as store_module
from store_fakes import FakeBackend, make_checkpoint

store_module.DefaultBackend = FakeBackend
from editscope.cli.main import app  # noqa: E402
from editscope.store import EditStore  # noqa: E402

ROOT = Path(tempfile.mkdtemp(prefix="h1-"))
BASE = make_checkpoint(ROOT / "base", seed=1)
IMAGES = []
for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
    IMAGES.append(ROOT / f"img{i}.png")
    Image.new("RGB", (4, 4), colour).save(IMAGES[-1])
COUNT = [0]


def cli(*args, input=None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    out = " | ".join(line for line in result.output.splitlines() if line.strip() and not line.startswith("editing"))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        out += f" [TRACEBACK {type(result.exception).__name__}: {result.exception}]"
    return f"exit {result.exit_code}: {out}"


def new_store(edits=5, snapshot_every=2):
    COUNT[0] += 1
    directory = ROOT / f"store{COUNT[0]}"
    with EditStore.init(directory, BASE, "tiny", snapshot_every=snapshot_every, backend=FakeBackend(), editor="scopeedit") as s:
        for i in range(edits):
            s.edit(__import__("editscope.types", fromlist=["EditRequest"]).EditRequest(
                prompt=f"What is shown? ({i})", target=f"thing {i}", image=IMAGES[i % 3]), tags=("demo",))
    return directory


def short(text, n=230):
    text = text.replace(str(ROOT), "…").replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def stream_file(lines):
    path = ROOT / f"stream{COUNT[0]}.jsonl"
    COUNT[0] += 1
    path.write_bytes(b"".join(l if isinstance(l, bytes) else (json.dumps(l).encode("utf-8", "surrogatepass") + b"\n") for l in lines))
    return path


def logged(store):
    with sqlite3.connect(store / "journal.sqlite") as c:
        return c.execute("SELECT id, status, scope, rephrases, (SELECT group_concat(tag) FROM edit_tags t WHERE t.edit_id=e.id) FROM edits e ORDER BY id").fetchall()


CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


@case("D1 stream + --scope/--tag/--rephrase")
def _():
    s = new_store(0)
    cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b"}]), "--scope", "instance", "--tag", "b", "--rephrase", "x y")
    return f"journaled (id, status, scope, rephrases, tags): {logged(s)}"


@case('D2 "tags": "demo" in JSONL')
def _():
    s = new_store(0)
    return cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b", "tags": "demo"}]))


@case("D3 16-bit PNG decoded")
def _():
    path = ROOT / "gray16.png"
    Image.fromarray((np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096)).save(path)
    from editscope.images import load_image
    return f"pixels (first row, R): {list(np.asarray(load_image(path))[0, :, 0])}"


@case("D4 one byte of a row's target flipped with sqlite3, then revert")
def _():
    s = new_store(3)
    with sqlite3.connect(s / "journal.sqlite") as c:
        c.execute("UPDATE edits SET target = 'uhing 1' WHERE id = 2")
    return cli("revert", "3", "--store", s)


@case("D5 log on a store whose journal.sqlite was deleted")
def _():
    s = new_store(1)
    (s / "journal.sqlite").unlink()
    out = cli("log", "--store", s)
    return out + f"; journal recreated: {(s / 'journal.sqlite').exists()}"


@case("D6 latest snapshot truncated: rollback --to initial")
def _():
    s = new_store(4)
    p = max((s / "snapshots").glob("auto-2-e4-*"))
    p.write_bytes(p.read_bytes()[:50])
    return cli("rollback", "--store", s, "--to", "initial")


@case("D7a malformed journal: log --tag demo")
def _():
    s = new_store(1)
    (s / "journal.sqlite").write_bytes(b"\x00garbage\xff" * 300)
    return cli("log", "--store", s, "--tag", "demo")


@case("D7b read-only store (journal not writable, as os.access says): log, query")
def _():
    s = new_store(1)
    import editscope.store.journal as jr
    real = jr.os.access
    jr.os.access = lambda p, m, *a, **k: False if m == os.W_OK and Path(p) in (s / "journal.sqlite", s) else real(p, m, *a, **k)
    try:
        return cli("log", "--store", s) + " || query: " + cli("query", "--store", s, "--prompt", "q")
    finally:
        jr.os.access = real


@case("D7c PNG header claiming 30000x30000")
def _():
    s = new_store(0)
    png = io.BytesIO()
    Image.new("L", (30000, 30000)).save(png, format="PNG") if False else None
    import struct, zlib
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")
    (ROOT / "bomb.png").write_bytes(data)
    return cli("edit", "--store", s, "--image", ROOT / "bomb.png", "--prompt", "a?", "--target", "b")


@case("D7d query --prompt $'\\xff'")
def _():
    s = new_store(1)
    return cli("query", "--store", s, "--prompt", "\udcff")


@case("D8a stream: invalid UTF-8 byte on line 2")
def _():
    s = new_store(0)
    return cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b"}, b'{"prompt": "\xff", "target": "b"}\n']))


@case("D8b stream: lone surrogate on line 2")
def _():
    s = new_store(0)
    return cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b"}, {"prompt": "\ud800", "target": "b"}]))


@case("D8c stream: over-long prompt on line 2 of 3")
def _():
    s = new_store(0)
    return cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b"}, {"prompt": "what " * 1000, "target": "b"}, {"prompt": "c?", "target": "d"}]))


@case("D8d stream --keep-going past a bad line 2")
def _():
    s = new_store(0)
    return cli("edit", "--store", s, "--stream", stream_file([{"prompt": "a?", "target": "b"}, {"prompt": "a?", "target": "b", "tags": "x"}, {"prompt": "c?", "target": "d"}]), "--keep-going")


@case("D9 crash debris (.tmp-*, unrecorded .safetensors, .OUT.tmp-*) after the next open for writing")
def _():
    s = new_store(1)
    debris = [s / ".tmp-a", s / "snapshots" / ".tmp-b", s / "snapshots" / "auto-9-e9-000000000000.safetensors"]
    for d in debris:
        d.write_bytes(b"x")
    cli("snapshot", "--store", s, "--name", "x")
    left = [d.name for d in debris if d.exists()]
    return f"left after `snapshot` opened it: {left}"


@case("D10 edit that did not take: ack, and --require-absorbed")
def _():
    s = new_store(0)
    a = cli("edit", "--store", s, "--prompt", "a?", "--target", "WEAK x")
    b = cli("edit", "--store", s, "--prompt", "b?", "--target", "WEAK y", "--require-absorbed")
    return a + " || --require-absorbed: " + b + f"; applied: {[r[0] for r in logged(s) if r[1] == 'applied']}"


def target_file(s, kind):
    if kind == "journal":
        return s / "journal.sqlite"
    if kind == "store.json":
        return s / "store.json"
    if kind == "snapshot":
        return max((s / "snapshots").glob("auto-2-e4-*"))
    sha = hashlib.sha256(IMAGES[1].read_bytes()).hexdigest()
    return s / "images" / sha[:2] / sha


for kind in ("journal", "snapshot", "image", "store.json"):
    for fault in ("truncate", "flip", "delete", "read-only"):
        def run(kind=kind, fault=fault):
            s = new_store(5)
            p = target_file(s, kind)
            data = p.read_bytes()
            if fault == "truncate":
                p.write_bytes(data[: len(data) // 2])
            elif fault == "flip":
                at = data.find(b"thing 3") + 2 if kind == "journal" else len(data) // 2
                p.write_bytes(data[:at] + bytes([data[at] ^ 1]) + data[at + 1:])
            elif fault == "delete":
                p.unlink()
            else:
                p.chmod(0o444)
                if os.geteuid() == 0:
                    pass
            opened = cli("audit", "--store", s)
            has_check = "check" in cli("--help")
            if not has_check:
                return f"audit: {opened}; no `check` command"
            before = cli("check", "--store", s)
            repair = cli("check", "--store", s, "--repair")
            after = cli("check", "--store", s)
            log = cli("log", "--store", s, "--status", "applied")
            applied = log.count("applied ") if log.startswith("exit 0") else "-"
            did = [x.split("repaired:")[1].strip()[:60] for x in repair.split(" | ") if "repaired:" in x and "not repaired" not in x]
            return (f"audit: {short(opened, 170)} || check: {before[:6]} || --repair: {repair[:6]} {did} || check after: "
                    f"{after[:6]} || applied rows after: {applied}")
        CASES[f"F {kind} × {fault}"] = run

for when, (patch, call) in {
    "K kill during snapshot (before rename)": ("atomic.os.replace = hang", "store.snapshot('killed')"),
    "K kill during snapshot (before journal row)": ("journal.SQLiteJournal.add_snapshot = hang", "store.snapshot('killed')"),
    "K kill during export (before move)": ("export.os.replace = hang", "store.export(OUT)"),
}.items():
    def run(patch=patch, call=call):
        import signal, subprocess
        s = new_store(3)
        out = ROOT / f"exported{COUNT[0]}"
        code = (f"import sys, time\nsys.path[:0] = {sys.path[:3]!r}\nfrom store_fakes import FakeBackend\n"
                "from editscope import atomic\nfrom editscope.store import EditStore, export, journal\n"
                f"store = EditStore.open({str(s)!r}, backend=FakeBackend())\nOUT = {str(out)!r}\n"
                "def hang(*a, **k):\n    print('ready', flush=True)\n    time.sleep(600)\n"
                f"{patch}\n{call}\n")
        env = dict(os.environ)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        ready = p.stdout.readline()
        p.send_signal(signal.SIGKILL)
        p.wait()
        debris = sorted(x.name for x in [*s.rglob(".tmp-*"), *(s / "snapshots").glob("killed-*"), *ROOT.glob(f".{out.name}.tmp-*")])
        has_check = "check" in cli("--help")
        first = cli("check", "--store", s) if has_check else "no check command"
        cli("snapshot", "--store", s, "--name", "after")  # the next open for writing
        left = sorted(x.name for x in [*s.rglob(".tmp-*"), *[y for y in (s / "snapshots").glob("killed-*")], *ROOT.glob(f".{out.name}.tmp-*")])
        then = cli("check", "--store", s) if has_check else "-"
        return f"killed ({ready.strip()}); debris: {debris}; check: {first[:6]} || after the next open, left: {left}; check: {then[:80]}"
    CASES[when] = run

results = {}
for name, fn in CASES.items():
    try:
        results[name] = short(str(fn()))
    except Exception as error:  # noqa: BLE001
        results[name] = short(f"TRACEBACK {type(error).__name__}: {error}")
print(json.dumps({"editscope": editscope.__file__, "results": results}, indent=1))
