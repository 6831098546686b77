// The FileSystem contract of src/fs.ts, run against the runtime adapter
// (node under Node, deno under Deno) and FaultyFs; then FaultyFs's crash and
// fault model; then sockets through the runtime adapter.
import { suite, type Test } from "uvu";
import * as assert from "uvu/assert";
import { renameSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { FaultyFs } from "../adapters/faulty.ts";
import { runtimeFs } from "../adapters/runtime.ts";
import { FsError, type Connection, type FileSystem } from "../src/fs.ts";
import { adapterCases, type AdapterCase } from "./_support/adapters.ts";
import { tempDir } from "./_support/tempdir.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Runs `fn` and checks it throws an FsError with `code`. */
function throwsCode(fn: () => unknown, code: string, what: string): FsError {
  try {
    fn();
  } catch (e) {
    assert.instance(e, FsError, `${what}: ${e}`);
    assert.is((e as FsError).code, code, `${what}: ${(e as Error).message}`);
    return e as FsError;
  }
  assert.unreachable(`${what}: expected FsError ${code}, nothing was thrown`);
  throw new Error("unreachable");
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Deterministic pseudo-random bytes (xorshift32), so a payload mismatch is reproducible. */
function patternBytes(length: number, seed = 12345): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function readAll(fs: FileSystem, path: string): Uint8Array {
  const f = fs.open(path, "r");
  try {
    const buf = new Uint8Array(f.size());
    assert.is(f.read(buf, 0), buf.length);
    return buf;
  } finally {
    f.close();
  }
}

function writeAll(fs: FileSystem, path: string, data: Uint8Array): void {
  const f = fs.open(path, "w+");
  try {
    f.write(data, 0);
    f.datasync();
  } finally {
    f.close();
  }
}

// ---------------------------------------------------------------------------
// The contract, per adapter

for (const name of [runtimeFs.name, "faulty"] as const) {
  const contract = suite<{ c: AdapterCase }>(`${name} FileSystem contract`);
  contract.before.each((ctx) => {
    const cases = adapterCases({ prefix: "segstore-20-" });
    ctx.c = cases.find((c) => c.name === name)!;
    for (const other of cases) if (other !== ctx.c) other.cleanup();
  });
  contract.after.each((ctx) => ctx.c.cleanup());
  contractTests(contract);
  contract.run();
}

function contractTests(contract: Test<{ c: AdapterCase }>): void {

  contract("read() at an offset returns the bytes there; short only at end of file", ({ c: { fs, root } }) => {
    const path = `${root}/f`;
    writeAll(fs, path, enc.encode("0123456789"));
    const f = fs.open(path, "r");
    const buf = new Uint8Array(4);
    assert.is(f.read(buf, 3), 4);
    assert.is(dec.decode(buf), "3456");
    assert.is(f.read(buf, 8), 2, "short read at EOF");
    assert.is(dec.decode(buf.subarray(0, 2)), "89");
    assert.is(f.read(buf, 10), 0, "read at EOF");
    assert.is(f.read(buf, 1000), 0, "read past EOF");
    assert.is(f.read(new Uint8Array(0), 0), 0, "empty buffer");
    f.close();
  });

  contract("read() fills a 1 MiB buffer in one call and write() writes all of it", ({ c: { fs, root } }) => {
    const data = patternBytes(1 << 20);
    writeAll(fs, `${root}/big`, data);
    const f = fs.open(`${root}/big`, "r");
    const buf = new Uint8Array(data.length + 10);
    assert.is(f.read(buf, 0), data.length);
    assert.ok(bytesEqual(buf.subarray(0, data.length), data));
    f.close();
  });

  contract("write() at an offset overwrites and extends; a gap reads as zeros", ({ c: { fs, root } }) => {
    const f = fs.open(`${root}/w`, "w+");
    f.write(enc.encode("abcdef"), 0);
    f.write(enc.encode("XY"), 2);
    assert.is(f.size(), 6);
    f.write(enc.encode("Z"), 9);
    assert.is(f.size(), 10);
    const buf = new Uint8Array(10);
    assert.is(f.read(buf, 0), 10);
    assert.equal(Array.from(buf), [...enc.encode("abXYef"), 0, 0, 0, ...enc.encode("Z")]);
    f.close();
  });

  contract("writeAsync() writes like write(): at an offset, extending, a gap of zeros; a closed or read-only file rejects; datasyncAsync() runs beside it", async ({ c: { fs, root } }) => {
    const f = fs.open(`${root}/wa`, "w+");
    const big = patternBytes(3 << 20, 7);
    await f.writeAsync(big.subarray(0, 1 << 20), 0);
    await Promise.all([f.writeAsync(big.subarray(1 << 20), 1 << 20), f.datasyncAsync()]);
    await f.writeAsync(enc.encode("XY"), 2);
    await f.writeAsync(enc.encode("Z"), big.length + 4);
    assert.is(f.size(), big.length + 5);
    const back = new Uint8Array(big.length + 5);
    assert.is(f.read(back, 0), back.length);
    const want = new Uint8Array(big.length + 5);
    want.set(big);
    want.set(enc.encode("XY"), 2);
    want.set(enc.encode("Z"), big.length + 4);
    assert.ok(bytesEqual(back, want), "the bytes read back are those written");
    f.close();
    const closed = await f.writeAsync(enc.encode("x"), 0).then(() => undefined, (e) => e);
    assert.ok(closed instanceof FsError && closed.code === "EBADF", `writeAsync after close rejects with EBADF, got ${closed}`);
    const closedSync = await f.datasyncAsync().then(() => undefined, (e) => e);
    assert.ok(closedSync instanceof FsError && closedSync.code === "EBADF", `datasyncAsync after close rejects with EBADF, got ${closedSync}`);
    const r = fs.open(`${root}/wa`, "r");
    const readOnly = await r.writeAsync(enc.encode("x"), 0).then(() => undefined, (e) => e);
    assert.ok(readOnly instanceof FsError && readOnly.code === "EBADF", `writeAsync on a read-only file rejects with EBADF, got ${readOnly}`);
    r.close();
  });

  contract("truncate() shrinks and extends with zeros; size() follows", ({ c: { fs, root } }) => {
    const f = fs.open(`${root}/t`, "w+");
    f.write(enc.encode("hello world"), 0);
    f.truncate(5);
    assert.is(f.size(), 5);
    f.truncate(8);
    assert.is(f.size(), 8);
    const buf = new Uint8Array(8);
    f.read(buf, 0);
    assert.equal(Array.from(buf), [...enc.encode("hello"), 0, 0, 0]);
    f.datasync();
    f.sync();
    f.close();
    assert.is(fs.stat(`${root}/t`)?.size, 8);
  });

  contract("open() modes: r/r+ need the file, w+ truncates, wx+ refuses an existing file", ({ c: { fs, root } }) => {
    throwsCode(() => fs.open(`${root}/missing`, "r"), "ENOENT", "open r missing");
    throwsCode(() => fs.open(`${root}/missing`, "r+"), "ENOENT", "open r+ missing");
    throwsCode(() => fs.open(`${root}/no/dir/file`, "w+"), "ENOENT", "open in a missing directory");
    writeAll(fs, `${root}/m`, enc.encode("abc"));
    throwsCode(() => fs.open(`${root}/m`, "wx+"), "EEXIST", "open wx+ existing");
    const rw = fs.open(`${root}/m`, "r+");
    assert.is(rw.size(), 3);
    rw.close();
    const w = fs.open(`${root}/m`, "w+");
    assert.is(w.size(), 0, "w+ truncates");
    w.close();
    const x = fs.open(`${root}/new`, "wx+");
    x.write(enc.encode("n"), 0);
    x.close();
    assert.is(fs.stat(`${root}/new`)?.size, 1);
  });

  contract("a file opened read-only refuses writes; a closed file refuses everything; close() is idempotent", ({ c: { fs, root } }) => {
    writeAll(fs, `${root}/ro`, enc.encode("abc"));
    const r = fs.open(`${root}/ro`, "r");
    throwsCode(() => r.write(enc.encode("x"), 0), "EBADF", "write on r");
    r.close();
    r.close();
    throwsCode(() => r.read(new Uint8Array(1), 0), "EBADF", "read after close");
    throwsCode(() => r.size(), "EBADF", "size after close");
    assert.is(dec.decode(readAll(fs, `${root}/ro`)), "abc");
  });

  contract("rename() replaces an existing file atomically and removes the old name", ({ c: { fs, root } }) => {
    writeAll(fs, `${root}/a`, enc.encode("new"));
    writeAll(fs, `${root}/b`, enc.encode("old contents"));
    fs.rename(`${root}/a`, `${root}/b`);
    assert.is(fs.stat(`${root}/a`), undefined);
    assert.is(dec.decode(readAll(fs, `${root}/b`)), "new");
    throwsCode(() => fs.rename(`${root}/a`, `${root}/c`), "ENOENT", "rename missing");
    fs.mkdir(`${root}/d`);
    fs.rename(`${root}/b`, `${root}/d/b`);
    assert.is(dec.decode(readAll(fs, `${root}/d/b`)), "new");
  });

  contract("unlink() removes a file; ENOENT when missing, EISDIR for a directory", ({ c: { fs, root } }) => {
    writeAll(fs, `${root}/u`, enc.encode("x"));
    fs.unlink(`${root}/u`);
    assert.is(fs.stat(`${root}/u`), undefined);
    throwsCode(() => fs.unlink(`${root}/u`), "ENOENT", "unlink missing");
    fs.mkdir(`${root}/dir`);
    throwsCode(() => fs.unlink(`${root}/dir`), "EISDIR", "unlink a directory");
  });

  contract("mkdir()/rmdir(): EEXIST, ENOENT, ENOTEMPTY, ENOTDIR", ({ c: { fs, root } }) => {
    fs.mkdir(`${root}/d`);
    assert.ok(fs.stat(`${root}/d`)?.isDirectory);
    throwsCode(() => fs.mkdir(`${root}/d`), "EEXIST", "mkdir existing");
    throwsCode(() => fs.mkdir(`${root}/x/y`), "ENOENT", "mkdir with a missing parent");
    writeAll(fs, `${root}/d/f`, enc.encode("x"));
    throwsCode(() => fs.rmdir(`${root}/d`), "ENOTEMPTY", "rmdir non-empty");
    throwsCode(() => fs.rmdir(`${root}/d/f`), "ENOTDIR", "rmdir a file");
    fs.unlink(`${root}/d/f`);
    fs.rmdir(`${root}/d`);
    assert.is(fs.stat(`${root}/d`), undefined);
    throwsCode(() => fs.rmdir(`${root}/d`), "ENOENT", "rmdir missing");
  });

  contract("readdir() lists names without . and ..; ENOENT and ENOTDIR", ({ c: { fs, root } }) => {
    assert.equal(fs.readdir(root), []);
    writeAll(fs, `${root}/b`, enc.encode("1"));
    writeAll(fs, `${root}/a`, enc.encode("2"));
    fs.mkdir(`${root}/c`);
    assert.equal(fs.readdir(root).sort(), ["a", "b", "c"]);
    throwsCode(() => fs.readdir(`${root}/nope`), "ENOENT", "readdir missing");
    throwsCode(() => fs.readdir(`${root}/a`), "ENOTDIR", "readdir a file");
  });

  contract("stat() describes files and directories and gives undefined for a missing path", ({ c: { fs, root } }) => {
    assert.is(fs.stat(`${root}/none`), undefined);
    writeAll(fs, `${root}/s`, enc.encode("12345"));
    const st = fs.stat(`${root}/s`)!;
    assert.equal([st.size, st.isFile, st.isDirectory], [5, true, false]);
    assert.type(st.mtimeMs, "number");
    assert.type(st.atimeMs, "number");
    const dir = fs.stat(root)!;
    assert.equal([dir.isFile, dir.isDirectory], [false, true]);
  });

  contract("datasync(), sync() and syncDir() succeed; syncDir of a missing directory is ENOENT", ({ c: { fs, root } }) => {
    const f = fs.open(`${root}/s`, "w+");
    f.write(enc.encode("x"), 0);
    f.datasync();
    f.sync();
    f.close();
    fs.syncDir(root);
    throwsCode(() => fs.syncDir(`${root}/missing`), "ENOENT", "syncDir missing");
  });

  contract("errors are FsError with code, syscall and path, keeping the OS message", ({ c: { fs, root } }) => {
    const e = throwsCode(() => fs.open(`${root}/missing`, "r"), "ENOENT", "open missing");
    assert.is(e.path, `${root}/missing`);
    assert.ok(e.syscall.length > 0);
    assert.match(e.message, /ENOENT/);
  });

  contract("resolve() gives an absolute, normalized path", ({ c: { fs, root } }) => {
    const r = fs.resolve(`${root}/a/../b/./c`);
    assert.ok(r.startsWith("/"), r);
    assert.ok(r.endsWith("/b/c") && !r.includes(".."), r);
  });

  contract("lock(): exclusive excludes every other open file; shared locks coexist; close releases", ({ c: { fs, root } }) => {
    const path = `${root}/lock`;
    writeAll(fs, path, new Uint8Array(0));
    const a = fs.open(path, "r+");
    const b = fs.open(path, "r");
    assert.ok(a.lock("exclusive", false));
    assert.not.ok(b.lock("exclusive", false), "exclusive vs exclusive");
    assert.not.ok(b.lock("shared", false), "shared vs exclusive");
    a.unlock();
    assert.ok(b.lock("shared", false));
    assert.ok(a.lock("shared", false), "shared locks coexist");
    const c2 = fs.open(path, "r");
    assert.not.ok(c2.lock("exclusive", false), "exclusive vs shared");
    a.close();
    b.close();
    assert.ok(c2.lock("exclusive", false), "locks released on close");
    c2.close();
  });
}

// ---------------------------------------------------------------------------
// FaultyFs: crash model

const crash = suite("FaultyFs crash()");

function newFaulty(seed = 1): FaultyFs {
  const fs = new FaultyFs({ seed });
  fs.mkdirp("/s");
  return fs;
}

crash("keeps exactly the synced contents and synced directory entries", () => {
  const fs = newFaulty();
  const f = fs.open("/s/a", "w+");
  f.write(enc.encode("synced"), 0);
  f.datasync();
  fs.syncDir("/s");
  f.write(enc.encode("+unsynced"), 6);
  const g = fs.open("/s/b", "w+"); // created, written, synced, but its name never synced
  g.write(enc.encode("lost"), 0);
  g.datasync();
  const after = fs.crash();
  assert.equal([...after.files().keys()], ["/s/a"]);
  assert.is(dec.decode(after.readFile("/s/a")), "synced");
  assert.is(after.stat("/s/b"), undefined, "create without syncDir is lost");
});

crash("a create without syncDir is lost; with it the file stays", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/x", enc.encode("x"));
  assert.equal([...fs.crash().files().keys()], []);
  const fs2 = newFaulty();
  writeAll(fs2, "/s/x", enc.encode("x"));
  fs2.syncDir("/s");
  assert.equal([...fs2.crash().files().keys()], ["/s/x"]);
});

crash("a rename without syncDir reverts; with it the new name holds and the replaced file is gone", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/tmp", enc.encode("new"));
  writeAll(fs, "/s/target", enc.encode("old"));
  fs.syncDir("/s");
  fs.rename("/s/tmp", "/s/target");
  const reverted = fs.clone().crash();
  assert.is(dec.decode(reverted.readFile("/s/tmp")), "new");
  assert.is(dec.decode(reverted.readFile("/s/target")), "old");
  fs.syncDir("/s");
  const renamed = fs.crash();
  assert.equal([...renamed.files().keys()], ["/s/target"]);
  assert.is(dec.decode(renamed.readFile("/s/target")), "new");
});

crash("an unlink without syncDir comes back, with the file's synced bytes", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/u", enc.encode("durable"));
  fs.syncDir("/s");
  fs.unlink("/s/u");
  assert.is(fs.stat("/s/u"), undefined);
  assert.is(dec.decode(fs.clone().crash().readFile("/s/u")), "durable");
  fs.syncDir("/s");
  assert.is(fs.crash().stat("/s/u"), undefined);
});

crash("a new directory needs a syncDir of its parent, its files a syncDir of itself", () => {
  const fs = newFaulty();
  fs.mkdir("/s/d");
  writeAll(fs, "/s/d/f", enc.encode("f"));
  fs.syncDir("/s/d");
  assert.equal(fs.clone().crash().directories(), ["/s"], "parent not synced: directory lost");
  fs.syncDir("/s");
  const after = fs.crash();
  assert.equal(after.directories(), ["/s", "/s/d"]);
  assert.is(dec.decode(after.readFile("/s/d/f")), "f");
});

crash("an unsynced truncate (w+ of an existing file) is undone in drop mode", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/t", enc.encode("keep me"));
  fs.syncDir("/s");
  fs.open("/s/t", "w+").close();
  assert.is(fs.readFile("/s/t").length, 0);
  assert.is(dec.decode(fs.crash().readFile("/s/t")), "keep me");
});

/** A file with 4 synced bytes, then unsynced writes "EFGH" at 4 and "IJKLMNOP" at 8. */
function unsyncedTail(seed = 1): FaultyFs {
  const fs = newFaulty(seed);
  const f = fs.open("/s/f", "w+");
  f.write(enc.encode("ABCD"), 0);
  f.datasync();
  fs.syncDir("/s");
  f.write(enc.encode("EFGH"), 4);
  f.write(enc.encode("IJKLMNOP"), 8);
  return fs;
}

crash("mode keep applies every unsynced write; drop none", () => {
  assert.is(dec.decode(unsyncedTail().crash({ mode: "keep" }).readFile("/s/f")), "ABCDEFGHIJKLMNOP");
  assert.is(dec.decode(unsyncedTail().crash({ mode: "drop" }).readFile("/s/f")), "ABCD");
});

crash("mode torn keeps earlier unsynced writes and a seeded prefix of the last; replays per seed", () => {
  const seen = new Set<string>();
  for (let seed = 1; seed <= 40; seed++) {
    const text = dec.decode(unsyncedTail().crash({ mode: "torn", seed }).readFile("/s/f"));
    assert.ok(text.startsWith("ABCDEFGH"), text);
    assert.ok("ABCDEFGHIJKLMNOP".startsWith(text) && text.length < 16, text);
    assert.is(dec.decode(unsyncedTail().crash({ mode: "torn", seed }).readFile("/s/f")), text, "same seed, same tear");
    seen.add(text);
  }
  assert.ok(seen.size >= 4, `tears vary with the seed: ${[...seen].join(" ")}`);
});

crash("mode zeros keeps the size but zeros every byte past the durable size", () => {
  const bytes = unsyncedTail().crash({ mode: "zeros" }).readFile("/s/f");
  assert.equal(Array.from(bytes), [...enc.encode("ABCD"), ...new Array(12).fill(0)]);
});

crash("mode mixed picks a mode per file from the seed, deterministically", () => {
  const make = () => {
    const fs = newFaulty();
    for (let i = 0; i < 8; i++) {
      const f = fs.open(`/s/f${i}`, "w+");
      f.write(enc.encode("base"), 0);
      f.datasync();
      f.write(enc.encode("-tail-of-file"), 4);
    }
    fs.syncDir("/s");
    return fs;
  };
  const a = make().crash({ mode: "mixed", seed: 9 }).files();
  const b = make().crash({ mode: "mixed", seed: 9 }).files();
  assert.equal([...a.entries()].map(([k, v]) => [k, dec.decode(v)]), [...b.entries()].map(([k, v]) => [k, dec.decode(v)]));
  const distinct = new Set([...a.values()].map((v) => dec.decode(v)));
  assert.ok(distinct.size >= 2, `files crashed differently: ${[...distinct].join(" | ")}`);
});

crash("entries current keeps unsynced names; the crashed FaultyFs refuses further calls", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/n", enc.encode("n"));
  const after = fs.crash({ entries: "current" });
  assert.is(dec.decode(after.readFile("/s/n")), "n");
  throwsCode(() => fs.stat("/s/n"), "EIO", "old instance after crash");
  // Everything in the result is durable: a second crash loses nothing.
  assert.is(dec.decode(after.crash().readFile("/s/n")), "n");
});

crash("clone() copies durable and current state independently", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/c", enc.encode("one"));
  fs.syncDir("/s");
  const f = fs.open("/s/c", "r+");
  f.write(enc.encode("two"), 0);
  const copy = fs.clone();
  f.write(enc.encode("333"), 0);
  assert.is(dec.decode(copy.readFile("/s/c")), "two");
  assert.is(dec.decode(copy.crash().readFile("/s/c")), "one");
  assert.is(dec.decode(fs.readFile("/s/c")), "333");
});

crash.run();

// ---------------------------------------------------------------------------
// FaultyFs: injected faults

const faults = suite("FaultyFs faults");

faults("fail the nth write with EIO: that write has no effect, the next succeeds", () => {
  const fs = newFaulty();
  const fault = fs.addFault({ action: "EIO", ops: "writes", nth: 2 });
  const f = fs.open("/s/w", "w+");
  f.write(enc.encode("a"), 0);
  const e = throwsCode(() => f.write(enc.encode("b"), 1), "EIO", "2nd write");
  assert.match(e.message, /addFault\(\{"action":"EIO","ops":"writes","nth":2\}\)/);
  assert.match(e.message, /seed 1/);
  f.write(enc.encode("c"), 1);
  assert.is(dec.decode(fs.readFile("/s/w")), "ac");
  assert.is(fault.fired, 1);
  assert.is(fault.matched, 3);
});

faults("writeAsync meets the same faults as write: ENOSPC after a prefix rejects", async () => {
  const fs = newFaulty();
  fs.addFault({ action: "ENOSPC", ops: ["write"], nth: 1, prefix: 2 });
  const f = fs.open("/s/wa", "w+");
  const e = await f.writeAsync(enc.encode("abcdef"), 0).then(() => undefined, (err) => err);
  assert.ok(e instanceof FsError && e.code === "ENOSPC", `rejects with ENOSPC, got ${e}`);
  assert.is(f.size(), 2, "the prefix landed");
  f.close();
});

faults("fail with ENOSPC after writing a prefix", () => {
  const fs = newFaulty();
  fs.addFault({ action: "ENOSPC", ops: ["write"], nth: 1, prefix: 3 });
  const f = fs.open("/s/p", "w+");
  throwsCode(() => f.write(enc.encode("abcdef"), 0), "ENOSPC", "write");
  assert.is(dec.decode(fs.readFile("/s/p")), "abc");
});

faults("a path glob or substring selects the operations counted", () => {
  const fs = newFaulty();
  fs.addFault({ action: "EIO", ops: "syncs", path: "*.tmp", nth: 2 });
  fs.addFault({ action: "EIO", ops: "renames", path: "/s/final", nth: 1 });
  const a = fs.open("/s/a.tmp", "w+");
  const b = fs.open("/s/b.dat", "w+");
  a.datasync();
  b.datasync();
  b.datasync();
  throwsCode(() => a.datasync(), "EIO", "2nd sync of a .tmp file");
  throwsCode(() => fs.rename("/s/a.tmp", "/s/final"), "EIO", "rename onto /s/final");
  fs.rename("/s/a.tmp", "/s/final"); // fired once already
  assert.ok(fs.stat("/s/final"));
});

faults("times: Infinity fails every match from the nth on; probability replays per seed", () => {
  const fs = newFaulty();
  fs.addFault({ action: "EIO", ops: "reads", path: "/s/**", nth: 2, times: Infinity });
  writeAll(fs, "/s/r", enc.encode("r"));
  const f = fs.open("/s/r", "r");
  f.read(new Uint8Array(1), 0);
  for (let i = 0; i < 3; i++) throwsCode(() => f.read(new Uint8Array(1), 0), "EIO", `read ${i}`);

  const outcomes = (seed: number) => {
    const p = new FaultyFs({ seed, faults: [{ action: "EIO", ops: ["stat"], probability: 0.5, times: Infinity }] });
    return Array.from({ length: 32 }, () => { try { p.stat("/"); return 0; } catch { return 1; } }).join("");
  };
  assert.is(outcomes(5), outcomes(5));
  assert.ok(/0/.test(outcomes(5)) && /1/.test(outcomes(5)), outcomes(5));
  assert.is.not(outcomes(5), outcomes(6));
});

faults("power loss at op N: that call and every later one throw EIO, close() still works, crash() recovers", () => {
  const run = (powerLossAt?: number) => {
    const fs = newFaulty();
    if (powerLossAt !== undefined) fs.powerLossAt(powerLossAt, { ops: "mutations" });
    let done = 0;
    try {
      for (let i = 0; i < 3; i++) {
        const f = fs.open(`/s/k${i}`, "w+");
        try {
          f.write(enc.encode(`v${i}`), 0);
          f.datasync();
        } finally {
          f.close();
        }
        fs.syncDir("/s");
        done++;
      }
    } catch (e) {
      assert.instance(e, FsError);
      assert.is((e as FsError).code, "EIO");
      assert.ok(fs.powerLost);
      throwsCode(() => fs.stat("/s"), "EIO", "after power loss");
    }
    return { fs, done };
  };
  const full = run();
  const points = full.fs.countOps({ ops: "mutations" });
  assert.is(points, 12, "open, write, datasync, syncDir per key");
  for (let n = 1; n <= points; n++) {
    const { fs, done } = run(n);
    const after = fs.crash();
    // Every key whose syncDir completed is there with its value; nothing else is.
    const expected = Array.from({ length: done }, (_, i) => `/s/k${i}`);
    assert.equal([...after.files().keys()], expected, `power loss at mutation ${n}`);
    for (const k of expected) assert.is(dec.decode(after.readFile(k)), `v${k.slice(-1)}`);
  }
});

faults("opCount and the log number every call; countOps filters them", () => {
  const fs = new FaultyFs();
  fs.mkdir("/d");
  const f = fs.open("/d/x", "w+");
  f.write(enc.encode("x"), 0);
  f.close();
  fs.rename("/d/x", "/d/y");
  assert.is(fs.opCount, 5);
  assert.equal(fs.log.map((e) => `${e.n} ${e.op} ${e.path}${e.to ? " " + e.to : ""}`), [
    "1 mkdir /d", "2 open /d/x", "3 write /d/x", "4 close /d/x", "5 rename /d/x /d/y",
  ]);
  assert.is(fs.countOps({ ops: "writes" }), 1);
  assert.is(fs.countOps({ path: "y" }), 1);
});

faults("a FaultyFs prints its seed and faults as code that recreates them", () => {
  const fs = new FaultyFs({ seed: 42 });
  fs.addFault({ action: "ENOSPC", ops: "writes", path: "*.tmp", nth: 3, times: Infinity });
  assert.is(String(fs), 'new FaultyFs({ seed: 42 }).addFault({"action":"ENOSPC","ops":"writes","path":"*.tmp","nth":3,"times":Infinity})');
  assert.throws(() => fs.addFault({ action: "EIO", nth: 1, ops: "writez" as "writes" }), /unknown operation class/);
  assert.throws(() => fs.addFault({ action: "EIO" }), /exactly one of nth or probability/);
  assert.throws(() => fs.addFault({ action: "EIO", nth: 1, pth: "x" } as never), /unknown fault option "pth"/);
});

faults("flipBit() changes one bit of the current and durable bytes", () => {
  const fs = newFaulty();
  writeAll(fs, "/s/b", new Uint8Array([0, 0, 0, 0]));
  fs.syncDir("/s");
  fs.flipBit("/s/b", 2, 3);
  assert.equal(Array.from(readAll(fs, "/s/b")), [0, 0, 8, 0]);
  assert.equal(Array.from(fs.crash().readFile("/s/b")), [0, 0, 8, 0]);
  throwsCode(() => newFaulty().flipBit("/s/none", 0), "ENOENT", "flipBit missing");
});

faults("a waiting lock that would block throws EDEADLK instead of hanging", () => {
  const fs = newFaulty();
  const a = fs.open("/s/l", "w+");
  const b = fs.open("/s/l", "r");
  assert.ok(a.lock("exclusive", true));
  throwsCode(() => b.lock("shared", true), "EDEADLK", "blocking lock");
  a.close();
  assert.ok(b.lock("exclusive", true));
});

faults.run();

// ---------------------------------------------------------------------------
// Sockets through the runtime adapter

const sockets = suite(`${runtimeFs.name} sockets`);

/** Size of the echo payload: large enough to fill every socket and stream buffer many times. */
const ECHO_PAYLOAD_BYTES = 8 * 1024 * 1024;
/** Chunk the client writes; deliberately not a multiple of the 64 KiB read size. */
const ECHO_WRITE_CHUNK = 100_000;

/** Sends `payload` through `conn` while reading it back; resolves with what came back. */
async function echoRoundTrip(conn: Connection, payload: Uint8Array): Promise<Uint8Array> {
  const received = new Uint8Array(payload.length);
  let got = 0;
  const reading = (async () => {
    const reader = conn.readable.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      assert.ok(got + value.length <= received.length, "no more bytes than sent");
      received.set(value, got);
      got += value.length;
    }
  })();
  const writer = conn.writable.getWriter();
  for (let off = 0; off < payload.length; off += ECHO_WRITE_CHUNK) {
    await writer.write(payload.subarray(off, off + ECHO_WRITE_CHUNK));
  }
  await writer.close(); // half-close: the server sees the end, and ends its echo
  await reading;
  conn.close();
  assert.is(got, payload.length);
  return received;
}

function echoServer(conn: Connection): void {
  conn.readable.pipeTo(conn.writable).catch(() => conn.close());
}

sockets("tcp on 127.0.0.1 port 0: the listener reports the real port; an 8 MiB echo round trip", async () => {
  const listener = await runtimeFs.listen!("tcp://127.0.0.1:0", echoServer);
  try {
    const m = /^tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(listener.url);
    assert.ok(m && Number(m[1]) > 0, listener.url);
    const payload = patternBytes(ECHO_PAYLOAD_BYTES, 7);
    const conn = await runtimeFs.connect!(listener.url);
    assert.match(conn.remote, /^tcp:/);
    assert.ok(bytesEqual(await echoRoundTrip(conn, payload), payload), "echoed bytes equal");
  } finally {
    await listener.close();
  }
});

sockets("unix socket: owner-only mode, an 8 MiB echo round trip, a stale socket file replaced", async () => {
  const dir = tempDir("segstore-sock-");
  const path = `${dir.path}/s.sock`;
  try {
    const listener = await runtimeFs.listen!(`unix:${path}`, echoServer);
    assert.is(listener.url, `unix:${path}`);
    assert.is(statSync(path).mode & 0o777, 0o600);
    const payload = patternBytes(ECHO_PAYLOAD_BYTES, 8);
    const conn = await runtimeFs.connect!(listener.url);
    assert.ok(bytesEqual(await echoRoundTrip(conn, payload), payload), "echoed bytes equal");
    // A second server on a live socket is refused rather than stealing it.
    try {
      await runtimeFs.listen!(`unix:${path}`, echoServer);
      assert.unreachable("listen on a live socket");
    } catch (e) {
      assert.instance(e, FsError);
      assert.is((e as FsError).code, "EADDRINUSE");
    }
    await listener.close();
  } finally {
    dir.cleanup();
  }
});

sockets("unix socket: a socket file left by a dead server is replaced", async () => {
  const dir = tempDir("segstore-sock-");
  const path = `${dir.path}/stale.sock`;
  try {
    // Leave a socket file with no listener, as a SIGKILLed server does:
    // node:net unlinks its file on close, so move the file aside first.
    await new Promise<void>((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen({ path }, () => {
        renameSync(path, `${path}.aside`);
        server.close(() => {
          renameSync(`${path}.aside`, path);
          resolve();
        });
      });
    });
    assert.ok(statSync(path).isSocket(), "stale socket file in place");
    const listener = await runtimeFs.listen!(`unix:${path}`, echoServer);
    const conn = await runtimeFs.connect!(listener.url);
    const payload = patternBytes(1000, 9);
    assert.ok(bytesEqual(await echoRoundTrip(conn, payload), payload));
    await listener.close();
  } finally {
    dir.cleanup();
  }
});

/** Bytes the backpressure test tries to push at a peer that does not read. */
const BACKPRESSURE_ATTEMPT_BYTES = 128 * 1024 * 1024;
sockets("a client connection reads into buffers it reuses once given back (recycle), and never into one still held", async () => {
  let onAccept: (conn: Connection) => void = () => {};
  const accepted = new Promise<Connection>((resolve) => (onAccept = resolve));
  const listener = await runtimeFs.listen!("tcp://127.0.0.1:0", (conn) => onAccept(conn));
  try {
    const conn = await runtimeFs.connect!(listener.url);
    assert.type(conn.recycle, "function", "a client connection takes its read buffers back");
    const serverConn = await accepted;
    const payload = patternBytes(ECHO_PAYLOAD_BYTES, 11);
    const sending = (async () => {
      const writer = serverConn.writable.getWriter();
      for (let off = 0; off < payload.length; off += ECHO_WRITE_CHUNK) await writer.write(payload.subarray(off, off + ECHO_WRITE_CHUNK));
      await writer.close();
    })();
    // Every other chunk is given back at once; the rest are held to the end, and must still hold their bytes then.
    const held: { at: number; chunk: Uint8Array }[] = [];
    const buffers = new Set<ArrayBufferLike>();
    let reused = 0;
    let got = 0;
    let k = 0;
    for await (const chunk of conn.readable) {
      assert.ok(bytesEqual(chunk, payload.subarray(got, got + chunk.length)), `bytes at ${got}`);
      if (buffers.has(chunk.buffer)) reused++;
      buffers.add(chunk.buffer);
      if (k++ % 2 === 0) conn.recycle!(chunk);
      else held.push({ at: got, chunk });
      got += chunk.length;
    }
    await sending;
    assert.is(got, payload.length);
    for (const { at, chunk } of held) assert.ok(bytesEqual(chunk, payload.subarray(at, at + chunk.length)), `held chunk at ${at} kept its bytes`);
    assert.ok(reused > 0, `buffers given back were read into again (${reused} times)`);
    conn.close();
    serverConn.close();
  } finally {
    await listener.close();
  }
});

/** Most bytes that may be accepted meanwhile: kernel socket buffers (a few MiB each way) plus the stream queues. */
const BACKPRESSURE_ACCEPTED_MAX = 32 * 1024 * 1024;

sockets("backpressure: writes stall while the peer does not read, and resume when it does", async () => {
  let serverConn: Connection | undefined;
  let onAccept: (conn: Connection) => void = () => {};
  const accepted = new Promise<Connection>((resolve) => (onAccept = resolve));
  const listener = await runtimeFs.listen!("tcp://127.0.0.1:0", (conn) => onAccept(conn));
  try {
    const conn = await runtimeFs.connect!(listener.url);
    serverConn = await accepted;
    const chunk = patternBytes(1024 * 1024, 3);
    const writer = conn.writable.getWriter();
    let sent = 0;
    const sending = (async () => {
      while (sent < BACKPRESSURE_ATTEMPT_BYTES) {
        await writer.write(chunk);
        sent += chunk.length;
      }
      await writer.close();
    })();
    await new Promise((r) => setTimeout(r, 300));
    const stalledAt = sent;
    assert.ok(stalledAt < BACKPRESSURE_ACCEPTED_MAX, `writer stalled after ${stalledAt} bytes`);
    // Now read everything: the writer resumes and finishes.
    let received = 0;
    for await (const piece of serverConn.readable) received += piece.length;
    await sending;
    assert.is(received, BACKPRESSURE_ATTEMPT_BYTES);
    conn.close();
  } finally {
    serverConn?.close();
    await listener.close();
  }
});

sockets("listen() rejects a malformed url with EINVAL", async () => {
  for (const url of ["http://x:1", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "unix:relative.sock"]) {
    try {
      await runtimeFs.listen!(url, () => {});
      assert.unreachable(url);
    } catch (e) {
      assert.instance(e, FsError, url);
      assert.is((e as FsError).code, "EINVAL", url);
    }
  }
});

sockets.run();

