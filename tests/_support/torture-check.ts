/**
 * The checker child of the kill -9 torture: opens the store a killed writer
 * left (read-only, so it recovers in memory and leaves the on-disk recovery
 * to the next writer, where a kill can interrupt it too), reads every key
 * (values through get(), blobs through openBlob(), both verified), runs
 * store.check(), and prints one JSON line for the parent to hold against
 * its model:
 *
 *   node dist/tests/_support/torture-check.js STORE
 *   deno run -A tests/_support/torture-check.ts STORE
 *
 *   {"lastTxid":"12","content":[[3,"17:9a0b..."],...],"foreign":[],"problems":[]}
 *   {"error":"IntegrityError: ..."}          when the store does not open or read
 *
 * A store directory that does not exist (the first writer killed before it
 * made it) is reported as empty, at txid 0.
 */
import process from "node:process";
import { existsSync, writeSync } from "node:fs";
import { open } from "../../mod.ts";
import { observeStoreWithBlobs } from "./torture-model.ts";

function print(value: unknown): void {
  const bytes = new TextEncoder().encode(JSON.stringify(value) + "\n");
  let done = 0;
  while (done < bytes.length) done += writeSync(1, bytes, done, bytes.length - done);
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (!path) {
    process.stderr.write("usage: torture-check STORE\n");
    process.exit(2);
  }
  if (!existsSync(path)) {
    // The first writer was killed before it created the store: nothing was ever committed, and the
    // model holds the store to exactly that (a directory that vanished after a commit fails there).
    print({ lastTxid: "0", content: [], foreign: [], problems: [] });
    return;
  }
  let store;
  try {
    store = open(path, { readOnly: true, lockTimeout: 5000 });
  } catch (e) {
    print({ error: `open: ${(e as Error).stack}` });
    return;
  }
  try {
    const observed = await observeStoreWithBlobs(store);
    const report = await store.check();
    print({
      lastTxid: String(observed.lastTxid),
      content: [...observed.content],
      foreign: observed.foreign,
      problems: report.problems.map((p) => `${p.kind}: ${p.message}`),
    });
  } catch (e) {
    print({ error: `read: ${(e as Error).stack}` });
  } finally {
    store.close();
  }
}

await main();
