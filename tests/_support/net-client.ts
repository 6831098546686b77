/**
 * A client process for the 70.net-* suites: connects to a test server and
 * does one thing, reporting on stdout, so a test can run many clients at
 * once and kill one mid-transfer (SIGKILL: no cleanup runs).
 *
 *   node dist/tests/_support/net-client.js MODE URL TOKEN|- CACHEDIR|- IDHEX
 *   deno run -A tests/_support/net-client.ts MODE URL TOKEN|- CACHEDIR|- IDHEX
 *
 * Modes:
 * - read-blob: prints "ready", waits for a "go" line on stdin (so many
 *   children start together), reads the blob IDHEX through the shared
 *   cache, prints "blob <BLAKE3 hex> <length>" and exits 0.
 * - slow-download: reads the blob with every write to a NAME.dl file
 *   slowed down, prints "downloading" after the first such write; the
 *   test kills it there. Prints "blob ..." if it is let finish.
 * - hang-upload: starts putBlob(IDHEX) from a stream that gives 4 MiB and
 *   then never ends, prints "uploading" once the 4th MiB was taken; the
 *   test kills it there.
 */
import process from "node:process";
import { runtimeFs } from "../../adapters/runtime.ts";
import type { File, FileSystem } from "../../src/fs.ts";
import { contentId } from "../../src/contentid.ts";
import { connect } from "../../src/net/client.ts";
import { fromHex, hex } from "./net-harness.ts";

/** Pause before each write of a download file in slow-download mode. */
const SLOW_WRITE_MS = 40;

const [mode, url, token, cacheDir, idHex] = process.argv.slice(2);
if (!mode || !url || !token || !cacheDir || !idHex) {
  process.stderr.write("usage: net-client MODE URL TOKEN|- CACHEDIR|- IDHEX\n");
  process.exit(2);
}
const id = fromHex(idHex);

function say(line: string): void {
  process.stdout.write(line + "\n");
}

/** Sleeps the thread (writes are synchronous, so the pause must be too). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** The runtime's filesystem with writes to *.dl files slowed down, announcing the first. */
function slowDownloadFs(): FileSystem {
  const fs = Object.create(runtimeFs) as FileSystem;
  let announced = false;
  fs.open = (path, openMode) => {
    const file = runtimeFs.open(path, openMode);
    if (!path.endsWith(".dl")) return file;
    const slow = Object.create(file) as File;
    slow.write = (buf, position) => {
      sleepSync(SLOW_WRITE_MS);
      file.write(buf, position);
      if (!announced) {
        announced = true;
        say("downloading");
      }
    };
    // The client downloads with writeAsync: slowed the same way (the thread sleeps, then the write runs).
    slow.writeAsync = async (buf, position) => {
      sleepSync(SLOW_WRITE_MS);
      await file.writeAsync(buf, position);
      if (!announced) {
        announced = true;
        say("downloading");
      }
    };
    slow.datasyncAsync = () => file.datasyncAsync();
    slow.read = (buf, position) => file.read(buf, position);
    slow.size = () => file.size();
    slow.truncate = (n) => file.truncate(n);
    slow.datasync = () => file.datasync();
    slow.sync = () => file.sync();
    slow.close = () => file.close();
    slow.lock = (m, w) => file.lock(m, w);
    slow.unlock = () => file.unlock();
    return slow;
  };
  return fs;
}

function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    let buffered = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (d: string) => {
      buffered += d;
      if (buffered.includes("go\n")) resolve();
    });
  });
}

const fs = mode === "slow-download" ? slowDownloadFs() : runtimeFs;
const remote = await connect(url, {
  fs,
  ...(token === "-" ? {} : { token }),
  ...(cacheDir === "-" ? {} : { cacheDir }),
});

if (mode === "read-blob" || mode === "slow-download") {
  if (mode === "read-blob") {
    say("ready");
    await waitForGo();
  }
  const stream = await remote.openBlob(id);
  if (stream === undefined) {
    say("missing");
  } else {
    let length = 0;
    const counted = stream.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        length += chunk.length;
        c.enqueue(chunk);
      },
    }));
    const digest = await contentId(counted);
    say(`blob ${hex(digest)} ${length}`);
  }
  await remote.close();
  process.exit(0);
} else if (mode === "hang-upload") {
  let given = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      if (given === 4) {
        say("uploading");
        return new Promise<void>(() => {}); // never ends: the test kills us here
      }
      given++;
      c.enqueue(new Uint8Array(1024 * 1024).fill(given));
    },
  }, { highWaterMark: 0 });
  await remote.putBlob(id, source);
  say("uploaded (unexpected)");
} else {
  process.stderr.write(`net-client: unknown mode ${mode}\n`);
  process.exit(2);
}
