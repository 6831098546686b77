// runtimes: node
/**
 * The command line, run as a user runs it: a child process per command,
 * under Node (`node bin/segstore.js`) and under Deno (`deno run -A
 * src/cli.ts`), with stdin, stdout, stderr and the exit code checked. Both
 * runtimes share each store, so a store written by one is read by the
 * other. This file drives both runtimes itself, so the runner starts it
 * under Node only.
 *
 * Exit codes under test: 0 ok, 1 error, 2 usage, 3 integrity problem found by check.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync, openSync, readSync, writeSync, closeSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect, contentId } from "../mod.ts";
import { tempDir, type TempDir } from "./_support/tempdir.ts";

/** The repository: this file runs as dist/tests/80.cli.test.js. */
const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..", "..");
const DENO = join(ROOT, "node_modules", ".bin", "deno");
const NODE_CLI = join(ROOT, "bin", "segstore.js");
const DENO_CLI = join(ROOT, "src", "cli.ts");
/** A command that runs longer than this is killed and fails its test. */
const COMMAND_TIMEOUT_MS = 30_000;
/** The big pipe: large enough that no buffer on the way holds it whole. */
const BIG_PIPE_BYTES = 100 * 1024 * 1024;
const BIG_PIPE_CHUNK = 1024 * 1024;

type Runtime = "node" | "deno";
const RUNTIMES: Runtime[] = ["node", "deno"];

interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** Hex SHA-256 of stdout, when it was hashed instead of kept (see RunOptions.hashStdout). */
  stdoutSha256?: string;
  stdoutBytes: number;
}

interface RunOptions {
  /** Bytes for stdin, or chunks written as the child takes them; stdin is closed after. Default: nothing (closed at once). */
  input?: Uint8Array | string | AsyncIterable<Uint8Array>;
  /** Hash stdout as it arrives rather than keep it (big blobs). */
  hashStdout?: boolean;
  cwd?: string;
}

function command(runtime: Runtime, args: string[]): [string, string[]] {
  return runtime === "node" ? [process.execPath, [NODE_CLI, ...args]] : [DENO, ["run", "-A", DENO_CLI, ...args]];
}

/** Starts the CLI and returns the child (for commands that keep running). */
function start(runtime: Runtime, args: string[], cwd?: string): ChildProcess {
  const [cmd, argv] = command(runtime, args);
  return spawn(cmd, argv, { cwd: cwd ?? ROOT, env: { ...process.env, NO_COLOR: "1" }, stdio: ["pipe", "pipe", "pipe"] });
}

/** Runs the CLI to its end. */
async function run(runtime: Runtime, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const child = start(runtime, args, options.cwd);
  const out: Buffer[] = [];
  const hash = options.hashStdout ? createHash("sha256") : undefined;
  let stdoutBytes = 0;
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => {
    stdoutBytes += d.length;
    if (hash) hash.update(d);
    else out.push(d);
  });
  child.stderr!.on("data", (d: Buffer) => (stderr += d));
  child.stdin!.on("error", () => {}); // a child that exits before reading all its input (an error case) closes the pipe
  const closed = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  const timer = setTimeout(() => child.kill("SIGKILL"), COMMAND_TIMEOUT_MS);
  try {
    const input = options.input;
    if (input === undefined) child.stdin!.end();
    else if (typeof input === "string" || input instanceof Uint8Array) child.stdin!.end(input);
    else {
      for await (const chunk of input) {
        if (child.exitCode !== null) break;
        // A child that stops reading (an error exit) never drains: stop feeding it when it is gone.
        if (!child.stdin!.write(chunk)) await Promise.race([new Promise((r) => child.stdin!.once("drain", r)), closed]);
      }
      child.stdin!.end();
    }
    const code = await closed;
    return { code, stdout: Buffer.concat(out), stderr, stdoutBytes, ...(hash ? { stdoutSha256: hash.digest("hex") } : {}) };
  } finally {
    clearTimeout(timer);
  }
}

/** Asserts a zero exit code, showing stderr when it is not. */
function ok(r: RunResult, what: string): RunResult {
  assert.is(r.code, 0, `${what}: exit ${r.code}, stderr: ${r.stderr}`);
  return r;
}

/** Asserts an error exit: the code, one line on stderr that matches `pattern`, no stack. */
function fails(r: RunResult, code: number, pattern: RegExp, what: string): void {
  assert.is(r.code, code, `${what}: exit ${r.code}, want ${code}; stderr: ${r.stderr}`);
  const first = r.stderr.split("\n")[0]!;
  assert.match(first, /^segstore: /, `${what}: stderr starts "segstore: ": ${r.stderr}`);
  assert.match(first, pattern, `${what}: ${first}`);
  assert.not.match(r.stderr, /\n\s+at /, `${what}: no stack without --debug: ${r.stderr}`);
}

const text = (r: RunResult) => r.stdout.toString("utf8");
const hexOf = (b: Uint8Array) => Buffer.from(b).toString("hex");

/** `count` chunks of random bytes, hashed with SHA-256 as they are handed out. */
function randomChunks(count: number, size: number): { chunks: AsyncIterable<Uint8Array>; sha256: () => string } {
  const hash = createHash("sha256");
  return {
    chunks: (async function* () {
      for (let i = 0; i < count; i++) {
        const chunk = randomBytes(size);
        hash.update(chunk);
        yield chunk;
      }
    })(),
    sha256: () => hash.digest("hex"),
  };
}

let dir: TempDir;
test.before(() => {
  dir = tempDir("segstore-80-");
});
test.after(() => dir.cleanup());

let storeCount = 0;
/** A fresh path for a store (not created). */
function storePath(): string {
  return join(dir.path, `store-${++storeCount}`);
}

// ---------------------------------------------------------------------------

test("the CLI exists: bin/segstore.js, the bundled dist/pkg/src/cli.js it runs, and the deno binary", () => {
  assert.ok(existsSync(NODE_CLI), NODE_CLI);
  assert.ok(existsSync(join(ROOT, "dist", "pkg", "src", "cli.js")), "dist/pkg/src/cli.js (run npm run build first)");
  assert.match(readFileSync(NODE_CLI, "utf8"), /from "\.\.\/dist\/pkg\/src\/cli\.js"/, "bin/segstore.js runs the bundle");
  assert.ok(existsSync(DENO), DENO);
  assert.match(readFileSync(NODE_CLI, "utf8"), /^#!\/usr\/bin\/env node\n/);
});

test("README: the first command is the demo, and the Command line section documents every command with an example", async () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  assert.match(readme, /```sh\nnpm install && npx segstore demo \.\/demo-store\nnpm test\n```/, "the README's two commands");
  const section = readme.slice(readme.indexOf("\n## Command line\n"));
  assert.ok(section.length > 100, "a Command line section");
  const { COMMANDS } = await import("../src/cli.ts");
  for (const c of COMMANDS) {
    const at = section.indexOf(`\n### \`segstore ${c.name}`);
    assert.ok(at >= 0, `README documents segstore ${c.name}`);
    const body = section.slice(at + 5, section.indexOf("\n### ", at + 5) >>> 0);
    assert.match(body, new RegExp(`\`\`\`sh\\n.*segstore ${c.name} `), `README has an example of segstore ${c.name}`);
  }
});

for (const rt of RUNTIMES) {
  test(`[${rt}] --help lists every command; each command's --help has its usage and an example`, async () => {
    const top = ok(await run(rt, ["--help"]), "--help");
    const names = ["init", "info", "put", "get", "delete", "list", "blob put", "blob get", "check", "compact", "serve", "demo", "bench"];
    for (const name of names) assert.match(text(top), new RegExp(`\\n  ${name} `), `segstore --help lists ${name}`);
    assert.match(text(top), /exit codes: 0 ok, 1 error, 2 usage, 3 integrity problem/);
    // Every command's help, in one process per runtime would be faster, but this is what a user types.
    for (const name of rt === "node" ? names : ["blob put", "check"]) {
      const r = ok(await run(rt, [...name.split(" "), "--help"]), `${name} --help`);
      assert.match(text(r), new RegExp(`^usage: segstore ${name} `), `${name} --help usage line`);
      assert.match(text(r), /\nexamples?:\n  (.* \| )?segstore /, `${name} --help has an example`);
    }
    const v = ok(await run(rt, ["--version"]), "--version");
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string };
    assert.is(text(v), `segstore ${pkg.version} (${rt})\n`);
  });

  test(`[${rt}] usage errors exit 2 with the command's usage line`, async () => {
    fails(await run(rt, ["frobnicate"]), 2, /unknown command "frobnicate"/, "unknown command");
    const unknownOption = await run(rt, ["list", "./x", "--colour"]);
    fails(unknownOption, 2, /list: Unknown option '--colour'/, "unknown option");
    assert.match(unknownOption.stderr, /\nusage: segstore list PATH/);
    fails(await run(rt, ["get", "./x"]), 2, /get: missing argument/, "missing argument");
    fails(await run(rt, ["info", "a", "b"]), 2, /unexpected argument "b"/, "extra argument");
    fails(await run(rt, ["serve", "./x"]), 2, /serve: --listen URL is required/, "serve without --listen");
    const bare = await run(rt, []);
    assert.is(bare.code, 2, "no command at all is a usage error");
    assert.match(text(bare), /^segstore: /, "and prints the help");
  });

  test(`[${rt}] init, put, get, list, info, delete: the happy path`, async () => {
    const s = storePath();
    const init = ok(await run(rt, ["init", s, "--json"]), "init");
    const { id: storeId } = JSON.parse(text(init)) as { id: string };
    assert.match(storeId, /^[0-9a-f]{64}$/);
    fails(await run(rt, ["init", s]), 1, new RegExp(`cannot init ${s}: it is a store already`), "init twice");

    // put from stdin under the content id, printed
    const value = "hello, segstore\n";
    const put1 = ok(await run(rt, ["put", s, "--content"], { input: value }), "put --content");
    const id1 = hexOf(await contentId(new TextEncoder().encode(value)));
    assert.is(text(put1), id1 + "\n", "put --content prints the BLAKE3 content id");
    // "-" in place of the id means the same
    assert.is(text(ok(await run(rt, ["put", s, "-"], { input: value }), "put -")), id1 + "\n");

    // put with an explicit id (upper case accepted) from --file
    const file = join(dir.path, `value-${rt}.json`);
    writeFileSync(file, '{"a":1}');
    const id2 = "ab".repeat(32);
    const put2 = ok(await run(rt, ["put", s, id2.toUpperCase(), "--file", file, "--json"]), "put --file");
    const put2Json = JSON.parse(text(put2)) as { id: string; bytes: number; txid: number };
    assert.equal([put2Json.id, put2Json.bytes], [id2, 7]);
    assert.ok(put2Json.txid >= 3, `txid ${put2Json.txid}`);

    // an empty value is a value
    const id3 = "00".repeat(32);
    ok(await run(rt, ["put", s, id3], { input: "" }), "put of 0 bytes");

    // get, to stdout and to a file, by either runtime
    for (const reader of RUNTIMES) {
      assert.is(text(ok(await run(reader, ["get", s, id1]), "get")), value, `${reader} reads what ${rt} wrote`);
    }
    assert.is(ok(await run(rt, ["get", s, id3]), "get empty").stdoutBytes, 0);
    const out = join(dir.path, `out-${rt}.json`);
    ok(await run(rt, ["get", s, id2, "--out", out]), "get --out");
    assert.is(readFileSync(out, "utf8"), '{"a":1}');
    assert.not.ok(existsSync(out + ".partial"), "no partial file left");

    // list, plain and JSON
    const listed = text(ok(await run(rt, ["list", s]), "list")).trim().split("\n").sort();
    assert.equal(listed, [id1, id2, id3].sort());
    const listJson = JSON.parse(text(ok(await run(rt, ["list", s, "--json"]), "list --json"))) as { id: string; blob: boolean }[];
    assert.equal(listJson.map((e) => e.id).sort(), [id1, id2, id3].sort());
    assert.ok(listJson.every((e) => e.blob === false));

    // info, plain and JSON
    const info = text(ok(await run(rt, ["info", s]), "info"));
    assert.match(info, new RegExp(`^id +${storeId}$`, "m"));
    assert.match(info, /^keys +3 \(0 blobs\)$/m);
    assert.match(info, /^version +1$/m);
    const infoJson = JSON.parse(text(ok(await run(rt, ["info", s, "--json"]), "info --json"))) as Record<string, unknown>;
    assert.is(infoJson.keys, 3);
    assert.is(infoJson.id, storeId);
    assert.is(infoJson.lastTxid, 4, "four commits: two puts by content, one by --file, one empty");
    assert.ok((infoJson.liveBytes as number) > 0 && (infoJson.totalBytes as number) >= (infoJson.liveBytes as number));

    // delete: there, then gone
    const del = ok(await run(rt, ["delete", s, id1, "--json"]), "delete");
    assert.is((JSON.parse(text(del)) as { id: string }).id, id1);
    fails(await run(rt, ["get", s, id1]), 1, new RegExp(`id ${id1} not found in store ${s}`), "get after delete");
    fails(await run(rt, ["delete", s, id1]), 1, /not found .*nothing deleted/, "delete twice");
  });

  test(`[${rt}] put refuses more than 16 MiB (a blob) and a missing --file`, async () => {
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    const big = randomChunks(17, 1024 * 1024);
    fails(await run(rt, ["put", s, "11".repeat(32)], { input: big.chunks }), 1, /more than 16777216 bytes.*segstore blob put/, "put of 17 MiB");
    fails(await run(rt, ["put", s, "11".repeat(32), "--file", join(dir.path, "nope")]), 1, /cannot read .*nope: no such file/, "missing --file");
    fails(await run(rt, ["put", s]), 2, /give the id/, "put without id");
    const listed = ok(await run(rt, ["list", s]), "list");
    assert.is(text(listed), "", "nothing was stored");
  });

  test(`[${rt}] a missing store, a bad id and a non-store directory give clear errors`, async () => {
    const missing = join(dir.path, "no-such-store");
    for (const args of [["info", missing], ["list", missing], ["get", missing, "00".repeat(32)], ["put", missing, "00".repeat(32)], ["check", missing]]) {
      fails(await run(rt, args, { input: "x" }), 1, new RegExp(`cannot open store ${missing}: no such directory \\(create one with: segstore init`), args[0]!);
    }
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    fails(await run(rt, ["get", s, "xyz"]), 2, /bad id "xyz": an id is 64 hex characters \(32 bytes\), this has 3 characters/, "short id");
    fails(await run(rt, ["get", s, "g".repeat(64)]), 2, /bad id "g{64}": .*not a hex digit/, "non-hex id");
    fails(await run(rt, ["blob", "get", s, "12345"]), 2, /bad id "12345"/, "bad blob id");
    fails(await run(rt, ["delete", s, "0".repeat(63)]), 2, /this has 63 characters/, "63 characters");
    const notStore = join(dir.path, `not-a-store-${rt}`);
    ok(await run(rt, ["init", notStore]), "init"); // then make it look like something else
    writeFileSync(join(notStore, "config"), "not ini");
    const r = await run(rt, ["info", notStore]);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^segstore: .*${notStore}`), r.stderr);
  });

  test(`[${rt}] --debug adds the stack to the one-line error`, async () => {
    const missing = join(dir.path, "no-such-store");
    const r = await run(rt, ["info", missing, "--debug"]);
    assert.is(r.code, 1);
    assert.match(r.stderr, /^segstore: cannot open store/);
    assert.match(r.stderr, /\n\s+at /, `a stack: ${r.stderr}`);
  });
}

// ---------------------------------------------------------------------------
// Blobs, streamed both ways

for (const [writer, reader] of [["node", "deno"], ["deno", "node"]] as [Runtime, Runtime][]) {
  test(`[${writer} → ${reader}] blob put and get pipe 100 MiB through stdin and stdout`, async () => {
    const s = storePath();
    ok(await run(writer, ["init", s]), "init");
    const id = randomBytes(32).toString("hex");
    const data = randomChunks(BIG_PIPE_BYTES / BIG_PIPE_CHUNK, BIG_PIPE_CHUNK);
    const put = ok(await run(writer, ["blob", "put", s, id, "-"], { input: data.chunks }), "blob put -");
    const want = data.sha256();
    const got = ok(await run(reader, ["blob", "get", s, id], { hashStdout: true }), "blob get");
    assert.equal([put.stderr, got.stderr], ["", ""], "no progress bar when stderr is not a terminal");
    assert.is(got.stdoutBytes, BIG_PIPE_BYTES);
    assert.is(got.stdoutSha256, want, "the bytes out are the bytes in");
    const info = JSON.parse(text(ok(await run(reader, ["info", s, "--json"]), "info"))) as { keys: number; blobs: number };
    assert.equal([info.keys, info.blobs], [1, 1]);
  });
}

for (const rt of RUNTIMES) {
  test(`[${rt}] blob put and get of 0 bytes through pipes`, async () => {
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    const put = ok(await run(rt, ["blob", "put", s, "--content", "-"], { input: "" }), "blob put --content - of nothing");
    const id = hexOf(await contentId(new Uint8Array(0)));
    assert.is(text(put), id + "\n", "the content id of nothing");
    const got = ok(await run(rt, ["blob", "get", s, id]), "blob get");
    assert.is(got.stdoutBytes, 0);
    const id2 = "22".repeat(32);
    ok(await run(rt, ["blob", "put", s, id2], { input: "" }), "blob put ID with stdin implied");
    assert.is(ok(await run(rt, ["blob", "get", s, id2]), "blob get").stdoutBytes, 0);
  });

  test(`[${rt}] blob put --content FILE and from stdin; blob get --out; wrong kind and missing blob`, async () => {
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    const file = join(dir.path, `blob-${rt}.bin`);
    writeFileSync(file, bytes);
    const id = hexOf(await contentId(bytes));
    assert.is(text(ok(await run(rt, ["blob", "put", s, "--content", file]), "blob put --content FILE")), id + "\n");
    // The same bytes from stdin, by content id: spooled, hashed, stored (same id).
    const viaStdin = ok(await run(rt, ["blob", "put", s, "--content", "-", "--json"], { input: bytes }), "blob put --content -");
    const j = JSON.parse(text(viaStdin)) as { id: string; bytes: number };
    assert.equal([j.id, j.bytes], [id, bytes.length]);
    assert.equal(readdirSync(s).filter((n) => n.endsWith(".tmp")), [], "the stdin spool file is gone");
    const out = join(dir.path, `blob-out-${rt}.bin`);
    ok(await run(rt, ["blob", "get", s, id, "--out", out]), "blob get --out");
    assert.ok(Buffer.compare(readFileSync(out), bytes) === 0, "blob get --out wrote the bytes");
    assert.not.ok(existsSync(out + ".partial"));

    // wrong kind: a blob through get, a value through blob get
    fails(await run(rt, ["get", s, id]), 1, /is a blob: read it with segstore blob get/, "get of a blob");
    const valueId = text(ok(await run(rt, ["put", s, "--content"], { input: "small" }), "put")).trim();
    fails(await run(rt, ["blob", "get", s, valueId]), 1, /is an object, not a blob/, "blob get of a value");
    fails(await run(rt, ["blob", "get", s, "33".repeat(32)]), 1, new RegExp(`blob ${"33".repeat(32)} not found in store ${s}`), "missing blob");
    fails(await run(rt, ["blob", "put", s, "--content", join(dir.path, "nope.bin")]), 1, /cannot read .*nope\.bin: no such file/, "missing FILE");
    fails(await run(rt, ["blob", "put", s]), 2, /give the id/, "blob put without id");

    const listJson = JSON.parse(text(ok(await run(rt, ["list", s, "--json"]), "list --json"))) as { id: string; blob: boolean }[];
    assert.equal(listJson.filter((e) => e.blob).map((e) => e.id), [id]);
    ok(await run(rt, ["delete", s, id]), "delete a blob");
    fails(await run(rt, ["blob", "get", s, id]), 1, /not found/, "blob get after delete");
  });
}

/** `script` (util-linux) runs a command on a pseudo-terminal, so the CLI sees a TTY as a user's shell would give it. */
const SCRIPT = ["/usr/bin/script", "/bin/script"].find((p) => existsSync(p));

for (const rt of RUNTIMES) {
  test(`[${rt}] on a terminal, blob get and check draw a progress bar with bytes, rate and ETA`, async () => {
    if (SCRIPT === undefined) {
      console.log(`  skipped [${rt}] progress bar: no script(1) here to give the CLI a terminal`);
      return;
    }
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    const id = "77".repeat(32);
    ok(await run(rt, ["blob", "put", s, id], { input: randomChunks(64, BIG_PIPE_CHUNK).chunks }), "blob put");
    const [cmd, argv] = command(rt, ["blob", "get", s, id, "--out", join(dir.path, `tty-${rt}.bin`)]);
    const quote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;
    const onTty = (line: string) => new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(SCRIPT, ["-qec", line, "/dev/null"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout!.on("data", (d) => (out += d));
      child.stderr!.on("data", (d) => (out += d));
      child.on("close", (code) => resolve({ code, out }));
    });
    const get = await onTty([cmd, ...argv].map(quote).join(" "));
    assert.is(get.code, 0, get.out);
    assert.match(get.out, /\r\x1b\[2Kblob get  \[[#·]{24}\]  [\d.]+ MiB \/ 64\.0 MiB  [\d.]+ [KMG]?i?B\/s  ETA \d+s/, JSON.stringify(get.out.slice(0, 300)));
    assert.match(get.out, /\r\x1b\[2K$/, "the bar is cleared at the end");
    const [cmd2, argv2] = command(rt, ["check", s]);
    const check = await onTty([cmd2, ...argv2].map(quote).join(" "));
    assert.is(check.code, 0, check.out);
    assert.match(check.out, /\x1b\[2Kcheck  \[/, JSON.stringify(check.out.slice(0, 300)));
    assert.match(check.out, new RegExp(`store ${s}: ok `));
  });
}

// ---------------------------------------------------------------------------
// Locks

/** Reads STORE/lock: the holder writes "pid host runtime" into it. */
function lockHolder(store: string): string {
  try {
    return readFileSync(join(store, "lock"), "utf8").trim();
  } catch {
    return "";
  }
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const [holder, other] of [["node", "deno"], ["deno", "node"]] as [Runtime, Runtime][]) {
  test(`[${holder} holds, ${other} tries] a locked store: exit 1 naming the store and the holder`, async () => {
    const s = storePath();
    ok(await run(holder, ["init", s]), "init");
    // A blob put from a stdin that stays open holds the store open (and its lock) until stdin ends.
    const child = start(holder, ["blob", "put", s, "44".repeat(32), "-"]);
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      child.stdin!.write("first part, ");
      await waitFor(`${holder} to take the lock (stderr: ${stderr})`, () => lockHolder(s).startsWith(`${child.pid} `));
      const r = await run(other, ["put", s, "55".repeat(32)], { input: "x" });
      fails(r, 1, new RegExp(`store ${s} is locked by process ${child.pid} `), "put while locked");
      const reader = await run(other, ["list", s]);
      fails(reader, 1, /is locked/, "a reader while a writer holds the store");
      child.stdin!.end("second part");
      assert.is(await closed, 0, `the holder finished: ${stderr}`);
    } finally {
      child.kill("SIGKILL");
    }
    const got = ok(await run(other, ["blob", "get", s, "44".repeat(32)]), "blob get once free");
    assert.is(text(got), "first part, second part");
  });
}

for (const [rt, transport] of [["node", "unix"], ["deno", "tcp"]] as [Runtime, "unix" | "tcp"][]) {
  test(`[${rt}] serve over ${transport}: a client commits through it, a second put fails with the lock, SIGTERM ends it with exit 0`, async () => {
    const s = storePath();
    ok(await run(rt, ["init", s]), "init");
    const args = ["serve", s];
    const token = randomBytes(16).toString("hex");
    if (transport === "unix") args.push("--listen", `unix:${join(dir.path, `serve-${rt}.sock`)}`);
    else {
      const tokenFile = join(dir.path, `token-${rt}`);
      writeFileSync(tokenFile, token + "\n");
      args.push("--listen", "tcp://127.0.0.1:0", "--token-file", tokenFile);
    }
    const child = start(rt, args);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    const closed = new Promise<number | null>((resolve) => child.on("close", resolve));
    const value = randomBytes(1000);
    const id = await contentId(value);
    try {
      await waitFor(`serve to print its url (stderr: ${stderr})`, () => stdout.includes("\n") || child.exitCode !== null);
      const url = stdout.trim();
      if (transport === "unix") assert.is(url, args[3], `serve prints the url it listens on; stderr: ${stderr}`);
      else assert.match(url, /^tcp:\/\/127\.0\.0\.1:[1-9]\d*$/, "the real port, not 0");
      const remote = await connect(url, transport === "tcp" ? { token } : {});
      try {
        await remote.put(id, value);
        await remote.commit();
      } finally {
        await remote.close();
      }
      for (const other of RUNTIMES) {
        fails(await run(other, ["put", s, "66".repeat(32)], { input: "x" }), 1, new RegExp(`store ${s} is locked by process ${child.pid} .*segstore serve`), `${other} put while serving`);
      }
      child.kill("SIGTERM");
      assert.is(await closed, 0, `serve exits 0 on SIGTERM; stderr: ${stderr}`);
    } finally {
      child.kill("SIGKILL");
    }
    const got = ok(await run(rt, ["get", s, hexOf(id)]), "get what the client committed");
    assert.ok(Buffer.compare(got.stdout, value) === 0);
  });
}

test("serve refuses tcp without a token file, and an empty token file", async () => {
  const s = storePath();
  ok(await run("node", ["init", s]), "init");
  fails(await run("node", ["serve", s, "--listen", "tcp://127.0.0.1:0"]), 2, /needs --token-file/, "tcp without token");
  const empty = join(dir.path, "empty-token");
  writeFileSync(empty, "\n");
  fails(await run("node", ["serve", s, "--listen", "tcp://127.0.0.1:0", "--token-file", empty]), 1, /token file .*empty-token is empty/, "empty token file");
  fails(await run("node", ["serve", s, "--listen", "udp://x"]), 1, /udp:\/\/x/, "a URL of no known kind");
});

// ---------------------------------------------------------------------------
// check, repair, compact

/** Offsets of the records in a segment file (walking the size fields), after the 8-byte magic. */
function recordOffsets(bytes: Buffer): number[] {
  const offsets: number[] = [];
  for (let at = 8; at + 9 <= bytes.length; at += bytes.readUInt32LE(at + 4)) offsets.push(at);
  return offsets;
}

for (const rt of RUNTIMES) {
  test(`[${rt}] check finds a corrupt segment (exit 3), check --repair salvages it and names the lost id`, async () => {
    if (!existsSync(join(ROOT, "dist", "src", "check.js"))) {
      console.log(`  skipped [${rt}] check: src/check.ts is not written yet`);
      return;
    }
    const s = storePath();
    ok(await run(rt, ["init", s, "--max-segment-size", "1024"]), "init with small segments");
    // Four values of 700 bytes, one commit each: each lands in its own segment.
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const value = Buffer.alloc(700, 0x61 + i);
      ids.push(text(ok(await run(rt, ["put", s, "--content"], { input: value }), `put ${i}`)).trim());
    }
    ok(await run(rt, ["check", s]), "a sound store checks ok");
    const clean = JSON.parse(text(ok(await run(rt, ["check", s, "--json"]), "check --json"))) as { ok: boolean; problems: unknown[] };
    assert.equal([clean.ok, clean.problems.length], [true, 0]);

    // Flip one byte inside the value of the first PUT in segment 0.
    const seg0 = join(s, "data", "0", "0");
    const bytes = readFileSync(seg0);
    const first = recordOffsets(bytes).find((o) => bytes[o + 8] === 0 /* PUT */);
    assert.ok(first !== undefined, "segment 0 holds a PUT");
    const fd = openSync(seg0, "r+");
    const at = first! + 9 + 32 + 100;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] ^= 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);

    const bad = await run(rt, ["check", s]);
    assert.is(bad.code, 3, `check exits 3 on corruption; ${text(bad)} ${bad.stderr}`);
    assert.match(text(bad), new RegExp(`store ${s}: \\d+ problems? found`));
    assert.match(text(bad), /segment 0/, "the problem names the segment");
    assert.match(text(bad), /check .* --repair/, "and suggests --repair");
    const badJson = JSON.parse(text(await run(rt, ["check", s, "--json"]))) as { ok: boolean; problems: { segment?: number }[] };
    assert.is(badJson.ok, false);
    assert.ok(badJson.problems.some((p) => p.segment === 0), JSON.stringify(badJson.problems));

    const repair = await run(rt, ["check", s, "--repair"]);
    assert.is(repair.code, 0, `check --repair exits 0 once the store is sound; ${text(repair)} ${repair.stderr}`);
    assert.match(text(repair), /repaired/);
    assert.match(text(repair), new RegExp(`lost 1 entry \\(ids\\):\\n  ${ids[0]}`), text(repair));

    ok(await run(rt, ["check", s]), "after repair, check is clean");
    fails(await run(rt, ["get", s, ids[0]!]), 1, /not found/, "the lost value is gone");
    for (const id of ids.slice(1)) {
      assert.is(text(ok(await run(rt, ["get", s, id]), "get a survivor")).length, 700);
    }
  });

  test(`[${rt}] compact frees the space of deleted values`, async () => {
    // 2 MiB segments: A (1.2 MB) and B (0.6 MB) fill segment 0, C rolls to segment 1, so segment 0 is no longer the
    // head and may be compacted; deleting A leaves it a third live. (The delete's commit may already copy B on its
    // own; the old segment goes only at a later commit, here compact's.)
    const s = storePath();
    ok(await run(rt, ["init", s, "--max-segment-size", String(2 * 1024 * 1024)]), "init");
    const ids: string[] = [];
    for (const size of [1_200_000, 600_000, 600_000]) {
      ids.push(text(ok(await run(rt, ["put", s, "--content"], { input: randomBytes(size) }), "put")).trim());
    }
    ok(await run(rt, ["delete", s, ids[0]!]), "delete");
    const before = JSON.parse(text(ok(await run(rt, ["info", s, "--json"]), "info"))) as { totalBytes: number; segments: number };
    assert.is(before.segments, 2);
    const r = JSON.parse(text(ok(await run(rt, ["compact", s, "--json"]), "compact --json"))) as { segmentsCompacted: number; bytesFreed: number };
    assert.ok(r.segmentsCompacted === 1 && r.bytesFreed >= 1_800_000, JSON.stringify(r));
    const after = JSON.parse(text(ok(await run(rt, ["info", s, "--json"]), "info"))) as { totalBytes: number; keys: number; segments: number };
    assert.equal([after.segments, after.keys], [1, 2]);
    assert.ok(after.totalBytes < before.totalBytes - 1_000_000, `${after.totalBytes} < ${before.totalBytes} - 1 MB`);
    assert.is(ok(await run(rt, ["get", s, ids[1]!]), "get B").stdoutBytes, 600_000);
    assert.match(text(ok(await run(rt, ["compact", s]), "compact again")), /^compacted 0 segments: copied 0 B, freed 0 B\n$/);
  });
}

// ---------------------------------------------------------------------------
// demo, bench, the compiled binary

for (const rt of RUNTIMES) {
  test(`[${rt}] demo writes, reopens, reads back and checks; a second run on the same store passes too`, async () => {
    const s = storePath();
    // Node runs the README's command as given (default sizes); Deno a smaller one, to keep the suite short.
    const args = rt === "node" ? ["demo", s] : ["demo", s, "--objects", "50", "--blob-size", String(2 * 1024 * 1024 + 5)];
    const first = text(ok(await run(rt, args), "demo"));
    assert.match(first, new RegExp(`^segstore demo: created store ${s} `));
    assert.match(first, /wrote +\d+ objects .* blob under their BLAKE3 content ids/);
    assert.match(first, /all bytes match their ids/);
    assert.match(first, /check +ok/);
    const again = JSON.parse(text(ok(await run(rt, [...args, "--json"]), "demo again"))) as {
      created: boolean; mismatches: string[]; checkOk: boolean; keysAfterReopen: number; objects: number;
    };
    assert.equal([again.created, again.mismatches, again.checkOk], [false, [], true]);
    assert.is(again.keysAfterReopen, again.objects + 1, "the objects and the blob");
  });
}

test("demo with no PATH uses ./demo-store in the working directory", async () => {
  const cwd = join(dir.path, "cwd-demo");
  mkdirSync(cwd);
  ok(await run("node", ["demo", "--objects", "3", "--blob-size", "1000"], { cwd }), "demo");
  assert.ok(statSync(join(cwd, "demo-store", "config")).isFile());
});

test("bench passes its arguments to scripts/bench.mjs (--list)", async () => {
  const r = ok(await run("node", ["bench", "--list", "--runtimes", "node"]), "bench --list");
  assert.match(text(r), /^W1\/segstore \(node\)/m);
});

test("deno task segstore runs the CLI", async () => {
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(DENO, ["task", "segstore", "--help"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^usage: segstore COMMAND/m);
});

test("the compile task builds a binary that runs the demo (skipped when denort cannot be downloaded)", async () => {
  // The task names the deno that npm install put in node_modules: `deno task` resolves a bare "deno" to
  // node_modules/.bin/deno (the npm package's native binary) and tries to run it as a script.
  const task = (JSON.parse(readFileSync(join(ROOT, "deno.json"), "utf8")) as { tasks: Record<string, string> }).tasks.compile!;
  const m = /^\.\/node_modules\/\.bin\/deno compile .*--output (\S+) .*src\/cli\.ts$/.exec(task);
  assert.ok(m, `deno.json's compile task compiles src/cli.ts: ${task}`);
  const binary = join(ROOT, m![1]!);
  const compile = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
    const child = spawn(DENO, ["task", "compile"], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("close", (code) => { clearTimeout(timer); resolve({ code, stderr }); });
  });
  if (compile.code !== 0) {
    const lines = compile.stderr.replace(/\x1b\[[0-9;]*m/g, "").split("\n").map((l) => l.trim());
    const reason = lines.find((l) => /error sending request|dns error|network|unreachable|timed out|certificate/i.test(l));
    if (reason !== undefined) {
      console.log(`  skipped: deno compile cannot fetch denort (the runtime it embeds) on this machine: ${reason}`);
      return;
    }
    assert.unreachable(`deno compile failed for another reason: ${compile.stderr}`);
  }
  // The binary embeds everything: run it from elsewhere, on a store elsewhere.
  const s = storePath();
  const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(binary, ["demo", s, "--objects", "10", "--blob-size", "100000"], { cwd: dir.path, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "";
    child.stdout!.on("data", (d) => (stdout += d));
    child.stderr!.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /all bytes match their ids/);
});

test.run();
