/**
 * A child process for tests/14.hashthread-exit.test.ts: shows that a hash
 * worker neither holds a process open nor lets it end too soon.
 *
 *   node dist/tests/_support/hash-exit-child.js drop STORE
 *   node dist/tests/_support/hash-exit-child.js digest
 *   deno run -A tests/_support/hash-exit-child.ts drop|digest [STORE]
 *
 * drop: puts a 20 MiB blob, reads 12 MiB of it through a verified openBlob
 * (a worker joins past 8 MiB), prints "dropped" and lets the stream go
 * without cancelling it; the process must then end by itself.
 * digest: hashes 40 MiB with a ParallelBlake3 and awaits the digest with
 * nothing else to keep the process alive; prints "digest <hex>".
 */
import process from "node:process";
import "../../adapters/runtime.ts";
import { open } from "../../mod.ts";
import { ParallelBlake3 } from "../../src/blake3parallel.ts";
import { hex } from "./blake3-reference.ts";

const MIB = 1024 * 1024;
const [mode, path] = process.argv.slice(2);

if (mode === "drop" && path !== undefined) {
  const store = open(path, { create: true });
  const id = new Uint8Array(32).fill(5);
  const chunk = new Uint8Array(MIB).fill(3);
  await store.putBlob(id, (async function* () {
    for (let i = 0; i < 20; i++) yield chunk;
  })());
  store.commit();
  const reader = store.openBlob(id)!.getReader();
  for (let i = 0; i < 12; i++) await reader.read();
  process.stdout.write("dropped\n");
} else if (mode === "digest") {
  const hasher = ParallelBlake3.create();
  const chunk = new Uint8Array(MIB);
  for (let i = 0; i < 40; i++) hasher.update(chunk.fill(i));
  hasher.digest().then((d) => {
    process.stdout.write(`digest ${hex(d)}\n`);
    hasher.release();
  });
} else {
  process.stderr.write("usage: hash-exit-child drop STORE | digest\n");
  process.exit(2);
}
